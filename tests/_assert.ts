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

/** Where a matmul kernel writes into a strided y: columns [yColOffset, yColOffset + outDim) of rows rows. */
export interface StridedOutput {
  rows: number;
  outDim: number;
  yStride: number;
  yColOffset: number;
}

/**
 * Checks a strided matmul output: the written columns against `want(accIn)` by NMSE, where `accIn` holds
 * y's previous values in those columns (for accumulate), and every other element of y unchanged.
 * @param got y after the kernel, (rows, yStride)
 * @param y0 y before the kernel, (rows, yStride)
 * @param want the reference for the written columns (rows, outDim), given their previous values
 */
export function assertStridedMatmul(
  got: Float32Array,
  y0: Float32Array,
  { rows, outDim, yStride, yColOffset }: StridedOutput,
  want: (accIn: Float32Array) => ArrayLike<number>,
  { tol = 1e-10, what = "" }: { tol?: number; what?: string } = {},
): void {
  const accIn = new Float32Array(rows * outDim);
  const gotCols = new Float32Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      accIn[r * outDim + o] = y0[r * yStride + yColOffset + o];
      gotCols[r * outDim + o] = got[r * yStride + yColOffset + o];
    }
  }
  assertNmse(gotCols, want(accIn), tol, what);
  for (let i = 0; i < rows * yStride; i++) {
    const col = i % yStride;
    if (col < yColOffset || col >= yColOffset + outDim) {
      assert.equal(got[i], y0[i], `${what}: element ${i} outside the written columns changed`);
    }
  }
}

/**
 * Checks an f16-arithmetic GEMM output (kernels/matmul/gemm_core_wgsl.ts) element by element against its
 * worst-case bound, `bound(i, want[i])` for written element i (row-major over rows × outDim), and every
 * element outside the written columns unchanged. Also returns the NMSE, for a typical-error check.
 */
export function assertBoundedMatmul(
  got: Float32Array,
  y0: Float32Array,
  { rows, outDim, yStride, yColOffset }: StridedOutput,
  want: (accIn: Float32Array) => ArrayLike<number>,
  bound: (i: number, value: number) => number,
  what = "",
): number {
  const accIn = new Float32Array(rows * outDim);
  const gotCols = new Float32Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      accIn[r * outDim + o] = y0[r * yStride + yColOffset + o];
      gotCols[r * outDim + o] = got[r * yStride + yColOffset + o];
    }
  }
  const ref = want(accIn);
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(gotCols[i] - ref[i]);
    const b = bound(i, ref[i]);
    assert.ok(err <= b, `${what}: element ${i} off by ${err.toExponential(3)} > bound ${b.toExponential(3)}`);
  }
  for (let i = 0; i < rows * yStride; i++) {
    const col = i % yStride;
    if (col < yColOffset || col >= yColOffset + outDim) {
      assert.equal(got[i], y0[i], `${what}: element ${i} outside the written columns changed`);
    }
  }
  return nmse(gotCols, ref);
}
