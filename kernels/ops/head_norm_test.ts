import { createHeadNorm } from "./head_norm.ts";
import { rmsNormRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";

Deno.test("headNorm() normalises every q and k head in place like a per-head RMSNorm in f64", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createHeadNorm(gpu);
  await checkPipelines(gpu);
  const cases = [
    { rows: 1, nHeads: 1, nKvHeads: 1, headDim: 4 },
    { rows: 61, nHeads: 4, nKvHeads: 2, headDim: 16 }, // the tiny Qwen3 / Gemma 3
    { rows: 3, nHeads: 16, nKvHeads: 8, headDim: 128 }, // Qwen3-8B
    { rows: 2, nHeads: 8, nKvHeads: 4, headDim: 256 }, // Gemma 3: more than one value per invocation
    { rows: 5, nHeads: 3, nKvHeads: 3, headDim: 6 },
  ];
  for (const c of cases) {
    const { rows, nHeads, nKvHeads, headDim } = c;
    await t.step(JSON.stringify(c), async () => {
      const q0 = randomF32(rows * nHeads * headDim, rows + headDim, 4);
      const k0 = randomF32(rows * nKvHeads * headDim, rows + headDim + 1, 4);
      const qw = randomF32(headDim, headDim + 2);
      const kw = randomF32(headDim, headDim + 3);
      const q = uploadStorage(gpu, q0, "q");
      const k = uploadStorage(gpu, k0, "k");
      const bound = kernel.bind({
        q,
        k,
        qWeight: uploadStorage(gpu, qw, "qw"),
        kWeight: uploadStorage(gpu, kw, "kw"),
        ...c,
        eps: 1e-6,
      });
      runPass(gpu, (pass) => bound.encode(pass));
      const tol = 1e-10;
      assertNmse(await readF32(gpu, q, q0.length), rmsNormRef(q0, qw, rows * nHeads, 1e-6), tol, "q");
      assertNmse(await readF32(gpu, k, k0.length), rmsNormRef(k0, kw, rows * nKvHeads, 1e-6), tol, "k");
    });
  }
  gpu.device.destroy();
});
