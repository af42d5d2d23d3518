/**
 * Fused dequantize-matmul for non-uniform (LUT) quantized Linear weights (LeanQuant nu, docs/quantization.md §3):
 *   Q[o, c] = lut[o, code[o, c]]
 *   y[r, yColOffset + o] (+)= Σ_c x[xRowOffset + r, c] · Q[o, c]      (f32 accumulation)
 * The dense matrix is never materialised. Same argument conventions as matmul.ts and matmul_affine.ts: a
 * GEMV for decode (rows ≤ 8; 9–64 rows run as several 8-row GEMV dispatches, as in matmul.ts; one row may
 * run x-stationary) and a tiled GEMM for prefill. With q8 activations, one or two unpinned rows take the
 * int8 GEMV (matmul_lut_q8_wgsl.ts) and pinned decode rows the int8 batched path (matmul_lut_q8mm_wgsl.ts).
 * Planner: matmul_lut_plan.ts; shaders: matmul_lut_wgsl.ts, matmul_lut_xs_wgsl.ts and the int8 ones.
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
import {
  type BindingKind,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  type ParamField,
  sequence,
  sharedScratch,
  singleDispatch,
  uniformParams,
  uploadStorage,
} from "../core/mod.ts";
import { LUT_PARAMS_FIELDS, type LutPrologue } from "./matmul_lut_wgsl.ts";
import {
  lutBatchedQ8,
  type LutDims,
  matmulLutShader,
  type MatmulLutSpec,
  type MatmulLutStep,
  planLutQ8mm,
  planMatmulLut,
} from "./matmul_lut_plan.ts";
import { affineParams, bindQ8Prep, mergedMatrixParams } from "./matmul_affine.ts";
import { NATURAL_OPERAND_ORDER } from "./matmul_affine_q8_wgsl.ts";

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
export interface LutWeights extends LutDims {
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
  /** RMSNorm x first, y = norm(x)·Qᵀ (rows ≤ LUT_PROLOGUE_MAX_ROWS); weight (inDim) f32. */
  norm?: { weight: GPUBuffer; eps: number };
  /** x is a gate: y = (silu(x)·up)·Qᵀ, up shaped like x (rows ≤ LUT_PROLOGUE_MAX_ROWS; not with `norm`). */
  siluMulUp?: GPUBuffer;
  /**
   * Further matrices applied to the same x, each into its own y (rows, outDim) (q/k/v, gate/up): the int8
   * paths only, which quantize x once for all of them (the int8 GEMV: at most two more, in one dispatch).
   * Same inDim and bits as `w`.
   */
  more?: { w: LutWeights; y: GPUBuffer }[];
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
      const shape = {
        ...w,
        rows,
        maxInvocations: gpu.maxInvocationsPerWorkgroup,
        prologue,
        hasF16: gpu.hasF16,
        maxWorkgroupBytes: gpu.maxWorkgroupStorageBytes,
      };
      if (lutBatchedQ8(spec)) {
        const { prep, xq } = bindQ8Prep(gpu, {
          x,
          rows,
          inDim: w.inDim,
          xRowOffset,
          order: NATURAL_OPERAND_ORDER,
          perm: null,
          ...(args.norm ? { norm: args.norm } : {}),
          ...(args.siluMulUp ? { siluMulUp: args.siluMulUp } : {}),
        });
        // The first matrix, then the further ones (y of their own, dense rows), all reading the one xq.
        const targets = [
          { w, y, yStride, yColOffset },
          ...(args.more ?? []).map((m) => {
            checkMore(gpu, args, m);
            return { w: m.w, y: m.y, yStride: m.w.outDim, yColOffset: 0 };
          }),
        ];
        const main = targets.flatMap((t) =>
          planLutQ8mm(spec, { ...shape, outDim: t.w.outDim }).map((step) =>
            bindStep(gpu, step, [xq, t.w.codes, t.w.lut, t.y], { ...args, ...t, xRowOffset: 0 })
          )
        );
        return sequence([prep, ...main]);
      }
      const more = args.more ?? [];
      for (const m of more) checkMore(gpu, args, m);
      const steps = planMatmulLut(spec, { ...shape, moreOutDims: more.map((m) => m.w.outDim) });
      const a = { ...args, yStride, yColOffset, xRowOffset };
      const dispatches = steps.map((step) =>
        step.shader.path === "q8gemv"
          ? bindQ8Gemv(gpu, step, a)
          : bindStep(gpu, step, [x, w.codes, w.lut, y, ...(extra ? [extra] : [])], a)
      );
      return sequence(dispatches);
    },
  };
}

/** The bind's arguments with their defaults filled in. */
type BoundArgs = MatmulLutArgs & { yStride: number; yColOffset: number; xRowOffset: number };

