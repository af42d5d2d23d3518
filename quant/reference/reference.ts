/**
 * The quantizer's f64 reference: the spec in code for `quant/` and its GPU kernels (docs/quantization.md §1–2).
 * A port of gptq.py `GPTQ.add_batch` / `fasterquant` (IST-DASLab/gptq 2d65066) and of its LeanQuant fork
 * (`lean_quantizer.py`, LeanModels/LeanQuant bc8c8ee), keeping their names and loop shape:
 *
 *   GPTQ Algorithm 1 (Frantar et al. 2022)      here
 *   H = 2XXᵀ                                      addBatch (reference_hessian.ts; running mean)
 *   H ← H + λI; Hinv ← Cholesky(H⁻¹)ᵀ             prepareLayer → dampAndFactor: `Hinv` holds the UPPER
 *                                                 Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), NOT the inverse
 *   for i = 0, B, 2B, …                           the i1/i2 block loop, B = blockSize (128)
 *     for j = i … i+B−1:                          the inner loop over column i of the block (k = i1 + i)
 *       Q[:,j] ← quant(W[:,j])                    q = grid value of the error-updated w = W1[:, i]
 *       E[:,j−i] ← (W[:,j] − Q[:,j]) / [Hinv]_jj  err1 = (w − q)/d, d = Hinv[k][k]; Err1[:, i] = err1
 *       W[:,j:i+B] −= E[:,j−i]·Hinv_{j,j:i+B}     intra-block update of W1
 *     W[:,i+B:] −= E·Hinv_{i:i+B,i+B:}            inter-block (lazy batch) update of W
 *
 * LeanQuant's grid step (Zhang & Shrivastava, ICLR 2025, arXiv 2407.10032) replaces min-max `find_params`:
 * importance a_k = U_kk^(−p) (one per permuted column, shared by rows); "nu" fits a per-row weighted k-means
 * LUT on the original permuted W before the loop (rounded to f16 first); "aff" searches (scale, zero) per row
 * before the loop, or per group at k % g == 0 inside it (on error-updated W, where gptq.py calls find_params).
 * "gptq" is the plain min-max grid with error feedback, "rtn" the same grid without it.
 * Files: reference_linalg.ts (Cholesky, inverses, U two ways), reference_grid.ts (rounding, min-max,
 * k-means, affine search), reference_hessian.ts (add_batch, prologue), this file (the loop); all re-exported.
 */
import { type DampOptions, matmul } from "./reference_linalg.ts";
import { type PreparedLayer, prepareLayer, type PrepareOptions } from "./reference_hessian.ts";
import {
  affineCode,
  type AffineParams,
  affSearch,
  affSearchFast,
  defaultAffSteps,
  importanceWeights,
  minMaxParams,
  nearestCode,
  roundToF16,
  weightedKMeans,
} from "./reference_grid.ts";

/** Options of {@link gptqReference}. */
export interface GptqOptions extends PrepareOptions {
  bits: number;
  /** "rtn": min-max, no error feedback; "gptq": min-max; "nu": LeanQuant k-means LUT; "aff": LeanQuant affine. */
  grid: "rtn" | "gptq" | "nu" | "aff";
  /** Columns per affine group; ≤ 0 means one grid per row. Ignored by "nu". */
  groupSize?: number;
  /** Lazy-batch block width B. */
  blockSize?: number;
  /** p in a_k = U_kk^(−p). */
  exponent?: number;
  /** Groups fixed before the loop on original-order columns (gptq.py --static-groups). */
  staticGroups?: boolean;
  /** Symmetric min-max ("rtn", "gptq" only). */
  sym?: boolean;
  /** Affine search range steps T and steps per end t (§2.3); small values keep f64 tests fast. */
  affT?: number;
  affSteps?: number;
  /** Affine search evaluator: "fast" (prefix sums) or "brute" (the definition); same argmin. */
  affImpl?: "fast" | "brute";
  kmeansMaxIter?: number;
}

/** Output of {@link gptqReference}; everything indexed by column is in ORIGINAL column order. */
export interface GptqResult {
  /** (rows, cols) codes in [0, 2^bits) */
  codes: Uint8Array;
  /** (rows, cols) dequantized weights */
  Q: Float64Array;
  /** Σ (w − q)²/d²/2 over all weights, as the reference prints it */
  loss: number;
  dampUsed: number;
  percdampUsed: number;
  /** (cols) the quantization order */
  perm: Int32Array;
  /** nu: (rows, 2^bits) f16-representable LUT; q = lut[r][code] */
  lut?: Float64Array;
  /** affine grids: (rows, nGroups) scale and zero; q = scale·(code − zero) */
  scale?: Float64Array;
  zero?: Float64Array;
  /** affine grids: (cols) group of each original column (rank_of_c_in_perm // g unless static) */
  gIdx?: Int32Array;
}

