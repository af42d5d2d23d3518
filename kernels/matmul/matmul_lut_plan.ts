/**
 * The planner of kernels/matmul_lut.ts: the dispatches of one bind (row-per-lane GEMV batches, the
 * x-stationary one-row GEMV, its int8 twin, or the tiled GEMM), their builds and launch shapes, from the
 * weight's facts and the row count. The H100 figures behind each default are in the comments; `LutTune`
 * overrides them.
 */
import {
  GEMM_DEFAULTS,
  type GemmBuild,
  type GemmMath,
  gemmMathFor,
  gemmStaging,
  gemmWorkgroupBytes,
} from "./gemm_core_wgsl.ts";
import { ceilDiv } from "../core/mod.ts";
import {
  gemmCoreLutWgsl,
  gemvRowTile,
  gemvWgsl,
  gemvWorkgroupBytes,
  LUT_PARAMS_WGSL,
  type LutGemvBuild,
  type LutPrologue,
} from "./matmul_lut_wgsl.ts";
import { type LutXsBuild, lutXsWgsl, lutXsWorkgroupBytes } from "./matmul_lut_xs_wgsl.ts";
import { type LutRowsBuild, lutRowsWgsl, lutRowsWorkgroupBytes } from "./matmul_lut_rows_wgsl.ts";
import { type LutQ8mmBuild, lutQ8mmWgsl, lutQ8mmWorkgroupBytes } from "./matmul_lut_q8mm_wgsl.ts";
import type { Q8Prefetch } from "./matmul_affine_q8mm_wgsl.ts";
import { type LutQ8GemvBuild, lutQ8GemvWgsl, lutQ8GemvWorkgroupBytes } from "./matmul_lut_q8_wgsl.ts";
import {
  ROW_LANES_MAX_ROWS,
  rowLanesFor,
  rowLanesOutputsPerWorkgroup,
  type RowLanesTune,
  rowLanesWorkgroupSize,
} from "./row_lanes_wgsl.ts";

/** Activation rows up to which a LUT GEMV can apply the preceding RMSNorm or SiLU·mul itself. */
export const LUT_PROLOGUE_MAX_ROWS = 2;

/** Launch shape overrides, for benchmarks and sweeps; the planner's defaults otherwise. */
export interface LutTune {
  /** GEMV: output rows per lane (1, 2 or 4), row warps (1, 2 or 4; nr·rw ≤ 4), K slices, pieces per window */
  nr?: number;
  rw?: number;
  ks?: number;
  pieces?: number;
  /** Row counts up to this run as ⌈rows / 8⌉ GEMV dispatches, larger ones the GEMM (default 64). */
  gemvMaxRows?: number;
  /** GEMM: output tile (activation rows × output rows; tm a multiple of 8, tn of 32); K per step (16, 32) */
  tm?: number;
  tn?: number;
  tk?: number;
  /** Core GEMM: the pipelined build (double-buffered tiles, next step's loads in flight during the math) */
  pipelined?: boolean;
  /** One-row GEMV: use the x-stationary build when K fits one workgroup (default true) */
  xs?: boolean;
  /** x-stationary builds (f32 and int8): output rows per workgroup and per unrolled chunk */
  rb?: number;
  unroll?: number;
  /**
   * Unpinned calls of up to LUT_Q8_GEMV_MAX_ROWS rows with q8 activations: the int8 GEMV
   * (matmul_lut_q8_wgsl.ts) when true; by default (false) the f32 GEMV, as with f32 activations: for one row
   * on the H100 the int8 one took 0.19 ms a Llama-3-8B layer against 0.14 (BENCHMARKS.md, fourteenth session).
   */
  q8Gemv?: boolean;
  /** Batched decode path (matmul_lut_rows_wgsl.ts); `ks` sets the order of the sums: sweeps only. */
  mm?: RowLanesTune;
  /**
   * Int8 paths (batched and GEMV): chunk tables (matmul_lut_q8mm_wgsl.ts `LutQ8mmBuild.chunks`; true) or
   * byte-shifted copies (false). Default: chunk tables wherever they fit the device's workgroup memory (the
   * same bits).
   */
  q8Chunks?: boolean;
  /** Int8 batched path: load the next piece's codes during the current one's math (one piece per iteration). */
  q8Prefetch?: Q8Prefetch;
}