/** One planned dispatch bound to `[params, ...buffers]` (the last buffer before any extra is y). */
function bindStep(gpu: Gpu, step: MatmulLutStep, buffers: GPUBuffer[], a: BoundArgs): Encodable {
  checkStep(gpu, step);
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
      ...(buffers.length > 4 ? ["read-only-storage" as const] : []),
    ],
    spec: step.shader,
  });
  const values: Record<(typeof LUT_PARAMS_FIELDS)[number], number> = {
    rows: step.rows,
    inDim: a.w.inDim,
    outDim: a.w.outDim,
    xRowOffset: a.xRowOffset + step.row0,
    yStride: a.yStride,
    yOffset: a.yColOffset + step.row0 * a.yStride,
    nPieces: lutPieces(a.w.inDim),
    tilesN: step.tilesN,
    normEps: a.norm?.eps ?? 0,
  };
  const fields = LUT_PARAMS_FIELDS.map((f): ParamField => [f === "normEps" ? "f32" : "u32", values[f]]);
  const params = uniformParams(gpu, fields, "matmul_lut params");
  const bindGroup = gpu.device.createBindGroup({
    label: "matmul_lut",
    layout: pipeline.getBindGroupLayout(0),
    entries: [params, ...buffers].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, step.workgroups));
}

/** Throws when a planned dispatch needs more workgroup memory or invocations than the device allows. */
function checkStep(gpu: Gpu, step: MatmulLutStep): void {
  if (
    step.workgroupBytes > gpu.maxWorkgroupStorageBytes || step.invocations > gpu.maxInvocationsPerWorkgroup
  ) {
    throw new Error(
      `Cannot bind matmul_lut ${JSON.stringify(step.shader)}: needs ${step.workgroupBytes} bytes of ` +
        `workgroup memory and ${step.invocations} invocations, the device allows ` +
        `${gpu.maxWorkgroupStorageBytes} and ${gpu.maxInvocationsPerWorkgroup}; lower the tiles`,
    );
  }
}

/**
 * The int8 GEMV's dispatch: the affine q8 GEMV's params block and bindings (matmul_lut_q8_wgsl.ts), a dummy
 * word for its perm binding, the further matrices (`more`) from binding 7.
 */
function bindQ8Gemv(gpu: Gpu, step: MatmulLutStep, a: BoundArgs): Encodable {
  if (step.shader.path !== "q8gemv") throw new Error(`Cannot bind ${step.shader.path} as the int8 GEMV`);
  checkStep(gpu, step);
  const b = step.shader;
  const { w } = a;
  const more = a.more ?? [];
  if (more.length > 2) throw new Error(`Cannot bind matmul_lut: at most 2 more matrices, got ${more.length}`);
  const params = affineParams(gpu, {
    rows: step.rows,
    inDim: w.inDim,
    outDim: w.outDim,
    xRowOffset: a.xRowOffset,
    yStride: a.yStride,
    yColOffset: a.yColOffset,
    nPieces: lutPieces(w.inDim),
    xBase: a.xRowOffset * w.inDim,
    xStride: w.inDim,
    normEps: a.norm?.eps ?? 0,
    ...mergedMatrixParams([w, ...more.map((m) => m.w)].map((mw) => mw.outDim), b.rb),
  }, "matmul_lut q8gemv params");
  const dummy = sharedScratch(gpu, "matmul q8 prep dummy", 4);
  const extra = a.norm?.weight ?? a.siluMulUp;
  const ro = "read-only-storage" as const;
  const entries: [GPUBuffer, BindingKind][] = [
    [params, "uniform"],
    [a.x, ro],
    [w.codes, ro],
    [w.lut, ro],
    [a.y, "storage"],
    // bindings 5 (perm) and 6 (norm weight or up) are positional: dummies hold the unused ones before the last
    ...(b.gather || extra || more.length ? [[dummy, ro] as [GPUBuffer, BindingKind]] : []),
    ...(extra || more.length ? [[extra ?? dummy, ro] as [GPUBuffer, BindingKind]] : []),
    ...more.flatMap((m): [GPUBuffer, BindingKind][] => [[m.w.codes, ro], [m.w.lut, ro], [m.y, "storage"]]),
  ];
  const pipeline = getPipeline(gpu, {
    name: "matmul_lut_q8gemv",
    code: matmulLutShader(b),
    constants: step.constants,
    bindings: entries.map(([, kind]) => kind),
    spec: b,
  });
  const bindGroup = gpu.device.createBindGroup({
    label: "matmul_lut_q8gemv",
    layout: pipeline.getBindGroupLayout(0),
    entries: entries.map(([buffer], binding) => ({ binding, resource: { buffer } })),
  });
  return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, step.workgroups));
}

/** A further matrix of one int8 bind must look like the first; its y must hold rows × outDim. */
function checkMore(gpu: Gpu, a: MatmulLutArgs, m: { w: LutWeights; y: GPUBuffer }): void {
  if (m.w.bits !== a.w.bits || m.w.inDim !== a.w.inDim) {
    throw new Error(
      `Cannot bind matmul_lut with a further ${m.w.outDim}×${m.w.inDim} ${m.w.bits}-bit matrix: bits and ` +
        `inDim must equal the first matrix's (${a.w.bits}, ${a.w.inDim})`,
    );
  }
  checkArgs(gpu, { ...a, w: m.w, y: m.y, xRowOffset: a.xRowOffset ?? 0, yStride: m.w.outDim, yColOffset: 0 });
}

/** Load-time shape and size checks; throws a message naming the offending value. */
function checkArgs(
  gpu: Gpu,
  a: Required<Omit<MatmulLutArgs, "norm" | "siluMulUp" | "more">> & Pick<MatmulLutArgs, "norm" | "siluMulUp">,
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