/**
 * Quantizes one linear layer with GPTQ's blocked error-feedback loop and the chosen grid.
 * @param weight (rows, cols) W, y = W x; not modified
 * @param hessian (cols, cols) H of the layer input; not modified
 * @param options bits, grid and the fasterquant knobs
 * @returns codes, Q, loss and the grid parameters
 * @example
 * ```ts
 * import { gptqReference } from "./reference.ts";
 * const W = Float64Array.from({ length: 8 }, (_, i) => Math.sin(i));
 * const H = Float64Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 2 : 0.1));
 * const { codes } = gptqReference(W, H, { bits: 2, grid: "gptq" });
 * console.assert(codes.length === 8);
 * ```
 */
export function gptqReference(
  weight: ArrayLike<number>,
  hessian: ArrayLike<number>,
  options: GptqOptions,
): GptqResult {
  const { bits, grid, blockSize = 128, exponent = 4, actOrder = false, ...rest } = options;
  if (!Number.isInteger(bits) || bits < 1 || bits > 8 || !(blockSize >= 1)) {
    throw new Error(`Cannot quantize with bits ${bits} and blockSize ${blockSize}: expected 1..8 and ≥ 1`);
  }
  // Step 1: dead columns, act-order, damping, Hinv = U (fasterquant's prologue).
  const prep = prepareLayer(weight, hessian, { ...dampOptions(rest), actOrder });
  const { rows, cols, perm, Hinv, W } = prep;
  const a = importanceWeights(Hinv, cols, exponent);
  // Step 2: grids fixed before the loop (nu LUT; row-wise or static-group affine parameters).
  const grids = initGrids(weight, prep, a, options);
  const { lut, scale, zero, g, nGroups } = grids;
  const K = 2 ** bits;
  const maxq = K - 1;
  const feedback = grid !== "rtn";
  const codesP = new Uint8Array(rows * cols);
  const QP = new Float64Array(rows * cols);
  let loss = 0;
  // Step 3: the blocked column loop.
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols);
    const count = i2 - i1;
    const W1 = new Float64Array(rows * count);
    for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) W1[r * count + i] = W[r * cols + i1 + i];
    const Q1 = new Float64Array(rows * count);
    const Err1 = new Float64Array(rows * count);
    for (let i = 0; i < count; i++) {
      const k = i1 + i;
      const d = Hinv[k * cols + k];
      // Dynamic groups re-fit on W (not W1): updated by earlier blocks only, exactly as gptq.py reads it.
      if (g > 0 && !grids.staticGroups && k % g === 0) grids.fitGroup(W, k);
      const gi = g <= 0 ? 0 : grids.staticGroups ? Math.floor(perm[k] / g) : Math.floor(k / g);
      for (let r = 0; r < rows; r++) {
        const w = W1[r * count + i];
        let code: number, q: number;
        if (lut) {
          code = nearestCode(lut.subarray(r * K, r * K + K), w);
          q = lut[r * K + code];
        } else {
          const p = { scale: scale![r * nGroups + gi], zero: zero![r * nGroups + gi] };
          code = affineCode(w, p, maxq);
          q = p.scale * (code - p.zero);
        }
        codesP[r * cols + k] = code;
        Q1[r * count + i] = q;
        const err1 = (w - q) / d;
        loss += err1 * err1 / 2;
        Err1[r * count + i] = err1;
        if (!feedback) continue;
        for (let j = i; j < count; j++) W1[r * count + j] -= err1 * Hinv[k * cols + i1 + j];
      }
    }
    for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) QP[r * cols + i1 + i] = Q1[r * count + i];
    if (!feedback) continue;
    // Lazy batch update: W[:, i2:] −= Err1 · Hinv[i1:i2, i2:].
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < count; i++) {
        const e = Err1[r * count + i];
        for (let j = i2; j < cols; j++) W[r * cols + j] -= e * Hinv[(i1 + i) * cols + j];
      }
    }
  }
  // Step 4: un-permute codes and Q to the original column order.
  const codes = new Uint8Array(rows * cols);
  const Q = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      codes[r * cols + perm[k]] = codesP[r * cols + k];
      Q[r * cols + perm[k]] = QP[r * cols + k];
    }
  }
  const out: GptqResult = { codes, Q, loss, dampUsed: prep.dampUsed, percdampUsed: prep.percdampUsed, perm };
  if (lut) out.lut = lut;
  if (scale && zero) Object.assign(out, { scale, zero, gIdx: grids.gIdx });
  return out;
}

/** Picks the damping options out of the gptq options (exactOptionalPropertyTypes forbids undefined). */
function dampOptions(o: DampOptions): DampOptions {
  const d: DampOptions = {};
  if (o.percdamp !== undefined) d.percdamp = o.percdamp;
  if (o.factor !== undefined) d.factor = o.factor;
  if (o.maxRetries !== undefined) d.maxRetries = o.maxRetries;
  if (o.onRetry !== undefined) d.onRetry = o.onRetry;
  return d;
}

