import assert from "node:assert/strict";
import { createKvAppend } from "./kv_append.ts";
import { createAdvance } from "../core/step_state.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";

/** The cache after writing `rows` rows of `x` at positions pos.., dropping rows at or past seqLen. */
function appended(cache: Float32Array, x: Float32Array, pos: number, kvDim: number, seqLen: number) {
  const out = cache.slice();
  const rows = x.length / kvDim;
  for (let t = 0; t < rows && pos + t < seqLen; t++) {
    out.set(x.subarray(t * kvDim, (t + 1) * kvDim), (pos + t) * kvDim);
  }
  return out;
}

Deno.test("kvAppend() writes rows at state.pos and drops rows past seqLen", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createKvAppend(gpu);
  const advance = createAdvance(gpu);
  await checkPipelines(gpu);
  const cases: [rows: number, kvDim: number, seqLen: number, pos: number][] = [
    [1, 1, 4, 0],
    [7, 7, 16, 12], // rows 4.. fall past seqLen
    [63, 63, 70, 0],
    [1, 64, 70, 69], // last slot
    [65, 65, 400, 300],
    [3, 32, 512, 5], // stories260K: 4 KV heads × 8
    [1, 256, 2048, 2000], // lq-49m: 4 KV heads × 64
    [17, 1024, 64, 55], // Llama-3-8B-like: 8 KV heads × 128; rows 9.. fall past seqLen
  ];
  for (const [rows, kvDim, seqLen, pos] of cases) {
    await t.step(`rows = ${rows}, kvDim = ${kvDim}, seqLen = ${seqLen}, pos = ${pos}`, async () => {
      const k = randomF32(rows * kvDim, rows + kvDim);
      const v = randomF32(rows * kvDim, rows + kvDim + 1);
      // Non-zero old contents, so rows the kernel must leave alone are distinguishable.
      const kOld = randomF32(seqLen * kvDim, seqLen, 5);
      const vOld = randomF32(seqLen * kvDim, seqLen + 1, 5);
      const kCache = uploadStorage(gpu, kOld, "kCache");
      const vCache = uploadStorage(gpu, vOld, "vCache");
      const state = uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state");
      const bound = kernel.bind({
        k: uploadStorage(gpu, k, "k"),
        v: uploadStorage(gpu, v, "v"),
        kCache,
        vCache,
        state,
        rows,
        kvDim,
        seqLen,
      });
      runPass(gpu, (pass) => bound.encode(pass));
      assert.deepEqual(await readF32(gpu, kCache, seqLen * kvDim), appended(kOld, k, pos, kvDim, seqLen));
      assert.deepEqual(await readF32(gpu, vCache, seqLen * kvDim), appended(vOld, v, pos, kvDim, seqLen));
    });
  }
  await t.step("replaying one bound append after advance writes consecutive positions", async () => {
    const [kvDim, seqLen, pos] = [8, 12, 3];
    const k = randomF32(kvDim, 1);
    const zeros = new Float32Array(seqLen * kvDim);
    const kCache = uploadStorage(gpu, zeros, "kCache");
    const vCache = uploadStorage(gpu, zeros, "vCache");
    const state = uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state");
    const kBuf = uploadStorage(gpu, k, "k");
    const bound = kernel.bind({ k: kBuf, v: kBuf, kCache, vCache, state, rows: 1, kvDim, seqLen });
    const step = advance.bind({ state, nTokens: 1, stepInc: 1 });
    runPass(gpu, (pass) => {
      for (let i = 0; i < 3; i++) {
        bound.encode(pass);
        step.encode(pass);
      }
    });
    let want = zeros;
    for (let i = 0; i < 3; i++) want = appended(want, k, pos + i, kvDim, seqLen);
    assert.deepEqual(await readF32(gpu, kCache, seqLen * kvDim), want);
  });
  gpu.device.destroy();
});
