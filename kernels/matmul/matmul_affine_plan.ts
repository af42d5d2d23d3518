/**
 * The planner of kernels/matmul_affine.ts: which shader build (q8 GEMV, f32 GEMV or tiled GEMM), its
 * launch shape and its `override` constants for one bind, from the weight's facts and the row count. The
 * figures behind each default are in the comments; `AffineTune` overrides them for sweeps.
 */
import { ceilDiv } from "../core/mod.ts";
import {
  GEMM_DEFAULTS,
  type GemmBuild,
  type GemmMath,
  gemmMathFor,
  gemmStaging,
  gemmWorkgroupBytes,
} from "./gemm_core_wgsl.ts";
import { gemmWgsl, type GemvBuild, gemvWgsl } from "./matmul_affine_wgsl.ts";
import { type Q8GemvBuild, q8GemvWgsl } from "./matmul_affine_q8_wgsl.ts";
import { type Q8mmBuild, q8mmWgsl, type Q8Prefetch } from "./matmul_affine_q8mm_wgsl.ts";
import {
  ROW_LANES_KS,
  ROW_LANES_MAX_ROWS,
  rowLanesFor,
  rowLanesOutputsPerWorkgroup,
  rowLanesReduceBytes,
  type RowLanesTune,
} from "./row_lanes_wgsl.ts";

/** Launch shape overrides, for benchmarks and sweeps; the planner's defaults otherwise. */
export interface AffineTune {
  /** GEMV: invocations per workgroup, invocations per row group, output rows per invocation, K unroll */
  wg?: number;
  tpr?: number;
  nr?: number;
  unrollK?: number;
  /** GEMV: stage activations in workgroup memory per K step (else each lane reads its own) */
  staged?: boolean;
  /** GEMV: dequantize per code instead of factoring scale and zero out of each piece */
  perCode?: boolean;
  /** GEMM: output tile (activation rows × output columns, multiples of 8) and K per step (8, 16 or 32) */
  tm?: number;
  tn?: number;
  tk?: number;
  /** q8 GEMV: output rows per workgroup and per unrolled chunk */
  rb?: number;
  unroll?: number;
  /** GEMM: the pipelined build (double-buffered tiles, next step's loads in flight during the math) */
  pipelined?: boolean;
  /** Batched q8 path (matmul_affine_q8mm_wgsl.ts): lanes per output, outputs per lane, workgroup size,
   * rows per dispatch, pieces per loop iteration. `ks` sets the order of the sums: sweeps only. */
  mm?: RowLanesTune;
  /**
   * Batched q8 path: load the next piece's codes and scales while the current one's math runs (one piece per
   * loop iteration; sweeps).
   */
  q8Prefetch?: Q8Prefetch;
}

export interface MatmulAffineSpec {
  /** y += x·Qᵀ (residual epilogue) instead of y = x·Qᵀ. */
  accumulate: boolean;
  /**
   * Decode activations: "q8" (default) quantizes x to int8 per 32 columns inside the affine GEMV for
   * 1–2 rows and uses int8 dot products (matmul_affine_q8_wgsl.ts, ~1.3–1.5× faster on the H100);
   * "f32" keeps every path exact in f32.
   */
  activations?: "q8" | "f32";
  tune?: AffineTune;
  /**
   * Pin the path whatever the row count, so a row's sums do not depend on how many rows share the call:
   * "gemm" always tiles (the batched engine's prompt forwards); "gemv" the decode kernels (its decode
   * forwards): with q8 activations the batched q8 path (matmul_affine_q8mm_wgsl.ts: a prep pass, then
   * dispatches of up to ROW_LANES_MAX_ROWS.q8 rows reading each weight once), with f32 the f32 GEMV over
   * batches of {@link AFFINE_BATCH_ROWS} rows.
   */
  path?: "gemm" | "gemv";
  /**
   * Batched q8 path: let a dispatch's row count pick its K split ({@link kSplitFor}), so a row's sums depend
   * on how many rows its dispatch has. Off (default), every dispatch of a weight splits K alike: a row's
   * bits never depend on its batch (the engine's `--batch-invariant`).
   */
  kSplitByRows?: boolean;
  /**
   * The tiled GEMM's arithmetic (gemm_core_wgsl.ts): "f32" (default) is exact in f32; "f16" (needs
   * `shader-f16`) rounds activations and dequantized weights to f16 and sums products in f16 for 16 k at a
   * time, within gemmF16ErrorBound.
   */
  gemmMath?: GemmMath;
}

