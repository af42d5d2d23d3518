/**
 * f64 quantization grids for the quantizer reference (docs/quantization.md §1.4, §2.1–2.3):
 *  - `minMaxParams` / `affineCode`: GPTQ's quant.py min-max affine grid (range always includes 0, torch's
 *    round-half-to-even);
 *  - `weightedKMeans`: LeanQuant_nu's per-row weighted 1-D Lloyd with a linspace(min, max) init;
 *  - `affSearch` / `affSearchFast`: LeanQuant_aff's loss-error-aware enumerative (min, max) search
 *    ([RECONSTRUCTED] in the spec), by brute force (the definition) and by sorted prefix sums (exact, faster).
 * The importance of column k is a_k = U_kk^(−p), U the upper Cholesky factor of the damped, permuted H⁻¹,
 * normalised by its maximum (§2.1: this is the code's weight, not diag(H⁻¹)^(−p)).
 */

/**
 * Round to nearest, ties to even (torch.round and WGSL round). JS Math.round rounds ties up.
 * @param x any finite number
 * @returns the nearest integer, the even one on a tie
 */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Rounds an f64 to the nearest IEEE binary16 value (ties to even) and returns it as f64: the value an f16
 * LUT will hold at inference. Overflow gives ±Infinity; subnormals are kept.
 * @param x any number
 * @returns x rounded to f16 precision and range
 */
export function roundToF16(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 can be off by one next to powers of two
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10); // 10 mantissa bits; subnormal spacing is 2^-24
  const q = roundHalfEven(a / ulp) * ulp;
  return Math.sign(x) * (q > 65504 ? Infinity : q);
}

/** One affine grid: Q(x) = scale · (clamp(round(x/scale) + zero, 0, maxq) − zero). */
export interface AffineParams {
  scale: number;
  zero: number;
}

/**
 * Min-max parameters of quant.py `find_params` for one row or group: xmin = min(min x, 0),
 * xmax = max(max x, 0); sym widens to ±max|x| when x has negatives; an all-zero set uses [−1, 1].
 * @param x (n) the weights of the set
 * @returns scale and zero (zero = (maxq+1)/2 when sym)
 */
export function minMaxParams(
  x: ArrayLike<number>,
  { bits, sym = false }: { bits: number; sym?: boolean },
): AffineParams {
  const maxq = 2 ** bits - 1;
  let xmin = 0;
  let xmax = 0;
  for (let c = 0; c < x.length; c++) {
    if (x[c] < xmin) xmin = x[c];
    if (x[c] > xmax) xmax = x[c];
  }
  if (sym) {
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) [xmin, xmax] = [-1, 1];
  const scale = (xmax - xmin) / maxq;
  const zero = sym ? (maxq + 1) / 2 : roundHalfEven(-xmin / scale) + 0; // + 0 turns −0 into 0
  return { scale, zero };
}

/**
 * The integer code of x on an affine grid: clamp(round(x/scale) + zero, 0, maxq).
 * @param x the (error-updated) weight
 * @param p the grid
 * @param maxq 2^bits − 1
 * @returns the code in [0, maxq]
 */
export function affineCode(x: number, p: AffineParams, maxq: number): number {
  return Math.min(Math.max(roundHalfEven(x / p.scale) + p.zero, 0), maxq);
}

/**
 * LeanQuant importance a_k = U_kk^(−p) / max_k U_kk^(−p), one value per (permuted) column, shared by rows.
 * @param Hinv (n, n) the upper Cholesky factor U of H⁻¹
 * @param n order
 * @param exponent p (the paper and our default: 4)
 * @returns a (n), max 1
 */
export function importanceWeights(Hinv: ArrayLike<number>, n: number, exponent = 4): Float64Array {
  const a = new Float64Array(n);
  let max = 0;
  for (let k = 0; k < n; k++) {
    a[k] = Hinv[k * n + k] ** -exponent;
    if (a[k] > max) max = a[k];
  }
  for (let k = 0; k < n; k++) a[k] /= max;
  return a;
}

/**
 * Index of the LUT entry nearest to w; the first index wins ties (torch.argmin).
 * @param lut (K) one row's centroids
 * @param w the weight to code
 * @returns the code in [0, K)
 */
export function nearestCode(lut: ArrayLike<number>, w: number): number {
  let best = 0;
  let bestDist = Math.abs(lut[0] - w);
  for (let k = 1; k < lut.length; k++) {
    const dist = Math.abs(lut[k] - w);
    if (dist < bestDist) [best, bestDist] = [k, dist];
  }
  return best;
}

/**
 * Σ a_c (Q(x_c) − x_c)², the objective both LeanQuant grids minimise.
 * @param x (n) the set
 * @param a (n) importances
 * @param quantize the grid's dequantized value of a weight
 * @returns the weighted squared error
 */
