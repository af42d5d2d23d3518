/**
 * Fused dequantize-matmul for non-uniform (LUT) quantized Linear weights (LeanQuant nu, leanquant.md §3):
 *   Q[o, c] = lut[o, code[o, c]]
 *   y[r, yColOffset + o] (+)= Σ_c x[xRowOffset + r, c] · Q[o, c]      (f32 accumulation)
 * The dense matrix is never materialised. Same argument conventions as matmul.ts and matmul_affine.ts: a
 * GEMV for decode (rows ≤ 8; 9–64 rows run as several 8-row GEMV dispatches, as in matmul.ts) and a
 * tiled GEMM for prefill. Shaders: matmul_lut_wgsl.ts.
 *
 * Kernel layout ({@link LutPacked}, produced by quant/pack_lut.ts):
 * - Columns stay in original order (LeanQuant stores nu codes un-permuted), cut into 32-column
 *   *pieces*. Piece p of row o is `bits` u32 words: the little-endian bit stream of its 32 codes,
 *   column 32p + j at bits [j·bits, (j+1)·bits), 3-bit codes straddling words (no wasted bits), zero
 *   codes past inDim. Because 32·bits bits are exactly `bits` words, piece p of a row is words
 *   [p·bits, (p+1)·bits) of that row's dense on-disk stream (`qcodes`, format leanserve-lut v1).
 * - Rows are stored one after another: codes[(o·nPieces + p)·bits + i], i.e. each row's on-disk stream
 *   padded to whole pieces. The x-stationary GEMV (matmul_lut_xs_wgsl.ts) gives each lane one piece, so
 *   a warp reads one contiguous 512 B (4-bit), 256 B (2-bit) or 384 B (3-bit) run of a row; the
 *   row-per-lane GEMV reads a 16-byte piece of each lane's row per step, whose sector neighbours are the
 *   next step's (L1 hits). Measured on the H100, this layout made both GEMVs faster than an earlier
 *   piece-major one with rows interleaved (4-bit 14336×4096: 33.8 vs 45 µs).
 * - LUT: (outDim, 2^bits / 2) u32, entries 2i and 2i+1 of a row as the low and high f16 of word i
 *   (the on-disk f16 [R, 2^b] bytes as they are), decoded with unpack2x16float (no shader-f16 needed)
 *   and held per row tile in workgroup memory as f32.
 * Activations past inDim are read as zero, so the padding codes add nothing.
 */
import { ceilDiv, dispatch2d, type Encodable, getPipeline, type Gpu, type Kernel } from "./gpu.ts";
import { type ParamField, uniformParams, uploadStorage } from "./buffers.ts";
import {
  GEMM_WGSL,
  gemvRowTile,
  gemvWgsl,
  gemvWorkgroupBytes,
  LUT_PARAMS_FIELDS,
  LUT_PARAMS_WGSL,
  type LutGemvBuild,
  type LutPrologue,
} from "./matmul_lut_wgsl.ts";
import { type LutXsBuild, lutXsWgsl, lutXsWorkgroupBytes } from "./matmul_lut_xs_wgsl.ts";

/** A LUT-quantized (outDim, inDim) weight in the kernel's layout, on the host. */
export interface LutPacked {
  bits: 2 | 3 | 4;
  outDim: number;
  inDim: number;
  /** codes: (outDim, nPieces, bits) u32, nPieces = ceil(inDim / 32); word i of piece p of row o holds
   * bits [32i, 32i + 32) of the stream of codes[o, 32p .. 32p + 31], `bits` bits each, LSB first */
  codes: Uint32Array;
  /** lut: (outDim, 2^bits / 2) u32; bits 0..15 f16 entry 2i, bits 16..31 f16 entry 2i + 1 */
  lut: Uint32Array;
}