/** Activation rows up to this run the q8 GEMV when it is enabled (any count with `path: "gemv"`). */
export const AFFINE_Q8_MAX_ROWS = 2;
/** Rows per dispatch of a `path: "gemv"` call with f32 activations (the GEMV's registers hold a piece of each row). */
export const AFFINE_BATCH_ROWS = 8;
/** Whether a bind runs the batched q8 path: a pinned decode (`path: "gemv"`) with q8 activations. */
export function affineBatchedQ8(spec: Pick<MatmulAffineSpec, "activations" | "path">): boolean {
  return spec.path === "gemv" && (spec.activations ?? "q8") === "q8";
}

/**
 * Whether a bind with these facts runs the q8 GEMV, which can apply the preceding RMSNorm or SiLU·mul
 * itself (MatmulAffineArgs.norm / siluMulUp), saving that dispatch.
 */
export function affineHasPrologue(
  spec: Pick<MatmulAffineSpec, "activations" | "path">,
  rows: number,
): boolean {
  if (spec.path === "gemm") return false;
  return (spec.activations ?? "q8") === "q8" && (spec.path === "gemv" || rows <= AFFINE_Q8_MAX_ROWS);
}

/** Row counts up to this run the GEMV; larger ones the tiled GEMM. */
export const AFFINE_GEMV_MAX_ROWS = 8;

/** Which shader build a bound kernel runs. */
export type AffineShaderSpec =
  | ({ path: "gemv" } & GemvBuild)
  | ({ path: "q8" } & Q8GemvBuild)
  | ({ path: "q8mm" } & Q8mmBuild)
  | ({ path: "gemm" } & GemmBuild);

/** How a bound matmul runs: exported so a benchmark can report the variant it timed. */
export interface MatmulAffinePlan {
  shader: AffineShaderSpec;
  /** Values for the main shader's `override` constants. */
  constants: Record<string, number>;
  /** Workgroups of the main dispatch before the 2-D split. */
  workgroups: number;
  /** GEMV only: activations go through the prep pass (permuted columns or inDim % 32 ≠ 0). */
  prep: boolean;
  /** Workgroup memory the main shader declares, checked against the device limit at bind. */
  workgroupBytes: number;
  tilesN: number;
}

/** The dimensions of an affine weight (matmul_affine.ts `AffineWeights` adds its buffers). */
export interface AffineDims {
  bits: 2 | 3 | 4;
  outDim: number;
  inDim: number;
  groupSize: number;
}

/** The weight facts the planner needs. */
export type AffineShape = AffineDims & {
  rows: number;
  hasPerm: boolean;
  /** Work fused into the q8 GEMV's prologue. */
  prologue?: "none" | "norm" | "siluMul";
  /** Row counts of the further matrices of one q8 dispatch (MatmulAffineArgs.more). */
  moreOutDims?: number[];
  /** The device's workgroup memory (default 32 KiB, lavapipe's); the GEMV's K tiles are sized to fit. */
  maxWorkgroupBytes?: number;
  /** The device has `shader-f16` (the GEMM's f16 arithmetic needs it). */
  hasF16?: boolean;
};

/**
 * Picks the path, tiles and dispatch size for one shape.
 * @param spec accumulation and optional tile overrides
 * @param shape rows and the weight's facts
 * @returns the plan `createMatmulAffine(...).bind` uses
 */
