/** Numeric assertions shared by kernel and model tests. */
import assert from "node:assert/strict";

/** Normalised mean squared error: Σ(a−b)² / max(Σb², tiny). */
export function nmse(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, "nmse: length mismatch");
  let err = 0;
  let ref = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    err += d * d;
    ref += expected[i] * expected[i];
  }
  return err / Math.max(ref, 1e-30);
}

/** Largest |a−b|. */
export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, "maxAbsDiff: length mismatch");
  let m = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= m)) m = d; // NaN propagates as the maximum
  }
  return m;
}

/** Asserts NMSE ≤ tol, naming the case in the failure. */
export function assertNmse(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
) {
  const e = nmse(actual, expected);
  assert.ok(e <= tol, `${what}: nmse ${e.toExponential(3)} > ${tol}`);
}

/** Asserts max |a−b| ≤ atol + rtol·|b| elementwise. */
export function assertAllClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-5, what = "" }: { atol?: number; rtol?: number; what?: string } = {},
): void {
  assert.equal(actual.length, expected.length, `${what}: length mismatch`);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= atol + rtol * Math.abs(expected[i]))) {
      assert.fail(`${what}: element ${i}: got ${actual[i]}, expected ${expected[i]} (|diff| ${d})`);
    }
  }
}
