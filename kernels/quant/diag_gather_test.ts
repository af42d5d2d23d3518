import assert from "node:assert/strict";
import { createDiagGather } from "./diag_gather.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";

Deno.test("diagGather() reads the diagonal of square matrices exactly", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createDiagGather(gpu);
  await checkPipelines(gpu);
  for (const n of [1, 7, 257, 700]) {
    await t.step(`n = ${n}`, async () => {
      const A = randomF32(n * n, n);
      const d = createStorage(gpu, n * 4, "d");
      const bound = kernel.bind({ A: uploadStorage(gpu, A, "A"), d, n });
      runPass(gpu, (pass) => bound.encode(pass));
      bound.destroy();
      const want = Array.from({ length: n }, (_, i) => A[i * n + i]);
      assert.deepEqual(Array.from(await readF32(gpu, d, n)), want);
    });
  }
  gpu.device.destroy();
});
