/**
 * LeanQuant-Exact (docs/quantization.md §2.5, paper Algorithm 2; [RECONSTRUCTED]): OBQ's greedy per-row loop with a
 * LeanQuant grid, for small networks (millions of parameters, C up to a few hundred). f64, plain TypeScript.
 *
 * For each row independently, with F the columns not yet quantized and H_F⁻¹ the inverse of H[F, F]:
 *   1. pick q = argmin_{q∈F} ε_q = (quant(w_q) − w_q)² / [H_F⁻¹]_qq      (ties: lowest column index)
 *   2. w_F −= (w_q − quant(w_q)) / [H_F⁻¹]_qq · (H_F⁻¹)_{:,q}            (OBQ's optimal compensation)
 *   3. H_F⁻¹ ← H_F⁻¹ − (H_F⁻¹)_{:,q} (H_F⁻¹)_{q,:} / [H_F⁻¹]_qq          (= inv(H[F∖q, F∖q]))
 * The cost is O(R·C³): each row needs its own copy of H⁻¹ because the order differs per row.
 *
 * The grid is fixed before the loop, per row, on the original (dead-zeroed) W, as LeanQuant_nu fits it.
 * The greedy order is unknown in advance, so the importance uses the diagonal of the FULL inverse:
 * a_k = ([H⁻¹]_kk)^(−p/2). With p = 4 this is ([H⁻¹]_kk)^(−2), the same scale convention as the GPTQ path's
 * a_k = U_kk^(−p) = ([H_{F_k}⁻¹]_kk)^(−p/2), and identical to it for whichever column would be quantized first.
 */
import { inverseSpd } from "./reference_linalg.ts";
import { prepareLayer } from "./reference_hessian.ts";
import {
  affineCode,
  affSearchFast,
  defaultAffSteps,
  nearestCode,
  roundToF16,
  weightedKMeans,
} from "./reference_grid.ts";
import type { GptqResult } from "./reference.ts";

/** Options of {@link exactReference}. */
export interface ExactOptions {
  bits: number;
  /** "nu": weighted k-means LUT per row (f16-rounded); "aff": row-wise LeanQuant affine search. */
  grid: "nu" | "aff";
  /** λ = percdamp · mean(diag H) (default 0.01), retried ×10 on a Cholesky failure like gptqReference. */
  percdamp?: number;
  /** p in a_k = ([H⁻¹]_kk)^(−p/2) (default 4). */
  exponent?: number;
  /** Affine search range steps T and steps per end t (§2.3). */
  affT?: number;
  affSteps?: number;
  kmeansMaxIter?: number;
  /** Receives damping-retry lines (default console.warn). */
  onRetry?: (message: string) => void;
}

/**
 * LeanQuant importance from the full inverse: a_k = ([H⁻¹]_kk)^(−p/2) / max_k, shared by all rows.
 * @param Hinv (n, n) the full inverse of the damped H (not a Cholesky factor)
 * @param n order
 * @param exponent p (4 gives ([H⁻¹]_kk)^(−2), matching importanceWeights' U_kk^(−4) on the first column)
 * @returns a (n), max 1
 */
export function fullInverseImportance(Hinv: ArrayLike<number>, n: number, exponent = 4): Float64Array {
  const a = Float64Array.from({ length: n }, (_, k) => Hinv[k * n + k] ** (-exponent / 2));
  const max = a.reduce((m, v) => Math.max(m, v), 0);
  return a.map((v) => v / max);
}

/**
 * OBQ's elimination of column q from the inverse of the remaining columns, in place:
 * Hinv[i][j] −= Hinv[i][q]·Hinv[q][j]/Hinv[q][q] for i, j in `alive` (q must already be removed from it).
 * Row and column q are left as they were; only the alive block is meaningful afterwards.
 * @param Hinv (n, n) holds inv(H[F, F]) on F = alive ∪ {q}; holds inv(H[alive, alive]) afterwards
 * @param n order
 * @param q the eliminated column
 * @param alive the remaining columns, without q
 */
export function eliminateColumn(Hinv: Float64Array, n: number, q: number, alive: ArrayLike<number>): void {
  const d = Hinv[q * n + q];
  for (let ii = 0; ii < alive.length; ii++) {
    const i = alive[ii];
    const f = Hinv[i * n + q] / d;
    if (f === 0) continue;
    for (let jj = 0; jj < alive.length; jj++) {
      const j = alive[jj];
      Hinv[i * n + j] -= f * Hinv[q * n + j];
    }
  }
}

/** One row's greedy result: codes and Q in column order, the order itself and Σ ε/2. */
interface RowResult {
  codes: Uint8Array;
  Q: Float64Array;
  order: Int32Array;
  loss: number;
}

/**
 * The greedy OBQ loop over one row (steps 1–3 of the header).
 * @param w (n) the row, updated in place
 * @param Hinv (n, n) a private copy of the full inverse, destroyed
 * @param quantize code and value of a weight on this row's grid
 */
