/**
 * The Hessian side of the quantizer reference (docs/quantization.md §1.1–1.2): gptq.py's `add_batch` running mean,
 * and fasterquant's prologue (dead columns, act-order permutation, damping with retries, the factor U).
 * f64, row-major; see reference.ts for the map to GPTQ Algorithm 1.
 */
import { argsortDesc, dampAndFactor, type DampOptions, permuteSymmetric } from "./reference_linalg.ts";
/** Running Hessian of one linear layer's input. One H per distinct input is the caller's business. */
export interface HessianAccumulator {
  cols: number;
  /** (cols, cols) the running value */
  H: Float64Array;
  /** Sequences (or tokens, when perToken) seen so far. */
  nsamples: number;
  perToken: boolean;
}

/**
 * An empty accumulator. Default: add_batch's running mean over sequences, H = (2/N_seq)·Σ x xᵀ.
 * With perToken: H = (2/N_tokens)·Σ x xᵀ (recommended for f32 headroom, §1.1; the scale of H cancels out).
 * @param cols in_features of the layer
 * @param options `perToken` to normalise by tokens instead of sequences
 * @returns a zero accumulator
 */
export function createHessian(
  cols: number,
  { perToken = false }: { perToken?: boolean } = {},
): HessianAccumulator {
  return { cols, H: new Float64Array(cols * cols), nsamples: 0, perToken };
}

/**
 * add_batch for one sequence: H ← H·n/(n+m); n ← n+m; H ← H + (2/n)·X Xᵀ, where m = 1 (per sequence) or the
 * token count (per token).
 * @param acc the accumulator, updated in place
 * @param X (tokens, cols) the layer input of one sequence, as a forward hook receives it
 */
export function addBatch(acc: HessianAccumulator, X: ArrayLike<number>): void {
  const { cols, H } = acc;
  const tokens = X.length / cols;
  const m = acc.perToken ? tokens : 1;
  const shrink = acc.nsamples / (acc.nsamples + m);
  acc.nsamples += m;
  const scale = 2 / acc.nsamples;
  for (let i = 0; i < cols * cols; i++) H[i] *= shrink;
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < cols; i++) {
      const xi = X[t * cols + i] * scale;
      for (let j = 0; j < cols; j++) H[i * cols + j] += xi * X[t * cols + j];
    }
  }
}

/** Options of {@link prepareLayer}. */
export interface PrepareOptions extends DampOptions {
  /** Quantize columns in order of decreasing diag(H). */
  actOrder?: boolean;
}

/** W and H after fasterquant's prologue, in the permuted column order. */
export interface PreparedLayer {
  rows: number;
  cols: number;
  /** (rows, cols) permuted copy, dead columns zeroed */
  W: Float64Array;
  /** (cols, cols) permuted, dead-fixed, damped */
  H: Float64Array;
  /** (cols, cols) the upper Cholesky factor U of H⁻¹ (gptq.py's name; not the inverse) */
  Hinv: Float64Array;
  /** (cols) perm[k] = original column quantized k-th; invperm[c] = rank of original column c */
  perm: Int32Array;
  invperm: Int32Array;
  /** (cols) 1 for original columns with H_cc == 0 */
  dead: Uint8Array;
  dampUsed: number;
  percdampUsed: number;
}

/**
 * fasterquant's prologue (§1.2 steps 3, 6–8): dead columns (H_ii = 0 → H_ii = 1, W[:, i] = 0), act-order
 * permutation (stable argsort of diag H, descending), damping λ = percdamp·mean(diag H) with retries, and U.
 * @param W (rows, cols) not modified
 * @param H (cols, cols) not modified
 * @returns the prepared, permuted copies
 */
export function prepareLayer(
  W: ArrayLike<number>,
  H: ArrayLike<number>,
  { actOrder = false, ...damp }: PrepareOptions = {},
): PreparedLayer {
  const cols = Math.round(Math.sqrt(H.length));
  const rows = W.length / cols;
  if (cols * cols !== H.length || !Number.isInteger(rows)) {
    throw new Error(
      `Cannot quantize: W has ${W.length} values and H ${H.length}, expected (rows, C) and (C, C)`,
    );
  }
  const W0 = Float64Array.from(W);
  const H0 = Float64Array.from(H);
  const dead = new Uint8Array(cols);
  for (let i = 0; i < cols; i++) {
    if (H0[i * cols + i] !== 0) continue;
    dead[i] = 1;
    H0[i * cols + i] = 1;
    for (let r = 0; r < rows; r++) W0[r * cols + i] = 0;
  }
  const diag = Float64Array.from({ length: cols }, (_, i) => H0[i * cols + i]);
  const perm = actOrder ? argsortDesc(diag) : Int32Array.from({ length: cols }, (_, i) => i);
  const invperm = new Int32Array(cols);
  perm.forEach((c, k) => invperm[c] = k);
  const Wp = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) Wp[r * cols + k] = W0[r * cols + perm[k]];
  const f = dampAndFactor(permuteSymmetric(H0, perm), cols, damp);
  return {
    rows,
    cols,
    W: Wp,
    H: f.H,
    Hinv: f.Hinv,
    perm,
    invperm,
    dead,
    dampUsed: f.dampUsed,
    percdampUsed: f.percdampUsed,
  };
}
