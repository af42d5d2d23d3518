import assert from "node:assert/strict";
import { createGptqUpdate } from "./gptq_update.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertAllClose } from "../../tests/_assert.ts";

Deno.test("gptqUpdate() applies W[:, i2:] −= Err1 · U[i1:i2, i2:] and leaves [0, i2) alone", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createGptqUpdate(gpu);
  await checkPipelines(gpu);
  const cases = [
    { rows: 1, cols: 8, i1: 0, count: 4 },
    { rows: 7, cols: 63, i1: 32, count: 16 },
    { rows: 33, cols: 130, i1: 0, count: 128 },
    { rows: 64, cols: 256, i1: 128, count: 64 },
    { rows: 65, cols: 200, i1: 4, count: 17 },
  ];
  for (const { rows, cols, i1, count } of cases) {
    await t.step(`rows ${rows}, cols ${cols}, block [${i1}, ${i1 + count})`, async () => {
      const i2 = i1 + count;
      const W = randomF32(rows * cols, rows + cols, 1);
      const err = randomF32(count * rows, rows * 3 + count, 0.5);
      const U = randomF32(cols * cols, cols, 1);
      const want = Float64Array.from(W);
      for (let r = 0; r < rows; r++) {
        for (let j = i2; j < cols; j++) {
          let s = 0;
          for (let i = 0; i < count; i++) s += err[i * rows + r] * U[(i1 + i) * cols + j];
          want[r * cols + j] -= s;
        }
      }
      const Wbuf = uploadStorage(gpu, W, "W");
      const bound = kernel.bind({
        W: Wbuf,
        err: uploadStorage(gpu, err, "err"),
        U: uploadStorage(gpu, U, "U"),
        rows,
        cols,
        i1,
        count,
      });
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, Wbuf, rows * cols);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < i2; j++) assert.equal(got[r * cols + j], W[r * cols + j], `(${r}, ${j}) changed`);
      }
      assertAllClose(got, want, { atol: 1e-5, rtol: 1e-5, what: "W" });
    });
  }
  const buf = createStorage(gpu, 1024, "buf");
  assert.throws(
    () => kernel.bind({ W: buf, err: buf, U: buf, rows: 2, cols: 8, i1: 4, count: 4 }),
    /leaves no columns of 8 to update/,
  );
  gpu.device.destroy();
});