/** {@link LutPacked} uploaded: the same fields with buffers for the arrays. */
export interface LutWeights {
  bits: 2 | 3 | 4;
  outDim: number;
  inDim: number;
  /** codes: (outDim, nPieces, bits) u32 */
  codes: GPUBuffer;
  /** lut: (outDim, 2^bits / 2) u32 f16 pairs */
  lut: GPUBuffer;
}

/** 32-column pieces per row. */
export function lutPieces(inDim: number): number {
  return ceilDiv(inDim, 32);
}

/** u32 words of a packed weight's codes. */
export function lutCodeWords(bits: number, outDim: number, inDim: number): number {
  return lutPieces(inDim) * outDim * bits;
}

/**
 * Uploads a packed weight.
 * @param gpu the device
 * @param packed the host layout from quant/pack_lut.ts
 * @param label debug label prefix
 * @returns the weight's buffers and shape
 */
export function uploadLut(gpu: Gpu, packed: LutPacked, label: string): LutWeights {
  const { bits, outDim, inDim } = packed;
  return {
    bits,
    outDim,
    inDim,
    codes: uploadStorage(gpu, packed.codes, `${label}.codes`),
    lut: uploadStorage(gpu, packed.lut, `${label}.lut`),
  };
}

/** What one bound matmul reads and writes (the same shape as matmul_affine.ts's args). */
export interface MatmulLutArgs {
  /** x: (xRowOffset + rows, inDim) f32, original column order */
  x: GPUBuffer;
  w: LutWeights;
  /** y: (rows, yStride) f32; output o lands in column yColOffset + o. Must not be x. */
  y: GPUBuffer;
  rows: number;
  /** First row of x to read (default 0). */
  xRowOffset?: number;
  /** Row stride of y in elements (default outDim). */
  yStride?: number;
  /** First column of y written (default 0), so row panels of one weight fill one y. */
  yColOffset?: number;
  /** RMSNorm x first, y = norm(x)·Qᵀ (rows ≤ {@link LUT_PROLOGUE_MAX_ROWS}); weight (inDim) f32. */
  norm?: { weight: GPUBuffer; eps: number };
  /** x is a gate: y = (silu(x)·up)·Qᵀ, up shaped like x (rows ≤ {@link LUT_PROLOGUE_MAX_ROWS}; not with `norm`). */
  siluMulUp?: GPUBuffer;
}

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
  /** GEMM: output tile (activation rows × output rows; tn a multiple of 32) */
  tm?: number;
  tn?: number;
  /** One-row GEMV: use the x-stationary build when K fits one workgroup (default true) */
  xs?: boolean;
  /** x-stationary build: output rows per workgroup and per unrolled chunk */
  rb?: number;
  unroll?: number;
}

/** What a model asks for: the epilogue, plus optional launch overrides. */
export interface MatmulLutSpec {
  /** y += x·Qᵀ (residual epilogue) instead of y = x·Qᵀ. */
  accumulate: boolean;
  tune?: LutTune;
}

/** Activation rows one GEMV dispatch serves (its registers hold a partial sum for each). */
export const LUT_GEMV_MAX_ROWS = 8;
/** Default {@link LutTune.gemvMaxRows}: matmul.ts measured 8-row GEMV batches beating its GEMM up to 64 rows. */
export const LUT_GEMV_BATCH_MAX_ROWS = 64;

/** Which shader build a dispatch runs. */
export type LutShaderSpec =
  | ({ path: "gemv" } & LutGemvBuild)
  | ({ path: "xs" } & LutXsBuild)
  | { path: "gemm" };

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

