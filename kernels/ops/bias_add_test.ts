import assert from "node:assert/strict";
import { createBiasAdd } from "./bias_add.ts";
import { biasAddRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

Deno.test("biasAdd() adds the bias to every row in place, as one f32 add", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createBiasAdd(gpu);
  await checkPipelines(gpu);
  for (const [rows, n] of [[1, 1], [1, 64], [61, 32], [7, 4097]]) {
    await t.step(`rows = ${rows}, n = ${n}`, async () => {
      const y0 = randomF32(rows * n, rows + n, 3);
      const bias = randomF32(n, n + 1);
      const y = uploadStorage(gpu, y0, "y");
      const bound = kernel.bind({ bias: uploadStorage(gpu, bias, "bias"), y, rows, n });
      runPass(gpu, (pass) => bound.encode(pass));
      const want = Float32Array.from(biasAddRef(y0, bias)); // one f32 rounding of the exact sum
      assert.equal(maxAbsDiff(await readF32(gpu, y, rows * n), want), 0);
    });
  }
  gpu.device.destroy();
});