function greedyRow(
  w: Float64Array,
  Hinv: Float64Array,
  quantize: (v: number) => { code: number; q: number },
): RowResult {
  const n = w.length;
  const codes = new Uint8Array(n), Q = new Float64Array(n), order = new Int32Array(n);
  let alive = Int32Array.from({ length: n }, (_, i) => i);
  let loss = 0;
  for (let step = 0; step < n; step++) {
    // Step 1: smallest ε; alive stays ascending, so strict < keeps the lowest index on ties.
    let best = -1, bestEps = Infinity, bestCode = 0, bestQ = 0;
    for (const j of alive) {
      const { code, q } = quantize(w[j]);
      const eps = (q - w[j]) ** 2 / Hinv[j * n + j];
      if (eps < bestEps || best < 0) [best, bestEps, bestCode, bestQ] = [j, eps, code, q];
    }
    codes[best] = bestCode;
    Q[best] = bestQ;
    order[step] = best;
    loss += bestEps / 2;
    alive = alive.filter((j) => j !== best);
    // Step 2: compensate the remaining weights with column `best` of the current inverse.
    const e = (w[best] - bestQ) / Hinv[best * n + best];
    for (const j of alive) w[j] -= e * Hinv[j * n + best];
    w[best] = bestQ;
    // Step 3: drop `best` from the inverse.
    eliminateColumn(Hinv, n, best, alive);
  }
  return { codes, Q, order, loss };
}

/** The per-row grids being filled: a LUT (rows, K) for nu, or scale/zero (rows) for row-wise aff. */
interface RowGrids {
  lut?: Float64Array;
  scale?: Float64Array;
  zero?: Float64Array;
}

/**
 * Fits row r's grid on its original values and stores it in `grids` (nu: weighted k-means rounded to f16
 * before the loop, as LeanQuant_nu does; aff: affSearchFast with the same importances).
 * @returns code and dequantized value of a weight on that grid (nearest centroid, first index on ties)
 */
function fitRowGrid(
  grids: RowGrids,
  r: number,
  w: Float64Array,
  a: Float64Array,
  o: { bits: number; affT: number; affSteps: number; kmeansMaxIter: number },
): (v: number) => { code: number; q: number } {
  const K = 2 ** o.bits;
  if (grids.lut) {
    const { centers } = weightedKMeans(w, a, { k: K, maxIter: o.kmeansMaxIter });
    const row = grids.lut.subarray(r * K, (r + 1) * K);
    centers.forEach((c, j) => row[j] = roundToF16(c));
    return (v) => {
      const code = nearestCode(row, v);
      return { code, q: row[code] };
    };
  }
  const p = affSearchFast(w, a, { bits: o.bits, T: o.affT, t: o.affSteps });
  grids.scale![r] = p.scale;
  grids.zero![r] = p.zero;
  return (v) => {
    const code = affineCode(v, p, K - 1);
    return { code, q: p.scale * (code - p.zero) };
  };
}

/**
 * Quantizes one linear layer with LeanQuant-Exact: per-row greedy OBQ on a LeanQuant grid.
 * @param weight (rows, cols) W, y = W x; not modified
 * @param hessian (cols, cols) H of the layer input; not modified. Dead columns (H_cc = 0) are handled as in
 *   `prepareLayer`: H_cc = 1 and W[:, c] = 0.
 * @param options bits, grid and damping
 * @returns the `gptqReference` shape: codes and Q in original column order, loss = Σ ε/2 over all weights,
 *   perm = the greedy order of row 0 (each row has its own order), and a LUT (nu) or row-wise scale/zero with
 *   gIdx all 0 (aff)
 * @example
 * ```ts
 * import { exactReference } from "./reference_exact.ts";
 * const W = Float64Array.from({ length: 8 }, (_, i) => Math.sin(i));
 * const H = Float64Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? 2 : 0.1));
 * const { codes } = exactReference(W, H, { bits: 2, grid: "nu" });
 * console.assert(codes.length === 8);
 * ```
 */
export function exactReference(
  weight: ArrayLike<number>,
  hessian: ArrayLike<number>,
  options: ExactOptions,
): GptqResult {
  const { bits, grid, exponent = 4, affT = 2048, kmeansMaxIter = 100 } = options;
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new Error(`Cannot quantize with bits ${bits}: expected 1..8`);
  }
  if (grid !== "nu" && grid !== "aff") throw new Error(`Cannot quantize exactly with grid "${grid}"`);
  const damp: { percdamp?: number; onRetry?: (m: string) => void } = {};
  if (options.percdamp !== undefined) damp.percdamp = options.percdamp;
  if (options.onRetry !== undefined) damp.onRetry = options.onRetry;
  // No act-order: the greedy loop picks its own order, so perm is the identity here.
  const prep = prepareLayer(weight, hessian, damp);
  const { rows, cols, W } = prep;
  const Hinv = inverseSpd(prep.H, cols);
  if (!Hinv) throw new Error("Cannot invert the damped Hessian: its Cholesky failed");
  const a = fullInverseImportance(Hinv, cols, exponent);
  const K = 2 ** bits;
  const affSteps = options.affSteps ?? defaultAffSteps(bits, affT);
  const grids: RowGrids = grid === "nu"
    ? { lut: new Float64Array(rows * K) }
    : { scale: new Float64Array(rows), zero: new Float64Array(rows) };
  const codes = new Uint8Array(rows * cols);
  const Q = new Float64Array(rows * cols);
  let loss = 0;
  let perm: Int32Array = Int32Array.from({ length: cols }, (_, i) => i);
  for (let r = 0; r < rows; r++) {
    const w = W.slice(r * cols, (r + 1) * cols);
    const quantize = fitRowGrid(grids, r, w, a, { bits, affT, affSteps, kmeansMaxIter });
    const res = greedyRow(w, Hinv.slice(), quantize);
    codes.set(res.codes, r * cols);
    Q.set(res.Q, r * cols);
    loss += res.loss;
    if (r === 0) perm = res.order;
  }
  const out: GptqResult = { codes, Q, loss, dampUsed: prep.dampUsed, percdampUsed: prep.percdampUsed, perm };
  if (grids.lut) out.lut = grids.lut;
  else Object.assign(out, { scale: grids.scale, zero: grids.zero, gIdx: new Int32Array(cols) });
  return out;
}
