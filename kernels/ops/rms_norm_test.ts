import assert from "node:assert/strict";
import { createRmsNorm } from "./rms_norm.ts";
import { rmsNormRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse, maxAbsDiff } from "../../tests/_assert.ts";

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
  await t.step("accumulate adds the normed rows onto y (Gemma's post-norms onto the residual)", async () => {
    const [rows, dim] = [5, 65];
    const x = randomF32(rows * dim, 11, 3);
    const w = randomF32(dim, 12);
    const y0 = randomF32(rows * dim, 13, 2);
    const y = uploadStorage(gpu, y0, "y");
    const bound = kernel.bind({
      x: uploadStorage(gpu, x, "x"),
      weight: uploadStorage(gpu, w, "w"),
      y,
      rows,
      dim,
      eps: 1e-6,
      accumulate: true,
    });
    runPass(gpu, (pass) => bound.encode(pass));
    const want = rmsNormRef(x, w, rows, 1e-6).map((v, i) => v + y0[i]);
    const got = await readF32(gpu, y, rows * dim);
    assertNmse(got, want, 1e-10, "accumulate");
    assert.ok(maxAbsDiff(got, want) < 1e-5);
  });
  gpu.device.destroy();
});
