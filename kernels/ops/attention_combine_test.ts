import assert from "node:assert/strict";
import { createAttentionCombine } from "./attention_combine.ts";
import { attentionCombineRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { assertNmse, maxAbsDiff } from "../../tests/_assert.ts";

/** Partials as attention writes them: maxes spread over ±20, positive sums, some empty splits. */
function partials(cells: number, splits: number, headDim: number, seed: number) {
  const rand = seededRandom(seed);
  const partAcc = randomF32(cells * splits * headDim, seed + 1, 10);
  const partMl = new Float32Array(cells * splits * 2);
  for (let i = 0; i < cells * splits; i++) {
    // Split 0 always holds positions; later splits are empty a quarter of the time.
    const empty = i % splits !== 0 && rand() < 0.25;
    partMl[2 * i] = empty ? -1e30 : (rand() * 2 - 1) * 20;
    partMl[2 * i + 1] = empty ? 0 : 0.5 + rand() * 30;
    if (empty) partAcc.fill(0, i * headDim, (i + 1) * headDim);
  }
  return { partAcc, partMl };
}

Deno.test("attentionCombine() merges split partials like the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createAttentionCombine(gpu);
  await checkPipelines(gpu);
  const cases: [rows: number, nHeads: number, headDim: number, splits: number][] = [
    [1, 1, 4, 1],
    [1, 8, 8, 64], // stories260K decode
    [1, 8, 64, 7],
    [3, 8, 64, 63],
    [1, 32, 128, 64], // Llama-3-8B-like decode
    [2, 3, 256, 256],
  ];
  for (const [rows, nHeads, headDim, splits] of cases) {
    await t.step(`rows = ${rows}, nHeads = ${nHeads}, headDim = ${headDim}, splits = ${splits}`, async () => {
      const cells = rows * nHeads;
      const { partAcc, partMl } = partials(cells, splits, headDim, cells + splits + headDim);
      const out = createStorage(gpu, cells * headDim * 4, "out");
      const bound = kernel.bind({
        partAcc: uploadStorage(gpu, partAcc, "partAcc"),
        partMl: uploadStorage(gpu, partMl, "partMl"),
        out,
        rows,
        nHeads,
        headDim,
        splits,
      });
      await checkPipelines(gpu);
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, out, cells * headDim);
      const want = attentionCombineRef(partAcc, partMl, { cells, splits, headDim });
      assertNmse(got, want, 1e-12, "combine");
      const err = maxAbsDiff(got, want);
      assert.ok(err <= 1e-5, `max |diff| ${err} > 1e-5`);
    });
  }
  await t.step("more splits than one workgroup merges are rejected at bind", () => {
    const b = createStorage(gpu, 16, "b");
    const args = { partAcc: b, partMl: b, out: b, rows: 1, nHeads: 1, headDim: 8 };
    assert.throws(() => kernel.bind({ ...args, splits: 257 }), /257 attention splits/);
  });
  gpu.device.destroy();
});