export function weightedGridError(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  quantize: (v: number) => number,
): number {
  let e = 0;
  for (let c = 0; c < x.length; c++) e += a[c] * (quantize(x[c]) - x[c]) ** 2;
  return e;
}

/**
 * Weighted 1-D Lloyd k-means (LeanQuant_nu, §2.2), sklearn-like: init linspace(min, max, k) for every bit
 * width (the spec's choice; the released code uses k-means++ at 4 bits); stop on unchanged labels or when
 * Σ centre shift² ≤ tolFactor · var(x) (unweighted population variance). Clusters with zero total weight
 * are relocated as sklearn's `_relocate_empty_clusters_dense` does: in index order, each takes the point
 * farthest from the centre that labelled it (ties to the lower index) and that point's weight leaves its
 * old cluster; nothing moves when every point sits on its centre. A cluster left with zero weight keeps
 * its centre (sklearn's would fall to the data mean; a degenerate case). The result is sorted ascending.
 * @param x (n) values of one row
 * @param a (n) non-negative weights
 * @returns centres (k), ascending, and the iterations run
 */
export function weightedKMeans(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  { k, maxIter = 100, tolFactor = 1e-6 }: { k: number; maxIter?: number; tolFactor?: number },
): { centers: Float64Array; iterations: number } {
  const n = x.length;
  let min = Infinity, max = -Infinity, mean = 0;
  for (let c = 0; c < n; c++) [min, max, mean] = [Math.min(min, x[c]), Math.max(max, x[c]), mean + x[c]];
  mean /= n;
  let variance = 0;
  for (let c = 0; c < n; c++) variance += (x[c] - mean) ** 2;
  const tol = tolFactor * variance / n;
  // numpy linspace: start + i·step, with the last point exactly `max`.
  const centers = Float64Array.from(
    { length: k },
    (_, i) => i === k - 1 ? max : min + i * (max - min) / (k - 1),
  );
  let labels = new Int32Array(n).fill(-1);
  let iterations = 0;
  while (iterations < maxIter) {
    iterations++;
    const next = new Int32Array(n);
    const wsum = new Float64Array(k), xsum = new Float64Array(k);
    for (let c = 0; c < n; c++) {
      const l = nearestCode(centers, x[c]);
      next[c] = l;
      wsum[l] += a[c];
      xsum[l] += a[c] * x[c];
    }
    const moveTo = relocateEmpty(x, a, centers, next, wsum, xsum);
    let shift = 0;
    for (let j = 0; j < k; j++) {
      const moved = moveTo.get(j) ?? (wsum[j] > 0 ? xsum[j] / wsum[j] : centers[j]);
      shift += (moved - centers[j]) ** 2;
      centers[j] = moved;
    }
    const same = next.every((l, c) => l === labels[c]);
    labels = next;
    if (same || shift <= tol) break;
  }
  return { centers: centers.sort(), iterations };
}

/** sklearn's empty-cluster relocation on one iteration's sums (updated in place); returns the new centres. */
function relocateEmpty(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  centers: Float64Array,
  labels: Int32Array,
  wsum: Float64Array,
  xsum: Float64Array,
): Map<number, number> {
  const moveTo = new Map<number, number>();
  const empty = [...wsum.keys()].filter((j) => wsum[j] === 0);
  if (empty.length === 0) return moveTo;
  const dist = Float64Array.from({ length: x.length }, (_, c) => (x[c] - centers[labels[c]]) ** 2);
  const far = [...dist.keys()].sort((p, q) => dist[q] - dist[p] || p - q);
  if (dist[far[0]] <= 0) return moveTo;
  // A row with fewer points than clusters relocates one cluster per point (sklearn refuses such rows).
  empty.slice(0, x.length).forEach((j, e) => {
    const f = far[e];
    wsum[labels[f]] -= a[f];
    xsum[labels[f]] -= a[f] * x[f];
    wsum[j] = a[f];
    moveTo.set(j, x[f]);
  });
  return moveTo;
}

/** The affine search's result: the grid, the winning shrink steps (i, j) and its objective. */
export interface AffSearchResult extends AffineParams {
  i: number;
  j: number;
  err: number;
}

/** Options of the affine search: T range steps, t steps tried per end (default by bits, §2.3). */
export interface AffSearchOptions {
  bits: number;
  T?: number;
  t?: number;
}

/**
 * Steps tried per end of the range: t = 0.2T / 0.3T / 0.4T for 4 / 3 / 2 bits.
 * @param bits grid bits
 * @param T range steps
 * @returns t (T = 2048 gives 410 / 614 / 819)
 */
