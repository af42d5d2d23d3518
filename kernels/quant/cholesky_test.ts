import assert from "node:assert/strict";
import { createCholesky } from "./cholesky.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";
import { nmse } from "../../tests/_assert.ts";
import { choleskyLower } from "../../quant/reference/reference_linalg.ts";
import { randomSpd } from "../../quant/reference/_reference_cases.ts";

/** A damped random SPD matrix with an outlier channel, rounded to f32. */
function spd(n: number, seed: number, damp = 0.01): Float32Array {
  const H = randomSpd(n, seed, { outlier: n >> 1 });
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i] / n;
  for (let i = 0; i < n; i++) H[i * n + i] += damp * mean;
  return Float32Array.from(H);
}

/** Factors `A` on the GPU; returns L's lower triangle (zeros above) and the failure flag. */
async function factor(gpu: Gpu, nb: 32 | 64, A: Float32Array, n: number, gemmTile?: 64 | 128) {
  const buf = uploadStorage(gpu, A, "A");
  const flag = uploadStorage(gpu, new Uint32Array(1), "flag");
  const bound = createCholesky(gpu, gemmTile ? { nb, gemmTile } : { nb }).bind({ A: buf, n, flag });
  runPass(gpu, (pass) => bound.encode(pass));
  bound.destroy();
  const got = await readF32(gpu, buf, n * n);
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) L[i * n + j] = got[i * n + j];
  return { L, failed: (await readU32(gpu, flag, 1))[0] };
}

Deno.test("cholesky() factors SPD matrices like the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  createCholesky(gpu, { nb: 64 });
  createCholesky(gpu, { nb: 32 });
  await checkPipelines(gpu);
  const cases = [1, 7, 63, 64, 65, 128, 200, 300].map((n) => [n, 64] as const);
  // The last case runs the GEMMs on the 128-tile build.
  const more: [number, 32 | 64, 128?][] = [[65, 32], [200, 32], [300, 32], [300, 64, 128]];
  for (const [n, nb, gemmTile] of [...cases, ...more]) {
    await t.step(`n = ${n}, ${nb}-blocks${gemmTile ? `, ${gemmTile}-tiles` : ""}`, async () => {
      const A = spd(n, 5 + n);
      // The strict upper triangle is never read: poison it.
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) A[i * n + j] = NaN;
      const { L, failed } = await factor(gpu, nb, A, n, gemmTile);
      assert.equal(failed, 0, `n ${n}: pivot flagged on an SPD matrix`);
      const e = nmse(L, choleskyLower(A, n)!);
      // Measured ≤ 2e-14 on lavapipe (f32 rounding only; the input is already f32).
      assert.ok(e < 1e-12, `n ${n}: nmse ${e.toExponential(2)}`);
    });
  }
  gpu.device.destroy();
});

Deno.test("cholesky() flags non-positive, tiny and NaN pivots in any block", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const n = 150;
  const cases: [string, (A: Float32Array) => void][] = [
    ["negative diagonal in the first block", (A) => A[3 * n + 3] = -1],
    // Indefinite only after the trailing updates: A − 2·v·vᵀ with v the leading eigenvector-ish row.
    ["indefinite trailing block (third panel)", (A) => {
      for (let i = 130; i < n; i++) for (let j = 130; j < n; j++) A[i * n + j] -= 4 * (i === j ? 1 : 0.99);
    }],
    ["zero matrix", (A) => A.fill(0)],
    ["NaN entry", (A) => A[100 * n + 20] = NaN],
  ];
  for (const [name, spoil] of cases) {
    await t.step(name, async () => {
      const A = spd(n, 77, 0);
      spoil(A);
      for (const nb of [32, 64] as const) {
        assert.equal((await factor(gpu, nb, A, n)).failed, 1, `${name}, ${nb}-blocks: not flagged`);
      }
      assert.equal(choleskyLower(A, n), null, `${name}: the reference factors it`);
    });
  }
  gpu.device.destroy();
});
