import assert from "node:assert/strict";
import { createHessianAccum } from "./hessian_accum.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";

Deno.test("hessianAccum() updates the upper triangle by Xᵀ·X and mirrors on request", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createHessianAccum(gpu);
  await checkPipelines(gpu);
  // cols % 4 picks the load path: 1, 7, 63, 65 scalar; 64, 260 vec4 (260 has a partial third tile).
  for (const cols of [1, 7, 63, 64, 65, 260]) {
    await t.step(`cols = ${cols}`, async () => {
      const tokens = 37;
      const offset = 3;
      const x = randomF32((offset + tokens) * cols, cols, 2);
      const H0 = randomF32(cols * cols, cols + 1);
      const H = uploadStorage(gpu, H0, "H");
      const alpha = 0.5, beta = 2;
      const step = kernel.bind({
        x: uploadStorage(gpu, x, "x"),
        H,
        cols,
        tokens,
        xRowOffset: offset,
        alpha,
        beta,
      });
      runPass(gpu, (pass) => step.encode(pass));
      step.destroy();
      const got = await readF32(gpu, H, cols * cols);
      const want = Float64Array.from(H0);
      for (let i = 0; i < cols; i++) {
        for (let j = i; j < cols; j++) {
          let s = 0;
          for (let r = offset; r < offset + tokens; r++) s += x[r * cols + i] * x[r * cols + j];
          want[i * cols + j] = alpha * H0[i * cols + j] + beta * s;
        }
      }
      assertNmse(got, want, 1e-12, `cols ${cols} update`);
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < i; j++) {
          assert.equal(got[i * cols + j], H0[i * cols + j], `lower (${i}, ${j}) written`);
        }
      }
      // tokens = 0: a pure scale of the upper triangle, copied bit for bit to the lower one.
      const fin = kernel.bind({ H, cols, tokens: 0, alpha: 3, beta: 0, mirror: true });
      runPass(gpu, (pass) => fin.encode(pass));
      fin.destroy();
      const done = await readF32(gpu, H, cols * cols);
      for (let i = 0; i < cols; i++) {
        for (let j = i; j < cols; j++) {
          assert.equal(done[i * cols + j], Math.fround(3 * got[i * cols + j]), `scaled (${i}, ${j})`);
          assert.equal(done[j * cols + i], done[i * cols + j], `mirrored (${j}, ${i})`);
        }
      }
    });
  }
  gpu.device.destroy();
});
