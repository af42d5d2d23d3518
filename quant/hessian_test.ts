import assert from "node:assert/strict";
import { createHessian } from "./hessian.ts";
import { addBatch, createHessian as createReferenceHessian } from "./reference/reference_hessian.ts";
import { correlatedInputs, hessianOf } from "./reference/_reference_cases.ts";
import { checkPipelines } from "../kernels/core/gpu.ts";
import { runPass, uploadStorage } from "../kernels/core/buffers.ts";
import { readMatrix } from "../kernels/core/matrix_parts.ts";
import { testGpu } from "../tests/_gpu.ts";
import { nmse } from "../tests/_assert.ts";

/** Seeded correlated activations as the forward pass stores them: (tokens, cols) f32 row-major. */
function activations(cols: number, tokens: number, seed: number): Float32Array {
  const X = correlatedInputs(cols, tokens, seed); // (cols, tokens)
  const x = new Float32Array(tokens * cols);
  for (let c = 0; c < cols; c++) for (let t = 0; t < tokens; t++) x[t * cols + c] = X[c * tokens + t];
  return x;
}

Deno.test("createHessian() matches add_batch's token-normalised running mean", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  createHessian(gpu, 4).destroy(); // builds both load paths' pipelines
  await checkPipelines(gpu);
  const shapes: [number, number[]][] = [1, 7, 63, 64, 65, 128, 200, 300].map((c) => [c, [37, 64, 5]]);
  shapes.push([64, [2048]]); // one real-length calibration window
  for (const [cols, batches] of shapes) {
    await t.step(`cols = ${cols}, batches ${batches.join("+")}`, async () => {
      const total = batches.reduce((a, b) => a + b, 0);
      const x = activations(cols, total, cols);
      const xBuf = uploadStorage(gpu, x, "x");
      const hessian = createHessian(gpu, cols);
      const ref = createReferenceHessian(cols, { perToken: true });
      let row = 0;
      for (const [b, tokens] of batches.entries()) {
        // Alternate the submitting and the recording entry points over one capture buffer.
        if (b % 2 === 0) hessian.addBatch(xBuf, tokens, row);
        else runPass(gpu, (pass) => hessian.encodeBatch(pass, xBuf, tokens, row));
        addBatch(ref, x.subarray(row * cols, (row + tokens) * cols));
        row += tokens;
      }
      assert.equal(hessian.tokens, total);
      hessian.finalize();
      const got = await readMatrix(gpu, hessian.H);
      const e = nmse(got, ref.H);
      // Measured ≤ 3.2e-13 on lavapipe (the 2048-token window; ≤ 7e-15 for the short ones).
      assert.ok(e < 1e-10, `cols ${cols}: nmse vs addBatch ${e.toExponential(2)}`);
      // The same H in one shot, (2/N)·X Xᵀ over all tokens.
      const Xt = new Float64Array(cols * total);
      for (let tk = 0; tk < total; tk++) for (let c = 0; c < cols; c++) Xt[c * total + tk] = x[tk * cols + c];
      assert.ok(nmse(got, hessianOf(Xt, cols)) < 1e-10, `cols ${cols}: hessianOf`);
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < i; j++) {
          assert.equal(got[i * cols + j], got[j * cols + i], `symmetry (${i}, ${j})`);
        }
      }
      hessian.destroy();
      xBuf.destroy();
    });
  }
  gpu.device.destroy();
});

Deno.test("createHessian() rejects batches past the buffer, after finalize, and an empty finalize", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const hessian = createHessian(gpu, 8);
  const x = uploadStorage(gpu, new Float32Array(10 * 8).fill(1), "x");
  assert.throws(() => hessian.addBatch(x, 11), /Cannot add rows 0\.\.11 of "x": the buffer holds 10 rows/);
  assert.throws(() => hessian.addBatch(x, 4, 7), /buffer holds 10 rows/);
  assert.throws(() => hessian.finalize(), /no tokens were added/);
  hessian.addBatch(x, 10);
  hessian.finalize();
  assert.throws(() => hessian.addBatch(x, 1), /after finalize/);
  // All-ones inputs: H = (2/10)·10·1·1ᵀ = 2 everywhere.
  assert.deepEqual(Array.from(await readMatrix(gpu, hessian.H, 64)), new Array(64).fill(2));
  hessian.destroy();
  gpu.device.destroy();
});
