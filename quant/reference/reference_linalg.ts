/**
 * f64 linear algebra for the quantizer reference (docs/quantization.md §1.2 steps 6–8): Cholesky that reports
 * failure, triangular and SPD inverses, the symmetric act-order permutation, and the upper inverse factor
 * U of H⁻¹ (H⁻¹ = UᵀU) computed two ways:
 *  (a) literally as gptq.py does it: chol(H) → cholesky_inverse → chol(H⁻¹, upper);
 *  (b) by the reversal identity U = J·inv(chol_lower(J H J))·J (one Cholesky + one triangular inverse).
 * All matrices are Float64Array, row-major, square (n, n) unless stated otherwise. Plain loops, never
 * optimised: this is the spec the GPU path is compared against.
 */

/**
 * Lower Cholesky factor L with A = L Lᵀ. Reads only the lower triangle of A.
 * Returns null instead of NaN when a pivot is non-positive or not finite (A not numerically SPD).
 * @param A (n, n) symmetric
 * @param n order
 * @returns L (n, n) lower-triangular with a positive diagonal, or null on failure
 */
export function choleskyLower(A: ArrayLike<number>, n: number): Float64Array | null {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let pivot = A[j * n + j];
    for (let k = 0; k < j; k++) pivot -= L[j * n + k] * L[j * n + k];
    // `!(pivot > 0)` also catches NaN; Infinity would poison every later entry.
    if (!(pivot > 0) || !Number.isFinite(pivot)) return null;
    const ljj = Math.sqrt(pivot);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j];
      for (let k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = s / ljj;
    }
  }
  return L;
}

/**
 * Inverse of a lower-triangular matrix by forward substitution, column by column.
 * @param L (n, n) lower-triangular, non-zero diagonal
 * @param n order
 * @returns L⁻¹ (n, n), lower-triangular
 */
export function invertLower(L: ArrayLike<number>, n: number): Float64Array {
  const X = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    X[j * n + j] = 1 / L[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += L[i * n + k] * X[k * n + j];
      X[i * n + j] = -s / L[i * n + i];
    }
  }
  return X;
}

/**
 * Inverse of an SPD matrix through its Cholesky factor (torch.cholesky_inverse): A⁻¹ = L⁻ᵀ L⁻¹.
 * @param A (n, n) SPD
 * @param n order
 * @returns A⁻¹ (n, n), or null when the Cholesky fails
 */
export function inverseSpd(A: ArrayLike<number>, n: number): Float64Array | null {
  const L = choleskyLower(A, n);
  if (!L) return null;
  const Li = invertLower(L, n);
  const X = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      // (L⁻ᵀ L⁻¹)[i][j] = Σ_k Li[k][i]·Li[k][j]; Li is lower so k ≥ max(i, j) = i.
      let s = 0;
      for (let k = i; k < n; k++) s += Li[k * n + i] * Li[k * n + j];
      X[i * n + j] = s;
      X[j * n + i] = s;
    }
  }
  return X;
}

/**
 * U with H⁻¹ = UᵀU, U upper-triangular with a positive diagonal, the literal gptq.py way:
 * L = chol(H), H⁻¹ = cholesky_inverse(L), U = chol(H⁻¹, upper) = chol_lower(H⁻¹)ᵀ.
 * @param H (n, n) SPD (already damped)
 * @param n order
 * @returns U (n, n), or null when either Cholesky fails
 */
export function upperInverseFactorLiteral(H: ArrayLike<number>, n: number): Float64Array | null {
  const Hi = inverseSpd(H, n);
  if (!Hi) return null;
  const Lh = choleskyLower(Hi, n);
  if (!Lh) return null;
  return transpose(Lh, n);
}

/**
 * The same U by the reversal identity (docs/quantization.md §1.2): if J H J = L Lᵀ then U = J L⁻¹ J,
 * i.e. U[i][j] = L⁻¹[n−1−i][n−1−j]. One Cholesky and one triangular inverse, no full inverse.
 * @param H (n, n) SPD (already damped)
 * @param n order
 * @returns U (n, n) upper-triangular, or null when the Cholesky fails
 */
export function upperInverseFactorReversal(H: ArrayLike<number>, n: number): Float64Array | null {
  const JHJ = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) JHJ[i * n + j] = H[(n - 1 - i) * n + (n - 1 - j)];
  }
  const L = choleskyLower(JHJ, n);
  if (!L) return null;
  const Li = invertLower(L, n);
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) U[i * n + j] = Li[(n - 1 - i) * n + (n - 1 - j)];
  }
  return U;
}

