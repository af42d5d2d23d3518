import { createRmsNorm } from "./rms_norm.ts";
import { rmsNormRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";

Deno.test("rmsNorm() matches the f64 reference on awkward shapes", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createRmsNorm(gpu);
  await checkPipelines(gpu);
  for (const [rows, dim] of [[1, 1], [1, 7], [3, 63], [2, 64], [5, 65], [1, 512], [2, 4097]]) {
    await t.step(`rows = ${rows}, dim = ${dim}`, async () => {
      const x = randomF32(rows * dim, rows * 1000 + dim, 3);
      const w = randomF32(dim, dim + 7);
      const y = createStorage(gpu, rows * dim * 4, "y");
      const bound = kernel.bind({
        x: uploadStorage(gpu, x, "x"),
        weight: uploadStorage(gpu, w, "w"),
        y,
        rows,
        dim,
        eps: 1e-5,
      });
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, y, rows * dim);
      assertNmse(got, rmsNormRef(x, w, rows, 1e-5), 1e-10, `rows ${rows} dim ${dim}`);
    });
  }
  gpu.device.destroy();
});