/** What a model asks for: the epilogue, plus optional launch overrides. */
export interface MatmulLutSpec {
  /** y += x·Qᵀ (residual epilogue) instead of y = x·Qᵀ. */
  accumulate: boolean;
  tune?: LutTune;
  /**
   * The tiled GEMM's arithmetic on the shared 8×8 core: "f32" (default, exact) or "f16" (needs
   * `shader-f16`; f16 tiles and products, f32 sums every 16 k, within gemmF16ErrorBound; gemm_core_wgsl.ts).
   */
  gemmMath?: GemmMath;
  /**
   * Pin the kernel whatever the row count, so a row's sums do not depend on its batch (the batched engine):
   * "gemm" always tiles (prompt rows); "gemv" is the batched decode path (dispatches of up to
   * ROW_LANES_MAX_ROWS.lut rows reading each code once) when inDim % 4 = 0, else 8-row GEMV batches, with no
   * fused prologue (decode rows).
   */
  path?: "gemm" | "gemv";
  /**
   * Decode activations: "f32" (default) the exact kernels; "q8" int8 activations per 32 columns and int8
   * tables per output row, on int8 dot products: with `path: "gemv"` the batched path
   * (matmul_lut_q8mm_wgsl.ts: a prep pass, then dispatches of up to ROW_LANES_MAX_ROWS.lutq8 rows), unpinned the
   * int8 GEMV for up to LUT_Q8_GEMV_MAX_ROWS rows (matmul_lut_q8_wgsl.ts; the same tables and integer sums),
   * the f32 kernels beyond.
   */
  activations?: "q8" | "f32";
}

/** Activation rows up to which an unpinned call with q8 activations runs the int8 GEMV. */
export const LUT_Q8_GEMV_MAX_ROWS = 2;

/** Whether an unpinned bind of `rows` rows runs the int8 GEMV (q8 activations, unless tuned off). */
export function lutQ8Gemv(spec: Pick<MatmulLutSpec, "activations" | "path" | "tune">, rows: number): boolean {
  return spec.activations === "q8" && spec.path === undefined && rows <= LUT_Q8_GEMV_MAX_ROWS &&
    (spec.tune?.q8Gemv ?? false);
}

/** Whether a bind runs the int8 batched path: a pinned decode (`path: "gemv"`) with q8 activations. */
export function lutBatchedQ8(spec: Pick<MatmulLutSpec, "activations" | "path">): boolean {
  return spec.path === "gemv" && spec.activations === "q8";
}

/** Activation rows one GEMV dispatch serves (its registers hold a partial sum for each). */
export const LUT_GEMV_MAX_ROWS = 8;
/** Default {@link LutTune.gemvMaxRows}: matmul.ts measured 8-row GEMV batches beating its GEMM up to 64 rows. */
export const LUT_GEMV_BATCH_MAX_ROWS = 64;

/** Which shader build a dispatch runs. */
export type LutShaderSpec =
  | ({ path: "gemv" } & LutGemvBuild)
  | ({ path: "rows" } & LutRowsBuild)
  | ({ path: "q8mm" } & LutQ8mmBuild)
  | ({ path: "q8gemv" } & LutQ8GemvBuild)
  | ({ path: "xs" } & LutXsBuild)
  | ({ path: "gemm"; vec: boolean } & GemmBuild);

