import assert from "node:assert/strict";
import { createFlashAttention, flashAttentionPlan } from "./flash_attention.ts";
import { attentionRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse, maxAbsDiff } from "../../tests/_assert.ts";

interface Case {
  name: string;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  seqLen: number;
  pos: number;
  window?: number;
  softcap?: number;
  scale?: number;
}

// Several row blocks with a partial last one, so masking, the block order and the tail are all exercised.
const CASES: Case[] = [
  { name: "stories260K window", rows: 300, nHeads: 8, nKvHeads: 4, headDim: 8, seqLen: 512, pos: 0 },
  { name: "lq-49m window", rows: 150, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 256, pos: 0 },
  { name: "Llama-3-8B heads (TPR 2)", rows: 131, nHeads: 8, nKvHeads: 2, headDim: 128, seqLen: 160, pos: 0 },
  { name: "second turn, pos > 0", rows: 70, nHeads: 4, nKvHeads: 1, headDim: 32, seqLen: 200, pos: 45 },
  { name: "headDim 256 (TPR 4)", rows: 40, nHeads: 2, nKvHeads: 1, headDim: 256, seqLen: 64, pos: 3 },
  { name: "odd vec4 count", rows: 33, nHeads: 3, nKvHeads: 3, headDim: 12, seqLen: 64, pos: 0 },
  { name: "sliding window", rows: 200, nHeads: 4, nKvHeads: 2, headDim: 16, seqLen: 256, pos: 0, window: 37 },
  {
    name: "scale, softcap and window",
    ...{
      rows: 90,
      nHeads: 4,
      nKvHeads: 2,
      headDim: 16,
      seqLen: 128,
      pos: 20,
      scale: 2,
      softcap: 5,
      window: 50,
    },
  },
];

/** A (seqLen, kvDim) cache filled up to `filled` rows; later rows are NaN, which must never be read. */
function cache(seqLen: number, kvDim: number, filled: number, seed: number): Float32Array {
  const c = new Float32Array(seqLen * kvDim).fill(NaN);
  c.set(randomF32(filled * kvDim, seed));
  return c;
}

Deno.test("flash attention matches the f64 reference over whole windows", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createFlashAttention(gpu);
  for (const c of CASES) {
    const { rows, nHeads, nKvHeads, headDim, seqLen, pos } = c;
    const plan = flashAttentionPlan(gpu, c);
    await t.step(`${c.name}: ${JSON.stringify(plan)}`, async () => {
      assert.ok(plan, "the flash kernel serves this head size");
      const kvDim = nKvHeads * headDim;
      const qDim = nHeads * headDim;
      const q = randomF32(rows * qDim, rows + qDim, 3);
      const k = cache(seqLen, kvDim, pos + rows, seqLen + 1);
      const v = cache(seqLen, kvDim, pos + rows, seqLen + 2);
      const out = createStorage(gpu, rows * qDim * 4, "out");
      const bound = kernel.bind({
        q: uploadStorage(gpu, q, "q"),
        kCache: uploadStorage(gpu, k, "kCache"),
        vCache: uploadStorage(gpu, v, "vCache"),
        out,
        state: uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state"),
        ...c,
      });
      await checkPipelines(gpu);
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, out, rows * qDim);
      const want = attentionRef(q, k, v, {
        rows,
        nHeads,
        nKvHeads,
        headDim,
        pos0: pos,
        ...(c.window ? { window: c.window } : {}),
        ...(c.softcap ? { softcap: c.softcap } : {}),
        ...(c.scale ? { scale: c.scale } : {}),
      });
      assertNmse(got, want, 1e-11, c.name);
      const err = maxAbsDiff(got, want);
      assert.ok(err <= 2e-6, `${c.name}: max |diff| ${err} > 2e-6`);
    });
  }
  await t.step("head sizes it cannot tile fall back to attention.ts", () => {
    assert.equal(flashAttentionPlan(gpu, { headDim: 6 }), null);
    assert.equal(flashAttentionPlan(gpu, { headDim: 4 * 17 }), null); // 17 vec4 do not split in two
  });
  gpu.device.destroy();
});