export function defaultAffSteps(bits: number, T = 2048): number {
  const frac = bits >= 4 ? 0.2 : bits === 3 ? 0.3 : 0.4;
  return Math.max(1, Math.round(frac * T));
}

/**
 * The candidate grid (i, j): lo' = lo + iΔ, hi' = hi − jΔ, s = (hi' − lo')/maxq, z = clamp(round(−lo'/s)).
 * s is formed from i + j only, so candidates that describe the same grid score bit-identically in both
 * evaluators and the smallest-(i, j) tie-break is exact; (0, 0) reproduces `minMaxParams` bit for bit.
 */
function affCandidate(range: { lo: number; hi: number; delta: number }, i: number, j: number, maxq: number) {
  const scale = (range.hi - range.lo - (i + j) * range.delta) / maxq;
  const zero = Math.min(Math.max(roundHalfEven(-(range.lo + i * range.delta) / scale), 0), maxq);
  return { scale, zero };
}

/** The include-zero range [lo, hi] of quant.py (all-zero sets use [−1, 1]) and its step Δ = (hi − lo)/T. */
function affRange(x: ArrayLike<number>, T: number) {
  let lo = 0, hi = 0;
  for (let c = 0; c < x.length; c++) [lo, hi] = [Math.min(lo, x[c]), Math.max(hi, x[c])];
  if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
  return { lo, hi, delta: (hi - lo) / T };
}

/**
 * LeanQuant_aff search by brute force, the definition: argmin over (i, j) ∈ [0, t)² of
 * Σ a_c (Q_{s,z}(x_c) − x_c)², ties to the smallest (i, j) in row-major (i, then j) order. O(t²·n).
 * @param x (n) the set (a row or a group)
 * @param a (n) importances of the same columns
 * @returns the winning grid
 */
export function affSearch(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  { bits, T = 2048, t = defaultAffSteps(bits, T) }: AffSearchOptions,
): AffSearchResult {
  const maxq = 2 ** bits - 1;
  const range = affRange(x, T);
  let best: AffSearchResult = { scale: 0, zero: 0, i: -1, j: -1, err: Infinity };
  for (let i = 0; i < t; i++) {
    for (let j = 0; j < t; j++) {
      const p = affCandidate(range, i, j, maxq);
      let err = 0;
      for (let c = 0; c < x.length; c++) {
        err += a[c] * (p.scale * (affineCode(x[c], p, maxq) - p.zero) - x[c]) ** 2;
      }
      if (err < best.err) best = { ...p, i, j, err };
    }
  }
  return best;
}

/**
 * The same argmin by sorted prefix sums (§2.3 last bullet): each code owns a contiguous run of the sorted
 * values (found by binary search with the very same `affineCode`, so assignments match the brute force),
 * and E = Σ_codes (A2 − 2q·A1 + q²·A0) from prefix sums of a, a·x, a·x². O(t²·2^b·log n) after one sort.
 * @param x (n) the set
 * @param a (n) importances
 * @returns the winning grid (err from the prefix sums, equal to the brute force up to rounding)
 */
export function affSearchFast(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  { bits, T = 2048, t = defaultAffSteps(bits, T) }: AffSearchOptions,
): AffSearchResult {
  const maxq = 2 ** bits - 1;
  const n = x.length;
  const range = affRange(x, T);
  const order = Array.from({ length: n }, (_, c) => c).sort((p, q) => x[p] - x[q]);
  const xs = Float64Array.from(order, (c) => x[c]);
  const P0 = new Float64Array(n + 1), P1 = new Float64Array(n + 1), P2 = new Float64Array(n + 1);
  for (let m = 0; m < n; m++) {
    const w = a[order[m]];
    P0[m + 1] = P0[m] + w;
    P1[m + 1] = P1[m] + w * xs[m];
    P2[m + 1] = P2[m] + w * xs[m] * xs[m];
  }
  let best: AffSearchResult = { scale: 0, zero: 0, i: -1, j: -1, err: Infinity };
  for (let i = 0; i < t; i++) {
    for (let j = 0; j < t; j++) {
      const p = affCandidate(range, i, j, maxq);
      let err = 0;
      let begin = 0;
      for (let code = 0; code <= maxq; code++) {
        // end = first sorted position whose code exceeds `code` (codes are monotone in x).
        let lo = begin, hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (affineCode(xs[mid], p, maxq) <= code) lo = mid + 1;
          else hi = mid;
        }
        const q = p.scale * (code - p.zero);
        err += (P2[lo] - P2[begin]) - 2 * q * (P1[lo] - P1[begin]) + q * q * (P0[lo] - P0[begin]);
        begin = lo;
      }
      if (err < best.err) best = { ...p, i, j, err };
    }
  }
  return best;
}