/** One dispatch of a bound matmul; exported so a benchmark can report the variant it timed. */
export interface MatmulLutStep {
  shader: LutShaderSpec;
  /** Values for the shader's `override` constants. */
  constants: Record<string, number>;
  /** Workgroups before the 2-D split. */
  workgroups: number;
  /** The activation rows this dispatch covers: row0 .. row0 + rows − 1 of the call. */
  row0: number;
  rows: number;
  /** Workgroup memory the shader declares, checked against the device limit at bind. */
  workgroupBytes: number;
  /** Invocations per workgroup. */
  invocations: number;
  /** GEMM: output tiles along outDim (0 for the GEMV). */
  tilesN: number;
}

/** The dimensions of a LUT weight (matmul_lut.ts `LutWeights` adds its buffers). */
export interface LutDims {
  bits: 2 | 3 | 4;
  outDim: number;
  inDim: number;
}

/** The weight facts the planner needs. */
export type LutShape = LutDims & {
  rows: number;
  /** Work fused into the GEMV's x reads (rows ≤ LUT_PROLOGUE_MAX_ROWS). */
  prologue?: LutPrologue;
  /** The device's invocations per workgroup (default 256): the x-stationary GEMV needs one per piece. */
  maxInvocations?: number;
  /** The device has `shader-f16` (the f16 GEMM needs it). */
  hasF16?: boolean;
  /** The device's workgroup memory (default 32 KiB, lavapipe's): the f16 GEMM's K step is sized to fit. */
  maxWorkgroupBytes?: number;
  /** Rows of the further matrices of one int8 GEMV dispatch (matmul_lut.ts `MatmulLutArgs.more`). */
  moreOutDims?: number[];
};

/**
 * A GEMV build for `rows` activation rows (defaults untimed on hardware so far; tune through
 * {@link LutTune}). The row tile shrinks until there are ~2 workgroups per SM of an H100 (132 SMs), so
 * every SM has warps; when even 32-row tiles leave fewer workgroups (outDim < 8448, e.g. o_proj and
 * down_proj of an 8B model), each warp takes more pieces per window to keep enough code bytes in
 * flight (a 256-lane workgroup with 4 pieces per lane has 16 KiB of 4-bit codes outstanding).
 */
function gemvBuild(
  t: LutTune,
  bits: 2 | 3 | 4,
  rows: number,
  outDim: number,
): Omit<LutGemvBuild, "prologue"> {
  const rw = t.rw ?? 1;
  const rt = [128, 64].find((r) => r >= 32 * rw && ceilDiv(outDim, r) >= 264) ?? 32 * rw;
  const nr = t.nr ?? rt / (32 * rw);
  const few = ceilDiv(outDim, 32 * rw * nr) < 264;
  // Two windows of ROWS · KS · P · 32 activations share lavapipe's 32 KiB with the LUT and reduction.
  const pieces = t.pieces ?? (rows <= 2 ? (few ? 4 : 2) : rows <= 4 && few ? 2 : 1);
  const b = { bits, rows, rw, nr, ks: t.ks ?? 8, pieces };
  if (![1, 2, 4].includes(b.nr) || ![1, 2, 4].includes(b.rw) || b.nr * b.rw > 4) {
    throw new Error(
      `Cannot plan matmul_lut GEMV: nr ${b.nr} and rw ${b.rw} must be 1, 2 or 4 with nr·rw ≤ 4`,
    );
  }
  if (!(b.ks >= 1 && b.pieces >= 1 && Number.isInteger(b.ks) && Number.isInteger(b.pieces))) {
    throw new Error(
      `Cannot plan matmul_lut GEMV: ks ${b.ks} and pieces ${b.pieces} must be positive integers`,
    );
  }
  return b;
}

/**
 * Splits one matmul into dispatches: GEMV batches of up to 8 rows, or one GEMM past `gemvMaxRows`.
 * @param spec accumulation and optional tile overrides
 * @param shape rows and the weight's facts
 * @returns the dispatches `createMatmulLut(...).bind` records, in order
 */
