/**
 * LeanQuant_nu's grid (docs/quantization.md §2.2): per-row weighted 1-D Lloyd k-means with K = 2^bits centres,
 * exactly as quant/reference_grid.ts `weightedKMeans` defines it:
 *  - init linspace(min, max, K) of the row (last centre exactly max), for every bit width;
 *  - each iteration labels every point with its nearest centre (first index wins ties) and moves each
 *    centre to the a-weighted mean of its points;
 *  - a cluster with zero total weight is relocated as scikit-learn's Lloyd does (`_relocate_empty_clusters_
 *    dense`, the reference's k-means, §2.2): the empty clusters, in index order, take the points farthest
 *    from the centres that labelled them (farthest first, ties to the lower column), each point's weight
 *    moving out of its old cluster; nothing moves when every point sits on its centre. With the linspace
 *    init a row with outliers otherwise strands centres in the empty middle of its range (stories260K:
 *    10–20 % of rows at 3 bits, ~75 % at 4 bits kept an unused centre before this rule);
 *  - stop after maxIter iterations, or when the labels are unchanged since the previous iteration, or
 *    when Σ_j shift_j² ≤ tolFactor · var(row) (unweighted population variance);
 *  - the LUT is the final centres sorted ascending (relocation may reorder them; codes are assigned later,
 *    so the order is free) and rounded to f16 (ties to even), stored as f32 values that are exactly
 *    f16-representable (§6 item 11): error feedback then uses the values inference will use.
 * One divergence from scikit-learn, in a degenerate case only: a cluster left with zero weight after giving
 * its point away keeps its centre, where scikit-learn's division-free average puts it at the data mean.
 * The centre update is accumulated centred, shift_j = Σ a·(x − c_j) / Σ a, which is the reference's
 * xsum/wsum − c_j without the cancellation of subtracting two nearly equal f32 numbers.
 *
 * Layout: one workgroup per row. The row's points and weights are streamed from storage every
 * iteration (a 14336-column row is 57 KiB of f32, more than workgroup memory holds on every adapter).
 * "Labels unchanged" needs no label buffer: the previous labels are the nearest centres among the
 * previous iteration's centres, so each point is labelled against both sets. Per-cluster sums live in
 * workgroup memory as [2K][WG] (each invocation owns one column slot, no atomics) and are tree-reduced.
 */