/**
 * Act-order permutation: indices sorted by value, descending; ties keep ascending index (stable), so the
 * reference is deterministic where torch.argsort is not.
 * @param values (n)
 * @returns perm (n): perm[k] = original index of the k-th largest value
 */
export function argsortDesc(values: ArrayLike<number>): Int32Array {
  const idx = Array.from({ length: values.length }, (_, i) => i);
  idx.sort((a, b) => (values[b] - values[a]) || (a - b));
  return Int32Array.from(idx);
}

/**
 * P H Pᵀ: rows and columns of H gathered by `perm` (H[perm][:, perm] in torch).
 * @param H (n, n)
 * @param perm (n)
 * @returns (n, n)
 */
export function permuteSymmetric(H: ArrayLike<number>, perm: ArrayLike<number>): Float64Array {
  const n = perm.length;
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) out[i * n + j] = H[perm[i] * n + perm[j]];
  }
  return out;
}

/** Options of {@link dampAndFactor}. */
export interface DampOptions {
  /** Relative damping: λ = percdamp · mean(diag H). */
  percdamp?: number;
  /** "literal" (gptq.py: chol, inverse, chol) or "reversal" (J·inv(chol(JHJ))·J). */
  factor?: "literal" | "reversal";
  /** Retries after the first failure; each multiplies percdamp by 10. */
  maxRetries?: number;
  /** Receives one line per retry (the reference itself has no retry; docs/quantization.md §6 item 6). */
  onRetry?: (message: string) => void;
}

/** Result of {@link dampAndFactor}. */
export interface DampedFactor {
  /** (n, n) H + λI with the λ that succeeded. */
  H: Float64Array;
  /** (n, n) the upper Cholesky factor U of H⁻¹, named as gptq.py names it (it is NOT the inverse). */
  Hinv: Float64Array;
  /** Absolute λ added to the diagonal. */
  dampUsed: number;
  /** Relative damping that succeeded (percdamp · 10^retries). */
  percdampUsed: number;
  /** Number of failed attempts before success. */
  retries: number;
}

/**
 * Damps H by λ = percdamp·mean(diag H) and factors it; on a Cholesky failure retries with percdamp ×10
 * (a percdamp of 0 restarts at 0.01) up to `maxRetries` times, then throws.
 * @param H (n, n) symmetric, dead columns already fixed; not modified
 * @param n order
 * @returns the damped H, U and the damping actually used
 */
export function dampAndFactor(
  H: ArrayLike<number>,
  n: number,
  { percdamp = 0.01, factor = "literal", maxRetries = 4, onRetry = console.warn }: DampOptions = {},
): DampedFactor {
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += H[i * n + i];
  meanDiag /= n;
  let pd = percdamp;
  for (let retries = 0; retries <= maxRetries; retries++) {
    const damp = pd * meanDiag;
    const Hd = Float64Array.from(H);
    for (let i = 0; i < n; i++) Hd[i * n + i] += damp;
    const U = factor === "literal" ? upperInverseFactorLiteral(Hd, n) : upperInverseFactorReversal(Hd, n);
    if (U) return { H: Hd, Hinv: U, dampUsed: damp, percdampUsed: pd, retries };
    const next = pd > 0 ? pd * 10 : 0.01;
    if (retries < maxRetries) {
      onRetry(`Cholesky failed with percdamp ${pd}: retrying with percdamp ${next}`);
    }
    pd = next;
  }
  throw new Error(`Cannot factor the Hessian: Cholesky failed up to percdamp ${pd / 10}`);
}

/**
 * Plain matrix product.
 * @param A (m, k)
 * @param B (k, n)
 * @param dims `{ m, k, n }`
 * @returns (m, n)
 */
export function matmul(
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  { m, k, n }: { m: number; k: number; n: number },
): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const a = A[i * k + p];
      for (let j = 0; j < n; j++) C[i * n + j] += a * B[p * n + j];
    }
  }
  return C;
}

/**
 * Transpose of a square matrix.
 * @param A (n, n)
 * @param n order
 * @returns Aᵀ (n, n)
 */
export function transpose(A: ArrayLike<number>, n: number): Float64Array {
  const T = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) T[j * n + i] = A[i * n + j];
  return T;
}