export function planMatmulLut(spec: MatmulLutSpec, shape: LutShape): MatmulLutStep[] {
  const { rows, bits, outDim } = shape;
  const t = spec.tune ?? {};
  const acc = { ACC: spec.accumulate ? 1 : 0 };
  const prologue = shape.prologue ?? "none";
  if (prologue !== "none" && rows > LUT_PROLOGUE_MAX_ROWS) {
    throw new Error(
      `Cannot plan matmul_lut: a fused ${prologue} needs at most ${LUT_PROLOGUE_MAX_ROWS} rows`,
    );
  }
  if (spec.path === "gemv" && prologue !== "none") {
    throw new Error(`Cannot plan matmul_lut: the pinned decode path has no fused ${prologue}`);
  }
  if (lutQ8Gemv(spec, rows)) return [planQ8Gemv(t, acc, shape)];
  if ((shape.moreOutDims ?? []).length > 0) {
    throw new Error("Cannot plan matmul_lut: several matrices in one dispatch need an int8 path");
  }
  if (spec.path === "gemv" && shape.inDim % 4 === 0) return planRows(t, acc, shape);
  const gemvMaxRows = spec.path === "gemv" ? Infinity : t.gemvMaxRows ?? LUT_GEMV_BATCH_MAX_ROWS;
  if (spec.path === "gemm" || rows > gemvMaxRows) {
    if (prologue !== "none") throw new Error(`Cannot plan matmul_lut: the GEMM has no fused ${prologue}`);
    return [planCoreGemm(t, acc, shape, gemmMathFor(spec.gemmMath, shape.hasF16 ?? false))];
  }
  const nPieces = ceilDiv(shape.inDim, 32);
  // H100, random tables, row-major codes, one format per process: the x-stationary build wins for 3-bit
  // codes (35 vs 53 µs at 14336×4096) and for small outDim (k/v 1024×4096: 7.3 vs 11.8 µs with 8 rows per
  // workgroup); at 2/4 bits and ≥ 4096 outputs the row-per-lane GEMV is as fast or faster (33.8 vs 35 µs).
  if (rows === 1 && (t.xs ?? (bits === 3 || outDim <= 2048)) && nPieces <= (shape.maxInvocations ?? 256)) {
    const rb = t.rb ?? (outDim <= 2048 ? 8 : 16);
    const b: LutXsBuild = {
      bits,
      wg: ceilDiv(nPieces, 32) * 32,
      rb,
      unroll: Math.min(rb, t.unroll ?? 4),
      prologue,
    };
    if (b.wg % b.rb !== 0 || b.rb % b.unroll !== 0) {
      throw new Error(`Cannot plan matmul_lut x-stationary GEMV: need wg % rb = 0 and rb % unroll = 0`);
    }
    return [{
      shader: { path: "xs", ...b },
      constants: acc,
      workgroups: ceilDiv(outDim, b.rb),
      row0: 0,
      rows: 1,
      workgroupBytes: lutXsWorkgroupBytes(b),
      invocations: b.wg,
      tilesN: 0,
    }];
  }
  const steps: MatmulLutStep[] = [];
  for (let row0 = 0; row0 < rows; row0 += LUT_GEMV_MAX_ROWS) {
    const n = Math.min(LUT_GEMV_MAX_ROWS, rows - row0);
    const b = { ...gemvBuild(t, bits, n, outDim), prologue };
    steps.push({
      shader: { path: "gemv", ...b },
      constants: acc,
      workgroups: ceilDiv(outDim, gemvRowTile(b)),
      row0,
      rows: n,
      workgroupBytes: gemvWorkgroupBytes(b),
      invocations: 32 * b.rw * b.ks,
      tilesN: 0,
    });
  }
  return steps;
}

/**
 * The int8 GEMV, with the affine q8 GEMV's launch shape (matmul_affine_plan.ts `planQ8`: a lane per up to
 * four pieces of K, 16 output rows per workgroup, fewer when that leaves under 256 workgroups); chunk tables
 * where they fit the device's workgroup memory at that RB (at 8B shapes they fit the H100's 48 KiB, not
 * always lavapipe's 32), else byte-shifted copies, else half the rows. Untimed on the H100 so far.
 */
