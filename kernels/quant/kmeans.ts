/**
 * LeanQuant_nu's grid (docs/quantization.md §2.2): per-row weighted 1-D Lloyd k-means with K = 2^bits centres,
 * exactly as quant/reference_grid.ts `weightedKMeans` defines it:
 *  - init linspace(min, max, K) of the row (last centre exactly max), for every bit width;
 *  - each iteration labels every point with its nearest centre (first index wins ties) and moves each
 *    centre to the a-weighted mean of its points; a cluster with zero total weight keeps its centre;
 *  - stop after maxIter iterations, or when the labels are unchanged since the previous iteration, or
 *    when Σ_j shift_j² ≤ tolFactor · var(row) (unweighted population variance);
 *  - the LUT is the final centres rounded to f16 (ties to even), stored as f32 values that are exactly
 *    f16-representable (§6 item 11): error feedback then uses the values inference will use.
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
    var moved = false;
    for (var c = lid; c < n; c += WG) {
      let x = W[base + c];
      let a = importance[c];
      let l = nearestCur(x);
      if (it > 1u && nearestPrev(x) != l) { moved = true; }
      red[l * WG + lid] += a;
      red[(K + l) * WG + lid] = fma(a, x - cur[l], red[(K + l) * WG + lid]);
    }
    if (moved) { atomicStore(&changed, 1u); }
    workgroupBarrier();
    reduceColumns(2u * K, lid);
    if (lid == 0u) {
      var shift = 0.0;
      for (var j = 0u; j < K; j++) {
        let w = red[j * WG];
        let step = select(0.0, red[(K + j) * WG] / w, w > 0.0);
        prev[j] = cur[j];
        cur[j] += step;
        shift = fma(step, step, shift);
      }
      let same = it > 1u && atomicLoad(&changed) == 0u;
      atomicStore(&changed, 0u);
      done = select(0u, 1u, same || shift <= tol || it >= params.maxIter);
    }
    if (workgroupUniformLoad(&done) != 0u) { break; }
  }
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
  const extra = 8 * clusters + 64; // cur, prev, flags
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