/** The weight facts the planner needs. */
export type LutShape = Pick<LutWeights, "bits" | "inDim" | "outDim"> & {
  rows: number;
  /** Work fused into the GEMV's x reads (rows ≤ LUT_PROLOGUE_MAX_ROWS). */
  prologue?: LutPrologue;
  /** The device's invocations per workgroup (default 256): the x-stationary GEMV needs one per piece. */
  maxInvocations?: number;
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
  if (rows > (t.gemvMaxRows ?? LUT_GEMV_BATCH_MAX_ROWS)) {
    if (prologue !== "none") throw new Error(`Cannot plan matmul_lut: the GEMM has no fused ${prologue}`);
    const tm = t.tm ?? (rows <= 32 ? 32 : 64);
    const tn = t.tn ?? 64;
    if (tm % 4 !== 0 || tn % 32 !== 0) {
      throw new Error(`Cannot plan matmul_lut GEMM: tm ${tm} must be a multiple of 4 and tn ${tn} of 32`);
    }
    const tilesN = ceilDiv(outDim, tn);
    return [{
      shader: { path: "gemm" },
      constants: { ...acc, BITS: bits, TM: tm, TN: tn },
      workgroups: ceilDiv(rows, tm) * tilesN,
      row0: 0,
      rows,
      workgroupBytes: 4 * 16 * tn + 32 * (tm / 4 + 1 + tn / 4 + 1) * 16,
      invocations: (tm / 4) * (tn / 4),
      tilesN,
    }];
  }
  const nPieces = lutPieces(shape.inDim);
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
 * Builds the WGSL of one path (the GEMV is unrolled by TypeScript over bits, rows, NR and pieces; the
 * GEMM takes bits and tiles as `override` constants, see {@link planMatmulLut}).
 * @param spec the path and, for the GEMV, its build
 * @returns WGSL source with entry point `main`
 */
export function matmulLutShader(spec: LutShaderSpec): string {
  if (spec.path === "xs") return lutXsWgsl(spec, LUT_PARAMS_WGSL);
  return spec.path === "gemm" ? GEMM_WGSL : gemvWgsl(spec);
}

/**
 * Builds the LUT matmul kernel for one epilogue.
 * @param gpu the device
 * @param spec accumulation and optional tile overrides
 * @returns a kernel whose `bind` checks shapes, plans the dispatches and builds their bind groups once
 * @example
 * ```ts ignore
 * const w = uploadLut(gpu, packLut(quantized), "layers.0.mlp.down_proj");
 * const down = createMatmulLut(gpu, { accumulate: true }).bind({ x: act, w, y: hidden, rows: 1 });
 * down.encode(pass);
 * ```
 */
export function createMatmulLut(gpu: Gpu, spec: MatmulLutSpec): Kernel<MatmulLutArgs> {
  return {
    bind(args: MatmulLutArgs): Encodable {
      const { x, w, y, rows, xRowOffset = 0, yStride = w.outDim, yColOffset = 0 } = args;
      checkArgs(gpu, { ...args, xRowOffset, yStride, yColOffset });
      if (args.norm && args.siluMulUp) throw new Error("Cannot bind matmul_lut: norm and siluMulUp together");
      const extra = args.norm?.weight ?? args.siluMulUp;
      const prologue: LutPrologue = args.norm ? "norm" : args.siluMulUp ? "siluMul" : "none";
      const shape = { ...w, rows, maxInvocations: gpu.maxInvocationsPerWorkgroup, prologue };
      const dispatches = planMatmulLut(spec, shape).map((step) => {
        if (
          step.workgroupBytes > gpu.maxWorkgroupStorageBytes ||
          step.invocations > gpu.maxInvocationsPerWorkgroup
        ) {
          throw new Error(
            `Cannot bind matmul_lut ${JSON.stringify(step.shader)}: needs ${step.workgroupBytes} bytes of ` +
              `workgroup memory and ${step.invocations} invocations, the device allows ` +
              `${gpu.maxWorkgroupStorageBytes} and ${gpu.maxInvocationsPerWorkgroup}; lower the tiles`,
          );
        }
        const pipeline = getPipeline(gpu, {
          name: `matmul_lut_${step.shader.path}`,
          code: matmulLutShader(step.shader),
          constants: step.constants,
          bindings: [
            "uniform",
            "read-only-storage",
            "read-only-storage",
            "read-only-storage",
            "storage",
            ...(extra ? ["read-only-storage" as const] : []),
          ],
          spec: step.shader,
        });
        const values: Record<(typeof LUT_PARAMS_FIELDS)[number], number> = {
          rows: step.rows,
          inDim: w.inDim,
          outDim: w.outDim,
          xRowOffset: xRowOffset + step.row0,
          yStride,
          yOffset: yColOffset + step.row0 * yStride,
          nPieces: lutPieces(w.inDim),
          tilesN: step.tilesN,
          normEps: args.norm?.eps ?? 0,
        };
        const fields = LUT_PARAMS_FIELDS.map((f): ParamField => [f === "normEps" ? "f32" : "u32", values[f]]);
        const params = uniformParams(gpu, fields, "matmul_lut params");
        const bindGroup = gpu.device.createBindGroup({
          label: "matmul_lut",
          layout: pipeline.getBindGroupLayout(0),
          entries: [params, x, w.codes, w.lut, y, ...(extra ? [extra] : [])].map((buffer, binding) => ({
            binding,
            resource: { buffer },
          })),
        });
        return { pipeline, bindGroup, size: dispatch2d(gpu, step.workgroups) };
      });
      return {
        encode(pass) {
          for (const { pipeline, bindGroup, size } of dispatches) {
            pass.setPipeline(pipeline);
            pass.setBindGroup(0, bindGroup);
            pass.dispatchWorkgroups(size[0], size[1]);
          }
        },
      };
    },
  };
}

/** Load-time shape and size checks; throws a message naming the offending value. */
function checkArgs(
  gpu: Gpu,
  a: Required<Omit<MatmulLutArgs, "norm" | "siluMulUp">> & Pick<MatmulLutArgs, "norm" | "siluMulUp">,
): void {
  const { w } = a;
  const fail = (msg: string) => {
    throw new Error(
      `Cannot bind matmul_lut (${a.rows}×${w.inDim} · ${w.outDim}×${w.inDim}ᵀ, ${w.bits}-bit): ${msg}`,
    );
  };
  for (const [key, v] of [["rows", a.rows], ["inDim", w.inDim], ["outDim", w.outDim]] as const) {
    if (!Number.isInteger(v) || v < 1) fail(`${key} must be a positive integer, got ${v}`);
  }
  for (const key of ["xRowOffset", "yStride", "yColOffset"] as const) {
    if (!Number.isInteger(a[key]) || a[key] < 0) fail(`${key} must be a non-negative integer, got ${a[key]}`);
  }
  if (![2, 3, 4].includes(w.bits)) fail(`bits must be 2, 3 or 4, got ${w.bits}`);
  if (a.yStride < a.yColOffset + w.outDim) {
    fail(`yStride ${a.yStride} is less than yColOffset + outDim = ${a.yColOffset + w.outDim}`);
  }
  const need: [string, GPUBuffer, number][] = [
    ["x", a.x, (a.xRowOffset + a.rows) * w.inDim * 4],
    ["codes", w.codes, lutCodeWords(w.bits, w.outDim, w.inDim) * 4],
    ["lut", w.lut, w.outDim * 2 ** w.bits * 2],
    ["y", a.y, ((a.rows - 1) * a.yStride + a.yColOffset + w.outDim) * 4],
    ...(a.norm ? [["norm weight", a.norm.weight, w.inDim * 4] as [string, GPUBuffer, number]] : []),
    ...(a.siluMulUp
      ? [["siluMulUp", a.siluMulUp, (a.xRowOffset + a.rows) * w.inDim * 4] as [string, GPUBuffer, number]]
      : []),
  ];
  for (const [name, buffer, bytes] of need) {
    if (buffer.size < bytes) fail(`buffer "${name}" holds ${buffer.size} bytes, needs ${bytes}`);
    if (buffer.size > gpu.maxBindingBytes) {
      fail(
        `buffer "${name}" (${buffer.size} bytes) exceeds the ${gpu.maxBindingBytes}-byte binding limit; ` +
          `split the weight into row panels`,
      );
    }
  }
}