function planQ8Gemv(t: LutTune, acc: Record<string, number>, shape: LutShape): MatmulLutStep {
  const { rows, bits, inDim } = shape;
  const outDims = [shape.outDim, ...(shape.moreOutDims ?? [])];
  const nPieces = ceilDiv(inDim, 32);
  const wg = Math.min(256, Math.max(32, ceilDiv(nPieces, 32) * 32));
  const total = outDims.reduce((a, b) => a + b, 0);
  const gather = inDim % 32 !== 0;
  const build = (rb: number, chunks: boolean): LutQ8GemvBuild => ({
    bits,
    rows,
    wg,
    pieces: ceilDiv(nPieces, wg),
    rb,
    unroll: Math.min(rb, t.unroll ?? (ceilDiv(nPieces, wg) * rows > 1 ? 4 : 8)),
    gather,
    prologue: shape.prologue ?? "none",
    mats: outDims.length,
    chunks,
  });
  const tables = t.q8Chunks === undefined ? [true, false] : [t.q8Chunks];
  for (let rb = t.rb ?? [16, 8].find((n) => ceilDiv(total, n) >= 256) ?? 4; rb >= 1; rb /= 2) {
    for (const chunks of tables) {
      const b = build(rb, chunks);
      if (lutQ8GemvWorkgroupBytes(b) > (shape.maxWorkgroupBytes ?? 32768)) continue;
      if (wg % b.rb !== 0 || b.rb % b.unroll !== 0) {
        throw new Error(`Cannot plan matmul_lut int8 GEMV: need wg ${wg} % rb ${b.rb} = 0, rb % unroll = 0`);
      }
      return {
        shader: { path: "q8gemv", ...b },
        constants: { ...acc, ...(gather ? { PERM: 0 } : {}) },
        workgroups: outDims.reduce((n, d) => n + ceilDiv(d, rb), 0),
        row0: 0,
        rows,
        workgroupBytes: lutQ8GemvWorkgroupBytes(b),
        invocations: wg,
        tilesN: 0,
      };
    }
  }
  throw new Error(`Cannot plan matmul_lut int8 GEMV: no build fits ${shape.maxWorkgroupBytes} bytes`);
}

/**
 * The batched decode path: dispatches of up to ROW_LANES_MAX_ROWS.lut rows, with the LUT lane defaults
 * (row_lanes_wgsl.ts `rowLanesFor`).
 */
function planRows(t: LutTune, acc: Record<string, number>, shape: LutShape): MatmulLutStep[] {
  const perDispatch = t.mm?.rows ?? ROW_LANES_MAX_ROWS.lut;
  const steps: MatmulLutStep[] = [];
  for (let row0 = 0; row0 < shape.rows; row0 += perDispatch) {
    const n = Math.min(perDispatch, shape.rows - row0);
    const b: LutRowsBuild = { ...rowLanesFor(n, "lut", t.mm), bits: shape.bits };
    steps.push({
      shader: { path: "rows", ...b },
      constants: acc,
      workgroups: ceilDiv(shape.outDim, rowLanesOutputsPerWorkgroup(b)),
      row0,
      rows: n,
      workgroupBytes: lutRowsWorkgroupBytes(b),
      invocations: rowLanesWorkgroupSize(b),
      tilesN: 0,
    });
  }
  return steps;
}

/**
 * The int8 batched path's main dispatches (matmul_lut.ts adds the prep pass): up to ROW_LANES_MAX_ROWS.lutq8 rows
 * each, with the "lutq8" lane defaults (row_lanes_wgsl.ts `rowLanesFor`).
 */
