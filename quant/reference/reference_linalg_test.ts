import assert from "node:assert/strict";
import {
  argsortDesc,
  choleskyLower,
  dampAndFactor,
  inverseSpd,
  invertLower,
  matmul,
  permuteSymmetric,
  transpose,
  upperInverseFactorLiteral,
  upperInverseFactorReversal,
} from "./reference_linalg.ts";
import { gaussian, randomSpd } from "./_reference_cases.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

/** The trailing principal sub-matrix H[i:, i:] (the columns F_i not yet quantized). */
function trailing(H: Float64Array, n: number, i: number): Float64Array {
  const m = n - i;
  return Float64Array.from({ length: m * m }, (_, p) => H[(i + Math.floor(p / m)) * n + i + (p % m)]);
}

function identity(n: number): Float64Array {
  return Float64Array.from({ length: n * n }, (_, p) => (p % (n + 1) === 0 ? 1 : 0));
}

Deno.test("choleskyLower() matches a hand-computed 3×3 factor", () => {
  // [[4, 2, -2], [2, 10, 2], [-2, 2, 6]] = L Lᵀ with L = [[2, 0, 0], [1, 3, 0], [-1, 1, 2]].
  const L = choleskyLower([4, 2, -2, 2, 10, 2, -2, 2, 6], 3);
  assert.deepEqual(Array.from(L!), [2, 0, 0, 1, 3, 0, -1, 1, 2]);
});

Deno.test("choleskyLower() reports failure instead of producing NaN", () => {
  assert.equal(choleskyLower([1, 2, 2, 1], 2), null); // indefinite: second pivot 1 − 4 < 0
  assert.equal(choleskyLower([1, 1, 1, 1], 2), null); // singular: zero pivot
  assert.equal(choleskyLower([NaN, 0, 0, 1], 2), null);
  assert.equal(choleskyLower([Infinity, 0, 0, 1], 2), null);
});

Deno.test("invertLower() and inverseSpd() give identity products", () => {
  const n = 17;
  const H = randomSpd(n, 3);
  const L = choleskyLower(H, n)!;
  assert.ok(maxAbsDiff(matmul(L, invertLower(L, n), { m: n, k: n, n }), identity(n)) < 1e-12);
  const Hi = inverseSpd(H, n)!;
  // H has an outlier channel (×30), so compare relative to its scale.
  assert.ok(maxAbsDiff(matmul(H, Hi, { m: n, k: n, n }), identity(n)) < 1e-9);
});

Deno.test("Appendix B identities hold for U on random SPD matrices with an outlier channel", async (t) => {
  for (const [n, seed] of [[12, 1], [24, 2], [40, 3]]) {
    await t.step(`n = ${n}`, () => {
      const H = randomSpd(n, seed, { outlier: n >> 2 });
      const U = upperInverseFactorLiteral(H, n)!;
      const Ur = upperInverseFactorReversal(H, n)!;
      // H⁻¹ = UᵀU, U upper-triangular with a positive diagonal.
      const Hi = inverseSpd(H, n)!;
      const scale = Math.max(...Hi.map(Math.abs));
      assert.ok(maxAbsDiff(matmul(transpose(U, n), U, { m: n, k: n, n }), Hi) < 1e-12 * scale);
      for (let i = 0; i < n; i++) {
        assert.ok(U[i * n + i] > 0);
        for (let j = 0; j < i; j++) assert.equal(U[i * n + j], 0);
      }
      // Reversal identity: U == J·inv(chol(JHJ))·J.
      const rel = maxAbsDiff(U, Ur) / Math.max(...U.map(Math.abs));
      assert.ok(rel < 1e-13, `reversal identity: relative difference ${rel}`);
      for (let i = 0; i < n; i++) {
        const Fi = inverseSpd(trailing(H, n, i), n - i)!;
        const f00 = Fi[0];
        // U_ii² = inv(H[i:, i:])[0, 0]: the OBQ diagonal after eliminating columns 0..i−1.
        assert.ok(Math.abs(U[i * n + i] ** 2 - f00) <= 1e-12 * f00, `U_ii² at i = ${i}`);
        // U[i, i:]/U[i, i] == inv(H_F)[0, :]/inv(H_F)[0, 0]: GPTQ's update is OBQ's for a fixed order.
        for (let j = i; j < n; j++) {
          const d = U[i * n + j] / U[i * n + i] - Fi[j - i] / f00;
          assert.ok(Math.abs(d) < 1e-11, `row ratio (${i}, ${j}): ${d}`);
        }
      }
    });
  }
});

Deno.test("argsortDesc() sorts descending and keeps index order on ties", () => {
  assert.deepEqual(Array.from(argsortDesc([1, 3, 2, 3, 1, 5])), [5, 1, 3, 2, 0, 4]);
});

Deno.test("permuteSymmetric() gathers rows and columns together", () => {
  const H = [1, 2, 3, 2, 4, 5, 3, 5, 6];
  assert.deepEqual(Array.from(permuteSymmetric(H, [2, 0, 1])), [6, 3, 5, 3, 1, 2, 5, 2, 4]);
});

Deno.test("dampAndFactor() retries an indefinite H with 10× damping and reports it", async (t) => {
  // Rank-deficient PSD minus 2% of the mean diagonal: λ = 1% fails, λ = 10% succeeds.
  const n = 16, m = 8;
  const A = gaussian(n * m, 9);
  const At = Float64Array.from({ length: m * n }, (_, p) => A[(p % n) * m + Math.floor(p / n)]);
  const H = matmul(A, At, { m: n, k: m, n });
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i] / n;
  for (let i = 0; i < n; i++) H[i * n + i] -= 0.02 * mean;
  for (const factor of ["literal", "reversal"] as const) {
    await t.step(factor, () => {
      const messages: string[] = [];
      const f = dampAndFactor(H, n, { percdamp: 0.01, factor, onRetry: (msg) => messages.push(msg) });
      assert.equal(f.retries, 1);
      assert.equal(messages.length, 1);
      assert.match(messages[0], /percdamp 0\.01.*percdamp 0\.1/);
      assert.ok(Math.abs(f.percdampUsed - 0.1) < 1e-15);
      // mean(diag H) after the subtraction is 0.98·mean.
      assert.ok(Math.abs(f.dampUsed - 0.1 * 0.98 * mean) < 1e-12 * mean);
      assert.ok(f.Hinv.every(Number.isFinite));
      assert.ok(
        maxAbsDiff(f.H.filter((_, p) => p % (n + 1) !== 0), H.filter((_, p) => p % (n + 1) !== 0)) === 0,
      );
    });
  }
  await t.step("gives up after maxRetries", () => {
    assert.throws(
      () => dampAndFactor(H, n, { percdamp: 0.001, maxRetries: 1, onRetry: () => {} }),
      /Cannot factor the Hessian/,
    );
  });
});
