/**
 * Seeded test inputs for the quantizer tests (f64 reference now, GPU-vs-reference later): random SPD
 * Hessians with an outlier channel, correlated layer inputs, and H built from them. Test-only, but it
 * imports nothing from tests/ (quant/ may only depend on kernels/, see tests/architecture_test.ts).
 */
import { matmul } from "./reference_linalg.ts";
import type { GptqResult } from "./reference.ts";

/** n seeded standard-normal values (Box–Muller). */
export function gaussian(n: number, seed: number): Float64Array {
  const rand = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - rand(); // (0, 1]: log stays finite
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}

/**
 * A random SPD matrix A Aᵀ/m (A is (n, m), m = 2n) with channel `outlier` scaled by `outlierScale`
 * on both sides (D H D stays SPD), like a massive-activation channel.
 * @returns (n, n)
 */
export function randomSpd(
  n: number,
  seed: number,
  { outlier = 1, outlierScale = 30 }: { outlier?: number; outlierScale?: number } = {},
): Float64Array {
  const m = 2 * n;
  const A = gaussian(n * m, seed);
  const At = new Float64Array(m * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) At[j * n + i] = A[i * m + j];
  const H = matmul(A, At, { m: n, k: m, n });
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      H[i * n + j] *= ((i === outlier ? outlierScale : 1) * (j === outlier ? outlierScale : 1)) / m;
    }
  }
  return H;
}

/**
 * Correlated layer inputs X = M Z: Z standard normal, M = I + 0.5·G/√cols mixes channels, and one channel
 * is scaled by 10 so act-order and the importance weights have something to find.
 * @returns X (cols, tokens), each column one token
 */
export function correlatedInputs(cols: number, tokens: number, seed: number): Float64Array {
  const M = gaussian(cols * cols, seed + 1).map((v) => 0.5 * v / Math.sqrt(cols));
  for (let i = 0; i < cols; i++) M[i * cols + i] += 1;
  const X = matmul(M, gaussian(cols * tokens, seed + 2), { m: cols, k: cols, n: tokens });
  for (let t = 0; t < tokens; t++) X[(cols >> 1) * tokens + t] *= 10;
  return X;
}

/**
 * H = (2/tokens)·X Xᵀ, the token-normalised Hessian of inputs given as columns.
 * @param X (cols, tokens)
 * @returns (cols, cols)
 */
export function hessianOf(X: ArrayLike<number>, cols: number): Float64Array {
  const tokens = X.length / cols;
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let t = 0; t < tokens; t++) s += X[i * tokens + t] * X[j * tokens + t];
      H[i * cols + j] = 2 * s / tokens;
    }
  }
  return H;
}

/**
 * Checks that every code is in range and Q is exactly what inference dequantizes from the codes and the
 * grid parameters (the LUT, or scale/zero picked by gIdx).
 * @returns null when consistent, else a description of the first mismatch
 */
export function dequantMismatch(res: GptqResult, rows: number, cols: number, bits: number): string | null {
  const K = 2 ** bits;
  const nGroups = res.scale ? res.scale.length / rows : 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const code = res.codes[r * cols + c];
      if (code >= K) return `code ${code} at (${r}, ${c}) is out of range`;
      const q = res.lut
        ? res.lut[r * K + code]
        : res.scale![r * nGroups + res.gIdx![c]] * (code - res.zero![r * nGroups + res.gIdx![c]]);
      if (res.Q[r * cols + c] !== q) return `Q[${r}, ${c}] = ${res.Q[r * cols + c]}, dequantized ${q}`;
    }
  }
  return null;
}

/** Seeded PRNG (mulberry32, as tests/_gpu.ts seededRandom) returning uniforms in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