export function planLutQ8mm(spec: MatmulLutSpec, shape: LutShape): MatmulLutStep[] {
  const t = spec.tune ?? {};
  const perDispatch = t.mm?.rows ?? ROW_LANES_MAX_ROWS.lutq8;
  const steps: MatmulLutStep[] = [];
  for (let row0 = 0; row0 < shape.rows; row0 += perDispatch) {
    const n = Math.min(perDispatch, shape.rows - row0);
    const lanes = rowLanesFor(n, "lutq8", t.mm, shape.outDim);
    const build = (chunks: boolean): LutQ8mmBuild => ({
      ...lanes,
      bits: shape.bits,
      ...(chunks ? { chunks } : {}),
      ...(t.q8Prefetch ? { prefetch: t.q8Prefetch, unroll: 1 } : {}),
    });
    // Chunk tables took 25–38 % less time on the H100 (BENCHMARKS.md, "Serving under load", eleventh session);
    // where their 2^(chunk bits) entries per output do not fit (lavapipe's 32 KiB at 64 rows), the
    // byte-shifted copies give the same bits.
    let b = build(t.q8Chunks ?? true);
    if (t.q8Chunks === undefined && lutQ8mmWorkgroupBytes(b) > (shape.maxWorkgroupBytes ?? 32768)) {
      b = build(false);
    }
    steps.push({
      shader: { path: "q8mm", ...b },
      constants: { ACC: spec.accumulate ? 1 : 0 },
      workgroups: ceilDiv(shape.outDim, rowLanesOutputsPerWorkgroup(b)),
      row0,
      rows: n,
      workgroupBytes: lutQ8mmWorkgroupBytes(b),
      invocations: rowLanesWorkgroupSize(b),
      tilesN: 0,
    });
  }
  return steps;
}

/**
 * Builds the WGSL of one path (the GEMV is unrolled by TypeScript over bits, rows, NR and pieces; the
 * GEMM takes bits and tiles as `override` constants, see {@link planMatmulLut}).
 * @param spec the path and, for the GEMV, its build
 * @returns WGSL source with entry point `main`
 */
export function matmulLutShader(spec: LutShaderSpec): string {
  if (spec.path === "q8mm") return lutQ8mmWgsl(spec);
  if (spec.path === "q8gemv") return lutQ8GemvWgsl(spec);
  if (spec.path === "xs") return lutXsWgsl(spec, LUT_PARAMS_WGSL);
  if (spec.path === "rows") return lutRowsWgsl(spec);
  if (spec.path === "gemm") return gemmCoreLutWgsl(spec);
  return gemvWgsl(spec);
}

/** The GEMM on the shared core: 128×128 tiles (shorter for few rows), LUTs in the tiles' type. */
function planCoreGemm(
  t: LutTune,
  acc: Record<string, number>,
  shape: LutShape,
  math: GemmMath,
): MatmulLutStep {
  const { rows, bits, outDim } = shape;
  const tm = t.tm ?? (rows <= 32 ? 32 : rows <= 64 ? 64 : 128);
  const tn = t.tn ?? 128;
  const lutBytes = (math === "f16" ? 2 : 4) * 16 * tn;
  const { tk, pipe } = gemmStaging(t, { tm, tn }, math, shape.maxWorkgroupBytes ?? 32768, {
    extraBytes: lutBytes,
    pipelined: GEMM_DEFAULTS.pipelined.lut,
  });
  if (tm % 8 !== 0 || tn % 32 !== 0 || (tk !== 16 && tk !== 32)) {
    throw new Error(
      `Cannot plan matmul_lut core GEMM: tiles ${tm}×${tn}×${tk} (tm % 8, tn % 32, tk 16 or 32)`,
    );
  }
  const tilesN = ceilDiv(outDim, tn);
  return {
    shader: { path: "gemm", vec: shape.inDim % 4 === 0, math, tk, ...(pipe ? { pipe } : {}) },
    constants: { ...acc, BITS: bits, TM: tm, TN: tn },
    workgroups: ceilDiv(rows, tm) * tilesN,
    row0: 0,
    rows,
    workgroupBytes: lutBytes + gemmWorkgroupBytes({ tm, tn, tk }, math, pipe !== undefined),
    invocations: (tm / 8) * (tn / 8),
    tilesN,
  };
}