export function planMatmulAffine(spec: MatmulAffineSpec, shape: AffineShape): MatmulAffinePlan {
  const { rows, bits, outDim, groupSize, hasPerm } = shape;
  const t = spec.tune ?? {};
  const common = { ACC: spec.accumulate ? 1 : 0, GROUP_PIECES: groupSize / 32 };
  if (affineBatchedQ8(spec)) return planQ8mm(common, shape, t, spec.kSplitByRows ?? false);
  if (affineHasPrologue(spec, rows)) return planQ8(common, shape, t);
  if ((shape.moreOutDims ?? []).length > 0) {
    throw new Error("Cannot plan matmul_affine: several matrices in one dispatch need the q8 GEMV");
  }
  if ((shape.prologue ?? "none") !== "none") {
    throw new Error(`Cannot plan matmul_affine: a fused ${shape.prologue} needs the q8 GEMV`);
  }
  if (rows <= AFFINE_GEMV_MAX_ROWS && spec.path !== "gemm") {
    // Defaults from a first, noisy H100 sweep (4-bit g128, 4096/14336 shapes): NR 2 beat 4 and 8, a
    // 128-invocation workgroup helped one row, 8 rows wanted TPR 16. Re-tune with `spec.tune`.
    const staged = t.staged ?? true;
    // A pinned GEMV (`path: "gemv"`) takes the many-row build for every row count, so a row's K split,
    // and with it its sums, never depends on how many rows share the dispatch.
    const many = rows > 2 || spec.path === "gemv";
    const wg = t.wg ?? (many ? 256 : 128);
    const nr = t.nr ?? 2;
    // Two staged tiles of ROWS · TPR · 144 bytes must fit workgroup memory (sized for 8 rows when pinned).
    const sized = spec.path === "gemv" ? AFFINE_BATCH_ROWS : rows;
    const fits = (n: number) => 2 * sized * n * 144 <= (shape.maxWorkgroupBytes ?? 32768);
    const tpr = t.tpr ?? (many ? [16, 8].find(fits) ?? 8 : 32);
    const shader: AffineShaderSpec = {
      path: "gemv",
      bits,
      rows,
      nr,
      wg,
      tpr,
      unrollK: t.unrollK ?? 1,
      staged,
      // Factoring scale and zero out of a piece saves an FMA per code but holds NR·ROWS more sums.
      perCode: t.perCode ?? many,
    };
    if (wg % tpr !== 0 || tpr < Math.min(rows * nr, 8)) {
      throw new Error(
        `Cannot plan matmul_affine GEMV: wg ${wg} must be a multiple of tpr ${tpr} ≥ min(rows·nr, 8)`,
      );
    }
    const red = wg * (Math.min(rows * nr, 8) + 1) * 4;
    return {
      shader,
      constants: common,
      workgroups: ceilDiv(outDim, (wg / tpr) * nr),
      prep: hasPerm || shape.inDim % 32 !== 0,
      workgroupBytes: staged ? Math.max(red, 2 * rows * tpr * 9 * 16) : red,
      tilesN: 0,
    };
  }
  // The dense GEMM's tiling (128×128, 8×8 per invocation); fewer rows get shorter tiles so a prompt of a
  // few dozen tokens does not compute mostly padding. TODO(#12): sweep on the H100.
  const tm = t.tm ?? (rows <= 32 ? 32 : rows <= 64 ? 64 : 128);
  const tn = t.tn ?? 128;
  const math = gemmMathFor(spec.gemmMath, shape.hasF16 ?? false);
  const { tk, pipe } = gemmStaging(t, { tm, tn }, math, shape.maxWorkgroupBytes ?? 32768, {
    pipelined: GEMM_DEFAULTS.pipelined.affine,
  });
  if (tm % 8 !== 0 || tn % 8 !== 0 || 32 % tk !== 0 || tk % 8 !== 0) {
    throw new Error(`Cannot plan matmul_affine GEMM: tiles ${tm}×${tn}×${tk} (need multiples of 8, tk | 32)`);
  }
  const tilesN = ceilDiv(outDim, tn);
  if (math === "f16" && tk % 16 !== 0) {
    throw new Error(`Cannot plan matmul_affine f16 GEMM: tk ${tk} (need 16 or 32)`);
  }
  return {
    shader: { path: "gemm", math, tk, ...(pipe ? { pipe } : {}) },
    constants: { ...common, BITS: bits, TM: tm, TN: tn },
    workgroups: ceilDiv(rows, tm) * tilesN,
    // 16-byte activation loads need 16-byte aligned rows in column order: else read the prep scratch.
    prep: hasPerm || shape.inDim % 4 !== 0,
    workgroupBytes: gemmWorkgroupBytes({ tm, tn, tk }, math, pipe !== undefined),
    tilesN,
  };
}

/**
 * The q8 GEMV plan: enough invocations to give each one to four pieces of K, 16 output rows per
 * workgroup (at 4096 outputs that is 256 workgroups, two per SM on an H100; 32 rows per workgroup left
 * half the SMs idle; 448 invocations with one piece each were slower than 256 with two at K = 14336),
 * chunks of 8 rows (4 when registers hold more pieces or rows). H100, random 4-bit g128 weights:
 * 14336×4096 in 20.6 µs, 4096×14336 in 18.4 µs (1.5–1.7 TB/s) against 26.5 and 24.0 µs in f32.
 */