import {
  bindBuffers,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";

const WGSL = /* wgsl */ `
override WG: u32 = 128u;
override K: u32 = 16u;

struct Params { rows: u32, cols: u32, maxIter: u32, tolFactor: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;          // (rows, cols) permuted, dead columns zeroed
@group(0) @binding(2) var<storage, read> importance: array<f32>; // (cols) a_k ≥ 0, same column order as W
@group(0) @binding(3) var<storage, read_write> lut: array<f32>;  // (rows, K) centres, f16-exact, ascending

var<workgroup> red: array<f32, 2u * K * WG>; // [2K][WG]: Σa per cluster, then Σa·(x − c)
var<workgroup> cur: array<f32, K>;           // centres labelling this iteration
var<workgroup> prev: array<f32, K>;          // centres that labelled the previous iteration
var<workgroup> sumA: array<f32, K>;          // this iteration's Σa per cluster
var<workgroup> sumAx: array<f32, K>;         // this iteration's Σa·(x − c) per cluster
var<workgroup> moveTo: array<f32, K>;        // the point an empty cluster was relocated to
var<workgroup> moved: array<u32, K>;         // 1 for relocated clusters
var<workgroup> taken: array<u32, K>;         // columns taken by relocations so far
var<workgroup> empty: array<u32, K>;         // 1 for clusters with zero weight before relocating
var<workgroup> nEmpty: u32;
var<workgroup> farthest: f32;
var<workgroup> done: u32;
var<workgroup> changed: atomic<u32>;

fn nearestCur(x: f32) -> u32 {
  var best = 0u;
  var bestDist = abs(cur[0] - x);
  for (var j = 1u; j < K; j++) {
    let d = abs(cur[j] - x);
    if (d < bestDist) { best = j; bestDist = d; }
  }
  return best;
}

fn nearestPrev(x: f32) -> u32 {
  var best = 0u;
  var bestDist = abs(prev[0] - x);
  for (var j = 1u; j < K; j++) {
    let d = abs(prev[j] - x);
    if (d < bestDist) { best = j; bestDist = d; }
  }
  return best;
}

// f32 → nearest f16 value (ties to even), returned as f32. Done on the bits because WGSL leaves the
// rounding of pack2x16float to the implementation.
fn roundF16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let sign = b & 0x80000000u;
  let mag = b & 0x7fffffffu;
  if (mag < 0x38800000u) { // |x| < 2^-14: subnormal f16, spacing 2^-24 (scaling by 2^24 is exact)
    return bitcast<f32>(sign | bitcast<u32>(round(abs(x) * 16777216.0) * 5.9604644775390625e-8));
  }
  let r = (mag + 0x0fffu + ((mag >> 13u) & 1u)) & 0xffffe000u; // keep 10 mantissa bits, ties to even
  if (r > 0x477fe000u) { return bitcast<f32>(sign | 0x7f800000u); } // above 65504 after rounding
  return bitcast<f32>(sign | r);
}

// Sums red[j][0..WG) into red[j][0] for the first ncol columns.
fn reduceColumns(ncol: u32, lid: u32) {
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    for (var e = lid; e < ncol * s; e += WG) {
      let j = e / s;
      let l = e - j * s;
      red[j * WG + l] += red[j * WG + l + s];
    }
    workgroupBarrier();
  }
}

// scikit-learn's empty-cluster relocation, one empty cluster (in index order) at a time: the point farthest
// from the centre that labelled it (ties to the lower column), not taken yet, becomes that cluster's centre
// and its weight leaves its old cluster. Uses red[0..2·WG) as scratch (the sums were copied out). A row
// shorter than K relocates at most one cluster per point (sklearn refuses rows with fewer points than K).
fn relocateEmpty(base: u32, n: u32, lid: u32) {
  let ne = workgroupUniformLoad(&nEmpty);
  var e = 0u;
  for (var j = 0u; j < K; j++) {
    if (e >= ne) { break; }
    if (workgroupUniformLoad(&empty[j]) == 0u) { continue; }
    var bd = -1.0;
    var bc = 0u;
    for (var c = lid; c < n; c += WG) {
      var skip = false;
      for (var t = 0u; t < e; t++) { if (taken[t] == c) { skip = true; } }
      if (skip) { continue; }
      let x = W[base + c];
      let d = x - cur[nearestCur(x)];
      if (d * d > bd) { bd = d * d; bc = c; }
    }
    red[lid] = bd;
    red[WG + lid] = bitcast<f32>(bc);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
      if (lid < s) {
        let d2 = red[lid + s];
        let c2 = bitcast<u32>(red[WG + lid + s]);
        if (d2 > red[lid] || (d2 == red[lid] && c2 < bitcast<u32>(red[WG + lid]))) {
          red[lid] = d2;
          red[WG + lid] = bitcast<f32>(c2);
        }
      }
      workgroupBarrier();
    }
    // As sklearn: nothing moves when every point sits on its centre (more clusters than distinct values);
    // past the first, points at distance 0 are taken too; stop when every point is taken.
    if (lid == 0u) { farthest = red[0]; }
    let fd = workgroupUniformLoad(&farthest);
    if (fd < 0.0 || (e == 0u && fd == 0.0)) { break; }
    if (lid == 0u) {
      let f = bitcast<u32>(red[WG]);
      let x = W[base + f];
      let a = importance[f];
      let old = nearestCur(x);
      sumA[old] -= a;
      sumAx[old] -= a * (x - cur[old]);
      sumA[j] = a;
      moveTo[j] = x;
      moved[j] = 1u;
      taken[e] = f;
    }
    e++;
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }
  let n = params.cols;
  let base = row * n;
  // Row statistics: min and max (init), mean, then the population variance (tolerance).
  var lo = 3.40282347e38;
  var hi = -3.40282347e38;
  var sum = 0.0;
  for (var c = lid; c < n; c += WG) {
    let x = W[base + c];
    lo = min(lo, x);
    hi = max(hi, x);
    sum += x;
  }
  red[lid] = lo;
  red[WG + lid] = hi;
  red[2u * WG + lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) {
      red[lid] = min(red[lid], red[lid + s]);
      red[WG + lid] = max(red[WG + lid], red[WG + lid + s]);
      red[2u * WG + lid] += red[2u * WG + lid + s];
    }
    workgroupBarrier();
  }
  lo = red[0];
  hi = red[WG];
  let mean = red[2u * WG] / f32(n);
  workgroupBarrier();
  var ss = 0.0;
  for (var c = lid; c < n; c += WG) {
    let d = W[base + c] - mean;
    ss = fma(d, d, ss);
  }
  red[lid] = ss;
  workgroupBarrier();
  reduceColumns(1u, lid);
  let tol = params.tolFactor * red[0] / f32(n);
  if (lid < K) {
    // numpy linspace: lo + j·(hi − lo)/(K − 1), the last point exactly hi.
    let c0 = select(lo + f32(lid) * (hi - lo) / f32(K - 1u), hi, lid == K - 1u);
    cur[lid] = c0;
    prev[lid] = c0;
  }
  if (lid == 0u) { atomicStore(&changed, 0u); }
  workgroupBarrier();

  var it = 0u;
  loop {
    it++;
    for (var j = 0u; j < 2u * K; j++) { red[j * WG + lid] = 0.0; }
    var relabelled = false;
    for (var c = lid; c < n; c += WG) {
      let x = W[base + c];
      let a = importance[c];
      let l = nearestCur(x);
      if (it > 1u && nearestPrev(x) != l) { relabelled = true; }
      red[l * WG + lid] += a;
      red[(K + l) * WG + lid] = fma(a, x - cur[l], red[(K + l) * WG + lid]);
    }
    if (relabelled) { atomicStore(&changed, 1u); }
    workgroupBarrier();
    reduceColumns(2u * K, lid);
    if (lid < K) {
      sumA[lid] = red[lid * WG];
      sumAx[lid] = red[(K + lid) * WG];
      moved[lid] = 0u;
      empty[lid] = select(0u, 1u, red[lid * WG] == 0.0);
    }
    if (lid == 0u) {
      var e = 0u;
      for (var j = 0u; j < K; j++) { if (red[j * WG] == 0.0) { e++; } }
      nEmpty = e;
    }
    relocateEmpty(base, n, lid);
    if (lid == 0u) {
      var shift = 0.0;
      for (var j = 0u; j < K; j++) {
        let w = sumA[j];
        var step = select(0.0, sumAx[j] / w, w > 0.0);
        prev[j] = cur[j];
        if (moved[j] != 0u) {
          step = moveTo[j] - cur[j];
          cur[j] = moveTo[j];
        } else {
          cur[j] += step;
        }
        shift = fma(step, step, shift);
      }
      let same = it > 1u && atomicLoad(&changed) == 0u;
      atomicStore(&changed, 0u);
      done = select(0u, 1u, same || shift <= tol || it >= params.maxIter);
    }
    if (workgroupUniformLoad(&done) != 0u) { break; }
  }
  if (lid == 0u) {
    // Insertion sort: K ≤ 16 centres, out of order only after a relocation.
    for (var i = 1u; i < K; i++) {
      let v = cur[i];
      var j = i;
      while (j > 0u && cur[j - 1u] > v) {
        cur[j] = cur[j - 1u];
        j--;
      }
      cur[j] = v;
    }
  }
  workgroupBarrier();
  if (lid < K) { lut[row * K + lid] = roundF16(cur[lid]); }
}
`;

/** Variant of the k-means kernel. */
export interface KMeansSpec {
  /** grid bits, 1..4: K = 2^bits centres per row */
  bits: number;
}

/** Buffers and sizes of one k-means fit. */
export interface KMeansArgs {
  /** W: (rows, cols) f32, permuted columns, dead columns zeroed (the original weights, not error-updated) */
  W: GPUBuffer;
  /** importance: (cols) f32 a_k ≥ 0 in the same column order as W */
  importance: GPUBuffer;
  /** lut: (rows, 2^bits) f32 output, each entry exactly representable in f16 */
  lut: GPUBuffer;
  rows: number;
  cols: number;
  /** Lloyd iterations at most (reference default 100) */
  maxIter: number;
  /** stop when Σ shift² ≤ tolFactor · var(row) (sklearn's tol, default 1e-6) */
  tolFactor: number;
}

/**
 * The WGSL source (variants through the WG and K overrides).
 * @returns the shader text
 */
export function kmeansShader(): string {
  return WGSL;
}

/**
 * Largest power-of-two workgroup (≤ 256) whose [2K][WG] f32 reduction fits the device's workgroup memory.
 * @param gpu the device
 * @param clusters K
 * @returns the WG override value
 */
export function kmeansWorkgroupSize(gpu: Gpu, clusters: number): number {
  let wg = 256;
  const extra = 28 * clusters + 64; // cur, prev, sums, relocation state, flags
  while (
    wg > 32 &&
    (wg > gpu.maxInvocationsPerWorkgroup || 8 * clusters * wg + extra > gpu.maxWorkgroupStorageBytes)
  ) {
    wg /= 2;
  }
  return wg;
}

/**
 * Builds the weighted k-means kernel for one bit width.
 * @param gpu the device
 * @param spec bits (1..4)
 * @returns a kernel whose `bind` fixes the buffers and sizes; one workgroup per row
 * @example
 * ```ts ignore
 * createKMeans(gpu, { bits: 4 }).bind({ W, importance, lut, rows, cols, maxIter: 100, tolFactor: 1e-6 }).encode(pass);
 * ```
 */
export function createKMeans(gpu: Gpu, { bits }: KMeansSpec): Kernel<KMeansArgs> {
  if (!Number.isInteger(bits) || bits < 1 || bits > 4) {
    throw new Error(`Cannot build k-means for bits ${bits}: expected 1..4`);
  }
  const K = 2 ** bits;
  const wg = kmeansWorkgroupSize(gpu, K);
  const pipeline = getPipeline(gpu, {
    name: "kmeans",
    code: WGSL,
    constants: { WG: wg, K },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
    spec: { bits },
  });
  return {
    bind({ W, importance, lut, rows, cols, maxIter, tolFactor }: KMeansArgs): Encodable {
      const what = `Cannot bind kmeans on (${rows}, ${cols}) with maxIter ${maxIter}`;
      if (!(rows >= 1 && cols >= 1 && maxIter >= 1)) throw new Error(`${what}: expected all ≥ 1`);
      for (
        const [name, buffer, bytes] of [["W", W, rows * cols * 4], ["importance", importance, cols * 4], [
          "lut",
          lut,
          rows * K * 4,
        ]] as const
      ) {
        if (buffer.size < bytes || buffer.size > gpu.maxBindingBytes) {
          throw new Error(
            `${what}: "${name}" has ${buffer.size} bytes, expected ${bytes}..${gpu.maxBindingBytes}`,
          );
        }
      }
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", cols], ["u32", maxIter], ["f32", tolFactor]],
        "kmeans params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, W, importance, lut], "kmeans");
      const [gx, gy] = dispatch2d(gpu, rows);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
