/**
 * LeanQuant_aff's loss-error-aware affine grid search (docs/quantization.md §2.3), exactly as
 * quant/reference_grid.ts `affSearch` defines it, for one (row, group) per workgroup:
 *  - the set is x_c = W[row, start + c], c < n, with importances a_c = importance[start + c];
 *  - include-zero range lo = min(min x, 0), hi = max(max x, 0) ([−1, 1] when both are 0), Δ = (hi − lo)/T;
 *  - candidate (i, j) ∈ [0, t)²: scale s = (hi − lo − (i + j)Δ)/maxq (from i + j only),
 *    zero z = clamp(round(−(lo + iΔ)/s), 0, maxq), Q(x) = s·(clamp(round(x/s) + z, 0, maxq) − z);
 *  - argmin of E = Σ a_c (Q(x_c) − x_c)², ties to the smallest i·t + j (the reference's row-major order).
 *
 * Exact shortcut (no sort, no prefix sums): E depends on (i, j) only through the grid (s, z), and s
 * only through m = i + j. For a fixed m, z(i) is monotone non-increasing in i (in f32 as in exact
 * arithmetic: every step of its formula is monotone), so the t² candidates collapse into runs of equal
 * grids. Each run is scored once, under its smallest i, which is the candidate the reference's
 * tie-break keeps among identical grids. Runs are found by binary search on z(i). Each step of i moves
 * −(lo + iΔ)/s by maxq/(T − m), so an m has about 1 + len(m)·maxq/(T − m) runs; at T = 2048 that is
 * 0.8–2.4e3 grids instead of 1.7e5 candidates at 4 bits (t = 410), 1.6–3.6e3 instead of 6.7e5 at 2 bits.
 *
 * Each run is scored directly, Σ a·(Q(x) − x)² with d = fma(s, k − z, −x): every term is ≥ 0, so f32
 * has no cancellation (unlike expanding into prefix sums of a, a·x, a·x²); 32-term partial sums are
 * added with Kahan compensation. Invocations stride over m; each keeps its best (E, index), and a
 * workgroup argmin reduction picks the winner. Sets of up to CACHE columns (a group, or a row of a
 * few thousand) are staged in workgroup memory; longer rows are read from storage (same addresses
 * across a warp, so they are broadcasts served by L1).
 */
