import assert from "node:assert/strict";
import { createNll } from "./nll.ts";
import { logSoftmaxRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { assertAllClose } from "../../tests/_assert.ts";

Deno.test("nll() matches −log_softmax at the target on awkward shapes", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createNll(gpu);
  await checkPipelines(gpu);
  for (const [rows, vocab] of [[1, 1], [3, 7], [2, 255], [5, 512], [4, 4099]]) {
    await t.step(`rows = ${rows}, vocab = ${vocab}`, async () => {
      // Large-magnitude logits check the max subtraction; offsets check the indexing.
      const logits = randomF32(rows * vocab, rows * 100 + vocab, 30);
      const rand = seededRandom(vocab);
      const targetOffset = 2;
      const outOffset = 3;
      const targets = Uint32Array.from({ length: targetOffset + rows }, () => Math.floor(rand() * vocab));
      const out = createStorage(gpu, (outOffset + rows) * 4, "nll");
      const bound = kernel.bind({
        logits: uploadStorage(gpu, logits, "logits"),
        targets: uploadStorage(gpu, targets, "targets"),
        nll: out,
        rows,
        vocab,
        targetOffset,
        outOffset,
      });
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, out, outOffset + rows);
      assert.deepEqual([...got.subarray(0, outOffset)], [0, 0, 0], "rows before outOffset untouched");
      const want = Float64Array.from({ length: rows }, (_, r) => {
        const ls = logSoftmaxRef(logits.subarray(r * vocab, (r + 1) * vocab));
        return -ls[targets[targetOffset + r]];
      });
      assertAllClose(got.subarray(outOffset), want, { atol: 2e-5, rtol: 2e-6, what: "nll" });
    });
  }
  await t.step("rejects a targets buffer that is too short", () => {
    assert.throws(
      () =>
        kernel.bind({
          logits: createStorage(gpu, 4 * 8, "l"),
          targets: createStorage(gpu, 4, "t"),
          nll: createStorage(gpu, 8, "n"),
          rows: 2,
          vocab: 4,
        }),
      /buffer "targets" holds 4 bytes, needs 8/,
    );
  });
  gpu.device.destroy();
});