function planQ8(common: Record<string, number>, shape: AffineShape, t: AffineTune): MatmulAffinePlan {
  const { rows, outDim, inDim, hasPerm } = shape;
  const outDims = [outDim, ...(shape.moreOutDims ?? [])];
  const nPieces = ceilDiv(inDim, 32);
  const wg = t.wg ?? Math.min(256, Math.max(32, ceilDiv(nPieces, 32) * 32));
  const pieces = ceilDiv(nPieces, wg);
  // 16 rows per workgroup, fewer when that leaves under 256 workgroups (alone, k/v projections have 1024
  // rows; merged with q they have 6144).
  const total = outDims.reduce((a, b) => a + b, 0);
  let rb = t.rb ?? [16, 8].find((n) => ceilDiv(total, n) >= 256) ?? 4;
  // Partial sums (rb · rows · (wg + wg/rb) f32) must fit workgroup memory.
  const bytes = (n: number) => n * rows * (wg + wg / n) * 4;
  while (bytes(rb) > (shape.maxWorkgroupBytes ?? 32768) && rb > 1) rb /= 2;
  const unroll = Math.min(rb, t.unroll ?? (pieces * rows > 1 ? 4 : 8));
  if (wg % rb !== 0 || rb % unroll !== 0 || wg % 32 !== 0) {
    throw new Error(`Cannot plan matmul_affine q8 GEMV: need wg % 32 = 0, wg % rb = 0, rb % unroll = 0`);
  }
  const gather = hasPerm || inDim % 32 !== 0;
  return {
    shader: {
      path: "q8",
      bits: shape.bits,
      rows,
      wg,
      pieces,
      rb,
      unroll,
      gather,
      prologue: shape.prologue ?? "none",
      mats: outDims.length,
    },
    constants: { ...common, ...(gather ? { PERM: hasPerm ? 1 : 0 } : {}) },
    workgroups: outDims.reduce((n, d) => n + ceilDiv(d, rb), 0),
    prep: false,
    workgroupBytes: bytes(rb),
    tilesN: 0,
  };
}

/** Rows below which {@link kSplitFor} splits narrow matrices' K over 16 lanes. */
export const FEW_ROWS = 32;

/**
 * The K split (lanes per output) of a batched q8 dispatch of `rows` rows and `outputs` outputs in all (its
 * matrices together), when the row count may choose it (MatmulAffineSpec.kSplitByRows): 16 lanes for fewer
 * than {@link FEW_ROWS} rows of at most 4,096 outputs, else ROW_LANES_KS (8). Why (H100, 8B shapes,
 * BENCHMARKS.md "fifteenth session"): at few rows a dispatch of few outputs launches too few invocations to
 * keep loads in flight (down, 4,096 × 14,336, took 0.064 ms at 8 rows as at 16); 16 lanes took it to 0.033
 * ms at 8 rows and 0.050 at 16, o 0.022 → 0.019, while gate/up (14,336 outputs) went 0.046 → 0.051 and, at
 * 32 rows, o and down lost too. Outputs are counted over the dispatch because the invocations are: merged
 * q/k/v (6,144 outputs) keeps 8 lanes, as it was not timed with 16.
 */
export function kSplitFor(rows: number, outputs: number): number {
  return rows < FEW_ROWS && outputs <= 4096 ? 16 : ROW_LANES_KS;
}

/**
 * The batched q8 plan for one main dispatch of `shape.rows` ≤ ROW_LANES_MAX_ROWS.q8 rows (matmul_affine.ts
 * splits larger calls), with the shared lane defaults (row_lanes_wgsl.ts `rowLanesFor`) and, with
 * `kSplitByRows`, the K split of {@link kSplitFor}.
 */
function planQ8mm(
  common: Record<string, number>,
  shape: AffineShape,
  t: AffineTune,
  kSplitByRows: boolean,
): MatmulAffinePlan {
  const { rows, bits, outDim } = shape;
  if (rows > (t.mm?.rows ?? ROW_LANES_MAX_ROWS.q8)) {
    throw new Error(`Cannot plan the batched q8 matmul: ${rows} rows in one dispatch`);
  }
  const outDims = [outDim, ...(shape.moreOutDims ?? [])];
  const ks = t.mm?.ks ?? (kSplitByRows ? kSplitFor(rows, outDims.reduce((a, b) => a + b)) : undefined);
  const build = {
    ...rowLanesFor(rows, "q8", { ...t.mm, ...(ks ? { ks } : {}) }, Math.min(...outDims)),
    bits,
    mats: outDims.length,
    ...(t.q8Prefetch ? { prefetch: t.q8Prefetch, unroll: 1 } : {}),
  };
  const perWorkgroup = rowLanesOutputsPerWorkgroup(build);
  return {
    shader: { path: "q8mm", ...build },
    constants: common,
    workgroups: outDims.reduce((n, d) => n + ceilDiv(d, perWorkgroup), 0),
    prep: true,
    workgroupBytes: rowLanesReduceBytes(build),
    tilesN: 0,
  };
}

/**
 * Builds the WGSL of one path (bits, rows and NR are unrolled by TypeScript in the GEMV; everything
 * else is an `override`, see {@link planMatmulAffine}).
 * @param spec the path and, for the GEMV, its build
 * @returns WGSL source with entry point `main`
 */
export function matmulAffineShader(spec: AffineShaderSpec): string {
  if (spec.path === "q8") return q8GemvWgsl(spec);
  if (spec.path === "q8mm") return q8mmWgsl(spec);
  return spec.path === "gemm" ? gemmWgsl(spec) : gemvWgsl(spec);
}