import {
  createStorage,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";
import WGSL from "./aff_search.wgsl" with { type: "text" };

/** Variant of the affine search kernel. */
export interface AffSearchSpec {
  /** grid bits, 1..8: maxq = 2^bits − 1 */
  bits: number;
  /** columns staged in workgroup memory (default: the most the device allows, ≤ 4096); longer sets stream */
  cache?: number;
}

/** Buffers and sizes of one search dispatch: `groupCount` consecutive groups of every row. */
export interface AffSearchArgs {
  /** W: (rows, cols) f32, row stride cols (the original or the error-updated weights) */
  W: GPUBuffer;
  /** importance: (cols) f32 a_c in the same column order as W */
  importance: GPUBuffer;
  /** params: (rows, nGroups) vec2<f32> (scale, zero) output; group q of this dispatch goes to groupIndex + q */
  params: GPUBuffer;
  /** choice: optional (rows, nGroups) u32 output, the winning i·t + j (tests, diagnostics) */
  choice?: GPUBuffer;
  rows: number;
  cols: number;
  /** first column of the first group */
  colStart: number;
  /** columns per group (the whole row for row-wise search); a group past `cols` is cut short */
  groupCols: number;
  /** output column of the first group in `params` */
  groupIndex: number;
  /** groups searched by this dispatch (default 1) */
  groupCount?: number;
  /** groups per row in `params` (its row stride) */
  nGroups: number;
  /** range steps (LeanQuant default 2048) */
  T: number;
  /** steps tried per end, 1 ≤ t and 2(t − 1) < T so every scale is positive */
  t: number;
}

/**
 * The WGSL source (variants through the WG, MAXQ and CACHE overrides).
 * @returns the shader text
 */
export function affSearchShader(): string {
  return WGSL;
}

/**
 * Columns staged in workgroup memory: the largest power of two ≤ 4096 that fits next to the reductions.
 * @param gpu the device
 * @param wg the workgroup size
 * @returns the CACHE override value
 */
export function affSearchCache(gpu: Gpu, wg: number): number {
  let cache = 4096;
  while (cache > 64 && 8 * cache + 8 * wg + 64 > gpu.maxWorkgroupStorageBytes) cache /= 2;
  return cache;
}

/**
 * Builds the affine search kernel for one bit width.
 * @param gpu the device
 * @param spec bits
 * @returns a kernel whose `bind` fixes the buffers and the group range; one workgroup per (row, group)
 * @example
 * ```ts ignore
 * const search = createAffSearch(gpu, { bits: 4 }); // row-wise: one group of `cols` columns
 * search.bind({ W, importance, params, rows, cols, colStart: 0, groupCols: cols, groupIndex: 0, nGroups: 1, T: 2048, t: 410 })
 *   .encode(pass);
 * ```
 */
export function createAffSearch(gpu: Gpu, { bits, cache }: AffSearchSpec): Kernel<AffSearchArgs> {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new Error(`Cannot build the affine search for bits ${bits}: expected 1..8`);
  }
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const staged = Math.min(cache ?? Infinity, affSearchCache(gpu, wg));
  const pipeline = getPipeline(gpu, {
    name: "aff_search",
    code: WGSL,
    constants: { WG: wg, MAXQ: 2 ** bits - 1, CACHE: Math.max(1, Math.floor(staged)) },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage", "storage"],
    spec: { bits },
  });
  return {
    bind(args: AffSearchArgs): Encodable {
      const { rows, cols, colStart, groupCols, groupIndex, groupCount = 1, nGroups, T, t } = args;
      checkArgs(gpu, args, groupCount);
      const fields = [
        rows,
        cols,
        colStart,
        groupCols,
        nGroups,
        groupIndex,
        groupCount,
        T,
        t,
        args.choice ? 1 : 0,
      ];
      const params = uniformParams(gpu, fields.map((v) => ["u32", v] as const), "aff_search params");
      const buffers = [params, args.W, args.importance, args.params, args.choice ?? dummyChoice(gpu)];
      const bindGroup = gpu.device.createBindGroup({
        label: "aff_search",
        layout: pipeline.getBindGroupLayout(0),
        entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const [gx, gy] = dispatch2d(gpu, rows * groupCount);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}

/** Load-time checks of one search's sizes and buffers (throws with the offending values). */
function checkArgs(gpu: Gpu, a: AffSearchArgs, groupCount: number): void {
  const { rows, cols, colStart, groupCols, groupIndex, nGroups, T, t } = a;
  const sizes = JSON.stringify({ rows, cols, colStart, groupCols, groupIndex, groupCount, nGroups, T, t });
  const what = `Cannot bind aff_search ${sizes}`;
  const ok = rows >= 1 && groupCols >= 1 && groupCount >= 1 && T >= 1 && t >= 1 && 2 * (t - 1) < T &&
    t * t < 2 ** 32 && colStart + (groupCount - 1) * groupCols < cols && groupIndex + groupCount <= nGroups;
  if (!ok) throw new Error(`${what}: expected groups inside the row and params, t ≥ 1 and 2(t − 1) < T`);
  const need: [string, GPUBuffer | undefined, number][] = [
    ["W", a.W, rows * cols * 4],
    ["importance", a.importance, cols * 4],
    ["params", a.params, rows * nGroups * 8],
    ["choice", a.choice, rows * nGroups * 4],
  ];
  for (const [name, buffer, bytes] of need) {
    if (buffer && (buffer.size < bytes || buffer.size > gpu.maxBindingBytes)) {
      throw new Error(
        `${what}: "${name}" has ${buffer.size} bytes, expected ${bytes}..${gpu.maxBindingBytes}`,
      );
    }
  }
}

/** A 4-byte buffer bound as `choice` when the caller does not want the argmin indices. */
function dummyChoice(gpu: Gpu): GPUBuffer {
  let buffer = DUMMIES.get(gpu);
  if (!buffer) {
    buffer = createStorage(gpu, 4, "aff_search unused choice");
    DUMMIES.set(gpu, buffer);
  }
  return buffer;
}
const DUMMIES = new WeakMap<Gpu, GPUBuffer>();