/** Grid state of one layer: a LUT (nu) or per-(row, group) affine parameters, and the group re-fit. */
interface Grids {
  lut?: Float64Array;
  scale?: Float64Array;
  zero?: Float64Array;
  gIdx: Int32Array;
  /** group size, ≤ 0 for row-wise */
  g: number;
  nGroups: number;
  staticGroups: boolean;
  /** Fits the dynamic group starting at permuted column k on the current W. */
  fitGroup: (W: Float64Array, k: number) => void;
}

/** Builds the grids that are fixed before the loop and the closure that re-fits dynamic groups. */
function initGrids(weight: ArrayLike<number>, prep: PreparedLayer, a: Float64Array, o: GptqOptions): Grids {
  const { rows, cols, perm, invperm, W } = prep;
  const { bits, grid, sym = false, affT = 2048, affImpl = "fast", kmeansMaxIter = 100 } = o;
  const affSteps = o.affSteps ?? defaultAffSteps(bits, affT);
  const g = grid === "nu" ? 0 : (o.groupSize ?? -1);
  const staticGroups = g > 0 && (o.staticGroups ?? false);
  const nGroups = g > 0 ? Math.ceil(cols / g) : 1;
  const gIdx = Int32Array.from(
    { length: cols },
    (_, c) => (g <= 0 ? 0 : staticGroups ? c : invperm[c]) / g | 0,
  );
  const noFit = () => {};
  if (grid === "nu") {
    return { lut: nuLut(prep, a, bits, kmeansMaxIter), gIdx, g, nGroups, staticGroups, fitGroup: noFit };
  }
  const search = affImpl === "fast" ? affSearchFast : affSearch;
  const fit = (x: Float64Array, aSet: ArrayLike<number>): AffineParams =>
    grid === "aff" ? search(x, aSet, { bits, T: affT, t: affSteps }) : minMaxParams(x, { bits, sym });
  const scale = new Float64Array(rows * nGroups);
  const zero = new Float64Array(rows * nGroups);
  const store = (r: number, gi: number, p: AffineParams) => {
    scale[r * nGroups + gi] = p.scale;
    zero[r * nGroups + gi] = p.zero;
  };
  const row = (M: ArrayLike<number>, r: number, c0: number, c1: number) =>
    Float64Array.from({ length: c1 - c0 }, (_, i) => M[r * cols + c0 + i]);
  if (g <= 0) {
    // Min-max: find_params on the raw W, before the dead-column fix (as fasterquant orders it).
    // aff: after the Cholesky, on the permuted, dead-zeroed W, where the weights live.
    for (let r = 0; r < rows; r++) store(r, 0, fit(row(grid === "aff" ? W : weight, r, 0, cols), a));
    return { scale, zero, gIdx, g, nGroups, staticGroups, fitGroup: noFit };
  }
  if (staticGroups) {
    // Original column order, original (dead-zeroed) W; column c's importance is a[invperm[c]].
    const aOrig = Float64Array.from({ length: cols }, (_, c) => a[invperm[c]]);
    const W0 = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) W0[r * cols + perm[k]] = W[r * cols + k];
    for (let gi = 0; gi < nGroups; gi++) {
      const c1 = Math.min((gi + 1) * g, cols);
      for (let r = 0; r < rows; r++) store(r, gi, fit(row(W0, r, gi * g, c1), aOrig.subarray(gi * g, c1)));
    }
    return { scale, zero, gIdx, g, nGroups, staticGroups, fitGroup: noFit };
  }
  const fitGroup = (Wcur: Float64Array, k: number) => {
    const c1 = Math.min(k + g, cols);
    for (let r = 0; r < rows; r++) store(r, k / g, fit(row(Wcur, r, k, c1), a.subarray(k, c1)));
  };
  return { scale, zero, gIdx, g, nGroups, staticGroups, fitGroup };
}

/** One LUT per row: weighted k-means of the original permuted W, rounded to f16 before the loop (§6 item 11). */
function nuLut(prep: PreparedLayer, a: Float64Array, bits: number, maxIter: number): Float64Array {
  const { rows, cols, W } = prep;
  const K = 2 ** bits;
  const lut = new Float64Array(rows * K);
  for (let r = 0; r < rows; r++) {
    const { centers } = weightedKMeans(W.subarray(r * cols, (r + 1) * cols), a, { k: K, maxIter });
    for (let j = 0; j < K; j++) lut[r * K + j] = roundToF16(centers[j]);
  }
  return lut;
}

/**
 * ||W X − Q X||²: the layer-output error GPTQ minimises (up to the scale of H).
 * @param W (rows, cols) original weights
 * @param Q (rows, cols) quantized weights
 * @param options `X` (cols, tokens) inputs as columns, and `cols`
 * @returns the squared Frobenius norm of the output difference
 */
export function layerOutputError(
  W: ArrayLike<number>,
  Q: ArrayLike<number>,
  { X, cols }: { X: ArrayLike<number>; cols: number },
): number {
  const rows = W.length / cols;
  const tokens = X.length / cols;
  const D = Float64Array.from({ length: W.length }, (_, i) => W[i] - Q[i]);
  const Y = matmul(D, X, { m: rows, k: cols, n: tokens });
  return Y.reduce((s, v) => s + v * v, 0);
}
