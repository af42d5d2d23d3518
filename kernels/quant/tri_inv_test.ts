import assert from "node:assert/strict";
import { createTriInv } from "./tri_inv.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";
import { nmse } from "../../tests/_assert.ts";
import { choleskyLower, invertLower } from "../../quant/reference/reference_linalg.ts";
import { randomSpd } from "../../quant/reference/_reference_cases.ts";

/** A lower Cholesky factor (rounded to f32) of a damped random SPD matrix with an outlier channel. */
function lowerFactor(n: number, seed: number): Float32Array {
  const H = randomSpd(n, seed, { outlier: n >> 1 });
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i] / n;
  for (let i = 0; i < n; i++) H[i * n + i] += 0.01 * mean;
  return Float32Array.from(choleskyLower(H, n)!);
}

Deno.test("triInv() inverts lower-triangular matrices like the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernels = {
    64: createTriInv(gpu, { nb: 64 }),
    32: createTriInv(gpu, { nb: 32 }),
    128: createTriInv(gpu, { nb: 32, gemmTile: 128 }), // the 128-tile GEMM build
  };
  await checkPipelines(gpu);
  // 300 exercises a partial last leaf block, a lone block at one level and a partial pair at the next;
  // 32-blocks give the small sizes more doubling levels.
  const cases = [1, 7, 63, 64, 65, 128, 200, 300].map((n) => [n, 64] as const);
  for (const [n, nb] of [...cases, [65, 32], [200, 32], [300, 32], [300, 128]] as const) {
    await t.step(nb === 128 ? `n = ${n}, 32-blocks, 128-tiles` : `n = ${n}, ${nb}-blocks`, async () => {
      const kernel = kernels[nb];
      const L = lowerFactor(n, 11 + n);
      const want = invertLower(L, n);
      // The upper triangles are garbage on purpose: L's must be ignored, X's is scratch.
      const Lg = L.slice();
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) Lg[i * n + j] = 1e30;
      const X = uploadStorage(gpu, new Float32Array(n * n).fill(NaN), "X");
      const bound = kernel.bind({ L: uploadStorage(gpu, Lg, "L"), X, n });
      runPass(gpu, (pass) => bound.encode(pass));
      bound.destroy();
      const got = await readF32(gpu, X, n * n);
      const lower = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) lower[i * n + j] = got[i * n + j];
      const e = nmse(lower, want);
      // Measured ≤ 1.5e-14 on lavapipe (f32 rounding only; the input is already f32).
      assert.ok(e < 1e-12, `n ${n}: nmse ${e.toExponential(2)}`);
    });
  }
  gpu.device.destroy();
});
