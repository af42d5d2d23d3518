/**
 * Fused dequantize-matmul for affine-quantized Linear weights (GPTQ / LeanQuant_aff / AutoGPTQ):
 *   Q[o, c] = scale[o, g(c)] · (code[o, c] − zero[o, g(c)])
 *   y[r, yColOffset + o] (+)= Σ_c x[xRowOffset + r, c] · Q[o, c]      (f32 accumulation)
 * The dense matrix is never materialised. Same argument conventions and paths as matmul.ts; the planner
 * is matmul_affine_plan.ts, the WGSL is built in matmul_affine_wgsl.ts, matmul_affine_q8_wgsl.ts and
 * matmul_affine_q8mm_wgsl.ts.
 * - q8 GEMV (rows ≤ 2, decode, the default): int8 activations and `dot4I8Packed`, optionally with the
 *   preceding RMSNorm or SiLU·mul and up to three matrices sharing x in one dispatch (q8 WGSL header).
 * - Batched q8 path (`path: "gemv"` with q8 activations: every row of the batched engine): a prep pass
 *   quantizes each row once (with the same prologues), then dispatches of up to 64 rows read each code once;
 *   a row's sums never depend on the rows of its dispatch (fixed K split).
 * - f32 GEMV (rows ≤ 8, or `activations: "f32"`): TPR invocations split K for NR output rows, one 32-column
 *   piece per invocation per K step; each K step's activations are staged in workgroup memory
 *   (double-buffered, coalesced) and reused for the NR rows; codes become floats with a mantissa trick
 *   instead of int→float conversions; f32 accumulation and a workgroup reduction.
 * - Tiled GEMM (rows > 8, prefill): the dense GEMM's register-tiled core (gemm_core_wgsl.ts, 8×8 per
 *   invocation); each K step of W is dequantized once into workgroup memory.
 *
 * Kernel layout ({@link AffinePacked}, produced by quant/pack_affine.ts):
 * - Columns are in *kernel order*. Without act-order it is the original order. With a g_idx whose groups
 *   are not contiguous, the packer sorts columns by group (`perm[j]` = original column of kernel column
 *   j), so group g is kernel columns [g·groupSize, (g+1)·groupSize) and the kernel never looks a group
 *   up per column. The activations must then be read through the same permutation: the GEMV and GEMM,
 *   which stream contiguous vec4s, run a small prep dispatch first that writes the gathered rows,
 *   zero-padded to whole pieces, to a scratch buffer owned by the bound kernel (rows · inDim floats, against outDim · inDim · b/8
 *   bytes of codes). The same prep pads rows when inDim % 32 ≠ 0 (no real model has that).
 *   TODO(lead): q/k/v (and gate/up) share one act-order permutation; a caller could gather once.
 * - Codes: each row is one little-endian bit stream of b-bit codes (kernel column j at bit j·b; 3-bit
 *   codes straddle words, 32 codes in 3 words, as in AutoGPTQ), padded with zero codes to a multiple of
 *   32 columns. A 32-column "piece" is b words: one vec4 (4-bit), one vec2 (2-bit), three u32 (3-bit).
 *   GEMV lanes take consecutive pieces of a row, so a warp's loads are contiguous.
 * - Scale and zero: one u32 per (row, group), f16 scale in the low half and f16 zero in the high half,
 *   decoded with unpack2x16float (no shader-f16 needed). Group sizes are multiples of 32 (so a piece
 *   lies in one group) or the whole row.
 * Activations past inDim are zero (prep pass or GEMM bounds checks), so the padding codes add nothing.
 */
import {
  type BindingKind,
  ceilDiv,
  createStorage,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  type ParamField,
  type PipelineSpec,
  sequence,
  sharedScratch,
  singleDispatch,
  uniformParams,
  uploadStorage,
} from "../core/mod.ts";
import { AFFINE_PARAMS_FIELDS, PREP_WGSL } from "./matmul_affine_wgsl.ts";
import {
  AFFINE_BATCH_ROWS,
  affineBatchedQ8,
  type AffineDims,
  type MatmulAffinePlan,
  matmulAffineShader,
  type MatmulAffineSpec,
  planMatmulAffine,
} from "./matmul_affine_plan.ts";
import { Q8MM_VEC4_PER_PIECE, type Q8PrepBuild, q8PrepWgsl } from "./matmul_affine_q8mm_wgsl.ts";
import { ROW_LANES_MAX_ROWS, rowLanesOutputsPerWorkgroup } from "./row_lanes_wgsl.ts";

/** An affine-quantized (outDim, inDim) weight in the kernel's layout, on the host. */
export interface AffinePacked {
  bits: 2 | 3 | 4;
  outDim: number;
  inDim: number;
  /** Columns per group in kernel order, a multiple of 32; 0 means one group per row. */
  groupSize: number;
  /** groupSize ? ceil(inDim / groupSize) : 1 */
  nGroups: number;
  /** codes: (outDim, rowWords) u32, rowWords = ceil(inDim / 32) · bits; row o is a little-endian bit stream,
   * kernel column j at bits [j·bits, (j+1)·bits), zero-padded to a multiple of 32 columns */
  codes: Uint32Array;
  /** scaleZero: (outDim, nGroups) u32; bits 0..15 f16 scale, bits 16..31 f16 zero; q = scale·(code − zero) */
  scaleZero: Uint32Array;
  /** perm: (inDim) u32, original column of kernel column j; absent when kernel order is the original */
  perm?: Uint32Array;
}

/** {@link AffinePacked} uploaded: the same fields with buffers for the arrays. */
export interface AffineWeights extends AffineDims {
  nGroups: number;
  /** codes: (outDim, ceil(inDim/32)·bits) u32 bit streams */
  codes: GPUBuffer;
  /** scaleZero: (outDim, nGroups) u32 f16 pairs */
  scaleZero: GPUBuffer;
  /** perm: (inDim) u32, or null */
  perm: GPUBuffer | null;
}

/** u32 words per row of codes. */
export function affineRowWords(bits: number, inDim: number): number {
  return ceilDiv(inDim, 32) * bits;
}

/**
 * Uploads a packed weight.
 * @param gpu the device
 * @param packed the host layout from quant/pack_affine.ts
 * @param label debug label prefix
 */
export function uploadAffine(gpu: Gpu, packed: AffinePacked, label: string): AffineWeights {
  const { bits, outDim, inDim, groupSize, nGroups } = packed;
  return {
    bits,
    outDim,
    inDim,
    groupSize,
    nGroups,
    codes: uploadStorage(gpu, packed.codes, `${label}.codes`),
    scaleZero: uploadStorage(gpu, packed.scaleZero, `${label}.scaleZero`),
    perm: packed.perm ? uploadStorage(gpu, packed.perm, `${label}.perm`) : null,
  };
}

export interface MatmulAffineArgs {
  /** x: (xRowOffset + rows, inDim) f32, original column order */
  x: GPUBuffer;
  w: AffineWeights;
  /** y: (rows, yStride) f32; output o lands in column yColOffset + o. Must not be x. */
  y: GPUBuffer;
  rows: number;
  /** First row of x to read (default 0). */
  xRowOffset?: number;
  /** Row stride of y in elements (default outDim). */
  yStride?: number;
  /** First column of y written (default 0), so row panels of one weight fill one y. */
  yColOffset?: number;
  /** Rows of y (and of every `more` y) before the first row written (default 0). */
  yRowOffset?: number;
  /**
   * RMSNorm x first (y = norm(x)·Qᵀ): only the q8 GEMV has this prologue ({@link affineHasPrologue});
   * weight (inDim) f32 in original column order.
   */
  norm?: { weight: GPUBuffer; eps: number };
  /** x is a gate: y = (silu(x)·up)·Qᵀ, up shaped like x (q8 GEMV only, like `norm`; not with `norm`). */
  siluMulUp?: GPUBuffer;
  /**
   * Up to two more weights applied to the same x (and prologue) in the same dispatch, each into its own
   * y (rows, outDim) — q/k/v or gate/up in one q8 GEMV. They must match `w`'s bits, inDim and groups and
   * share its perm buffer (or have none); q8 GEMV only.
   */
  more?: { w: AffineWeights; y: GPUBuffer }[];
}

/**
 * Builds the affine matmul kernel for one epilogue.
 * @param gpu the device
 * @param spec accumulation and optional tile overrides
 * @returns a kernel whose `bind` checks shapes, picks GEMV or GEMM and fixes the bind groups
 * @example
 * ```ts ignore
 * const w = uploadAffine(gpu, packAffine(quantized, { groupSize: 128 }), "layers.0.mlp.down_proj");
 * const down = createMatmulAffine(gpu, { accumulate: true }).bind({ x: act, w, y: hidden, rows: 1 });
 * down.encode(pass);
 * ```
 */
export function createMatmulAffine(gpu: Gpu, spec: MatmulAffineSpec): Kernel<MatmulAffineArgs> {
  const kernel: Kernel<MatmulAffineArgs> = {
    bind(args: MatmulAffineArgs): Encodable {
      const { x, w, y, rows, xRowOffset = 0, yStride = w.outDim, yColOffset = 0, yRowOffset = 0 } = args;
      checkArgs(gpu, { ...args, xRowOffset, yStride, yColOffset, yRowOffset });
      if (args.norm && args.siluMulUp) {
        throw new Error("Cannot bind matmul_affine: norm and siluMulUp together");
      }
      if (affineBatchedQ8(spec)) return bindBatchedQ8(gpu, spec, { ...args, xRowOffset, yRowOffset });
      // `path: "gemv"` with f32 activations: the f32 GEMV over batches of rows (same kernel per row).
      if (spec.path === "gemv" && rows > AFFINE_BATCH_ROWS) {
        const batches: Encodable[] = [];
        for (let r0 = 0; r0 < rows; r0 += AFFINE_BATCH_ROWS) {
          const n = Math.min(AFFINE_BATCH_ROWS, rows - r0);
          batches.push(
            kernel.bind({ ...args, rows: n, xRowOffset: xRowOffset + r0, yRowOffset: yRowOffset + r0 }),
          );
        }
        return sequence(batches);
      }
      const shape = {
        ...w,
        rows,
        hasPerm: w.perm !== null,
        maxWorkgroupBytes: gpu.maxWorkgroupStorageBytes,
        hasF16: gpu.hasF16,
        prologue: args.norm ? "norm" as const : args.siluMulUp ? "siluMul" as const : "none" as const,
        moreOutDims: (args.more ?? []).map((m) => m.w.outDim),
      };
      const plan = planMatmulAffine(spec, shape);
      checkWorkgroupBytes(gpu, plan);
      const gather = plan.shader.path === "q8" && plan.shader.gather;
      const nPieces = ceilDiv(w.inDim, 32);
      const xp = plan.prep ? createStorage(gpu, rows * nPieces * 32 * 4, "matmul_affine xp") : null;
      const extra6 = args.norm?.weight ?? args.siluMulUp;
      const more = args.more ?? [];
      checkMore(w, rows + yRowOffset, more);
      const needsPerm = xp || gather || extra6 || more.length > 0;
      const perm = w.perm ?? (needsPerm ? createStorage(gpu, 4, "matmul_affine no perm") : null);
      const rb = plan.shader.path === "q8" ? plan.shader.rb : 1;
      const params = affineParams(gpu, {
        rows,
        inDim: w.inDim,
        outDim: w.outDim,
        xRowOffset,
        yStride,
        yColOffset,
        rowWords: affineRowWords(w.bits, w.inDim),
        nGroups: w.nGroups,
        nPieces,
        xBase: xp ? 0 : xRowOffset * w.inDim,
        xStride: xp ? nPieces * 32 : w.inDim,
        tilesN: plan.tilesN,
        normEps: args.norm?.eps ?? 0,
        ...mergedMatrixParams([w, ...more.map((m) => m.w)].map((mw) => mw.outDim), rb),
        yRowOffset,
      });
      const steps: Encodable[] = [];
      if (xp && perm) {
        const prep = { name: "matmul_affine_prep", code: PREP_WGSL, constants: { PERM: w.perm ? 1 : 0 } };
        steps.push(step(gpu, prep, [params, x, perm], xp, ceilDiv(rows * nPieces * 32, 256)));
      }
      const main = {
        name: `matmul_affine_${plan.shader.path}`,
        code: matmulAffineShader(plan.shader),
        constants: plan.constants,
        spec: plan.shader,
      };
      const inputs = [params, xp ?? x, w.codes, w.scaleZero];
      // Bindings 5 (perm), 6 (norm weight or up) and 7.. (more matrices) are positional: dummies hold the
      // unused ones before the last.
      const extras: [GPUBuffer, BindingKind][] = [];
      if ((gather || extra6 || more.length) && perm) extras.push([perm, "read-only-storage"]);
      if (extra6 || more.length) extras.push([extra6 ?? perm!, "read-only-storage"]);
      for (const m of more) {
        extras.push([m.w.codes, "read-only-storage"], [m.w.scaleZero, "read-only-storage"], [m.y, "storage"]);
      }
      steps.push(step(gpu, main, inputs, y, plan.workgroups, extras));
      return sequence(steps);
    },
  };
  return kernel;
}

function checkWorkgroupBytes(gpu: Gpu, plan: MatmulAffinePlan): void {
  if (plan.workgroupBytes > gpu.maxWorkgroupStorageBytes) {
    throw new Error(
      `Cannot bind matmul_affine ${JSON.stringify(plan.shader)}: needs ${plan.workgroupBytes} bytes of ` +
        `workgroup memory, the device allows ${gpu.maxWorkgroupStorageBytes}; lower tpr or rows`,
    );
  }
}

/**
 * The uniform block of one dispatch of the affine kernels' params (also the LUT int8 kernels', which share
 * them): the fields it sets, zero elsewhere.
 */
export function affineParams(
  gpu: Gpu,
  values: Partial<Record<(typeof AFFINE_PARAMS_FIELDS)[number], number>>,
  label = "matmul_affine params",
) {
  return uniformParams(
    gpu,
    AFFINE_PARAMS_FIELDS.map((f): ParamField => [f === "normEps" ? "f32" : "u32", values[f] ?? 0]),
    label,
  );
}

/**
 * The params of the matrices a dispatch serves after the first (q/k/v, gate/up): their widths and the first
 * workgroup of each when a workgroup owns `perWorkgroup` outputs.
 */
export function mergedMatrixParams(
  outDims: readonly number[],
  perWorkgroup: number,
): Record<"outDim1" | "outDim2" | "wgStart1" | "wgStart2", number> {
  const starts = [0];
  for (const d of outDims.slice(0, -1)) starts.push(starts[starts.length - 1] + ceilDiv(d, perWorkgroup));
  return {
    outDim1: outDims[1] ?? 0,
    outDim2: outDims[2] ?? 0,
    wgStart1: starts[1] ?? 0,
    wgStart2: starts[2] ?? 0,
  };
}

/**
 * The batched q8 path (`path: "gemv"`, q8 activations): one prep pass quantizes every row (with the
 * prologue) into a scratch shared by all such binds on the device, then main dispatches of up to
 * ROW_LANES_MAX_ROWS.q8 rows each read every weight once (matmul_affine_q8mm_wgsl.ts).
 */
function bindBatchedQ8(
  gpu: Gpu,
  spec: MatmulAffineSpec,
  args: MatmulAffineArgs & { xRowOffset: number; yRowOffset: number },
): Encodable {
  const { x, w, y, rows, xRowOffset, yRowOffset } = args;
  const more = args.more ?? [];
  checkMore(w, rows + yRowOffset, more);
  const nPieces = ceilDiv(w.inDim, 32);
  const { prep, xq } = bindQ8Prep(gpu, {
    x,
    rows,
    inDim: w.inDim,
    xRowOffset,
    order: w.bits,
    perm: w.perm,
    ...(args.norm ? { norm: args.norm } : {}),
    ...(args.siluMulUp ? { siluMulUp: args.siluMulUp } : {}),
  });
  const steps = [prep];
  const shape = { ...w, hasPerm: w.perm !== null, moreOutDims: more.map((m) => m.w.outDim) };
  const perDispatch = spec.tune?.mm?.rows ?? ROW_LANES_MAX_ROWS.q8;
  for (let r0 = 0; r0 < rows; r0 += perDispatch) {
    const plan = planMatmulAffine(spec, { ...shape, rows: Math.min(perDispatch, rows - r0) });
    checkWorkgroupBytes(gpu, plan);
    if (plan.shader.path !== "q8mm") {
      throw new Error(`Cannot bind the batched q8 path as ${plan.shader.path}`);
    }
    const perWorkgroup = rowLanesOutputsPerWorkgroup(plan.shader);
    const params = affineParams(gpu, {
      rows: plan.shader.rows,
      inDim: w.inDim,
      outDim: w.outDim,
      yStride: args.yStride ?? w.outDim,
      yColOffset: args.yColOffset ?? 0,
      nGroups: w.nGroups,
      nPieces,
      xBase: r0,
      ...mergedMatrixParams([w, ...more.map((m) => m.w)].map((mw) => mw.outDim), perWorkgroup),
      yRowOffset: yRowOffset + r0,
    });
    const main = {
      name: "matmul_affine_q8mm",
      code: matmulAffineShader(plan.shader),
      constants: plan.constants,
      spec: plan.shader,
    };
    const extras = more.flatMap((m): [GPUBuffer, BindingKind][] => [
      [m.w.codes, "read-only-storage"],
      [m.w.scaleZero, "read-only-storage"],
      [m.y, "storage"],
    ]);
    steps.push(step(gpu, main, [params, xq, w.codes, w.scaleZero], y, plan.workgroups, extras));
  }
  return sequence(steps);
}

/** What the q8 prep pass reads: {@link bindQ8Prep}. */
export interface Q8PrepArgs {
  /** x: (xRowOffset + rows, inDim) f32 */
  x: GPUBuffer;
  rows: number;
  inDim: number;
  xRowOffset: number;
  /** the element order of the dot4 operands (Q8PrepBuild.bits): the main pass's code layout decides it */
  order: 2 | 3 | 4;
  /** kernel column j reads x column perm[j] (act-order), or null */
  perm: GPUBuffer | null;
  norm?: { weight: GPUBuffer; eps: number };
  siluMulUp?: GPUBuffer;
}

/**
 * The prep pass of the batched q8 paths (affine here, LUT in matmul_lut.ts): quantizes every row, after the
 * prologue, to int8 per 32 columns into a scratch shared by all such binds on the device
 * (matmul_affine_q8mm_wgsl.ts `q8PrepWgsl`). Returns the dispatch and the scratch, rows from 0.
 */
export function bindQ8Prep(gpu: Gpu, a: Q8PrepArgs): { prep: Encodable; xq: GPUBuffer } {
  const nPieces = ceilDiv(a.inDim, 32);
  const gather = a.perm !== null || a.inDim % 32 !== 0;
  const prologue = a.norm ? "norm" as const : a.siluMulUp ? "siluMul" as const : "none" as const;
  const xq = sharedScratch(gpu, "matmul q8 activations", a.rows * nPieces * Q8MM_VEC4_PER_PIECE * 16);
  const dummy = sharedScratch(gpu, "matmul q8 prep dummy", 4); // for the unused bindings
  const build: Q8PrepBuild = { bits: a.order, gather, prologue };
  const params = affineParams(gpu, {
    rows: a.rows,
    inDim: a.inDim,
    nPieces,
    xBase: a.xRowOffset * a.inDim,
    xStride: a.inDim,
    normEps: a.norm?.eps ?? 0,
  });
  const prep = step(
    gpu,
    {
      name: "matmul_q8prep",
      code: q8PrepWgsl(build),
      constants: gather ? { PERM: a.perm ? 1 : 0 } : {},
      spec: build,
    },
    [params, a.x, a.perm ?? dummy, a.norm?.weight ?? a.siluMulUp ?? dummy],
    xq,
    a.rows,
  );
  return { prep, xq };
}

/**
 * A pipeline bound to `[uniform, ...read-only inputs, read-write output, ...read-only extras]`, the
 * binding order every shader of this kernel declares.
 */
function step(
  gpu: Gpu,
  p: Omit<PipelineSpec, "bindings">,
  inputs: GPUBuffer[],
  output: GPUBuffer,
  workgroups: number,
  extras: [GPUBuffer, BindingKind][] = [],
): Encodable {
  const bindings: BindingKind[] = [
    "uniform",
    ...inputs.slice(1).map((): BindingKind => "read-only-storage"),
    "storage",
    ...extras.map(([, kind]) => kind),
  ];
  const pipeline = getPipeline(gpu, { ...p, bindings });
  const buffers = [...inputs, output, ...extras.map(([b]) => b)];
  const group = gpu.device.createBindGroup({
    label: p.name,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return singleDispatch(pipeline, group, dispatch2d(gpu, workgroups));
}

/** The further matrices of one q8 dispatch must look like the first and share its perm. */
function checkMore(w: AffineWeights, rows: number, more: { w: AffineWeights; y: GPUBuffer }[]): void {
  if (more.length > 2) {
    throw new Error(`Cannot bind matmul_affine: at most 2 more matrices, got ${more.length}`);
  }
  for (const [i, m] of more.entries()) {
    const fail = (msg: string) => {
      throw new Error(`Cannot bind matmul_affine with more[${i}] (${m.w.outDim}×${m.w.inDim}): ${msg}`);
    };
    if (m.w.bits !== w.bits || m.w.inDim !== w.inDim || m.w.groupSize !== w.groupSize) {
      fail(`bits, inDim and groupSize must equal the first matrix's (${w.bits}, ${w.inDim}, ${w.groupSize})`);
    }
    if (m.w.perm !== w.perm) fail("it must share the first matrix's perm buffer (or neither has one)");
    if (m.y.size < rows * m.w.outDim * 4) {
      fail(`its y holds ${m.y.size} bytes, needs ${rows * m.w.outDim * 4}`);
    }
  }
}

/** Load-time shape and size checks; throws a message naming the offending value. */
function checkArgs(
  gpu: Gpu,
  a:
    & Required<Omit<MatmulAffineArgs, "norm" | "siluMulUp" | "more">>
    & Pick<MatmulAffineArgs, "norm" | "siluMulUp">,
): void {
  const { w } = a;
  const fail = (msg: string) => {
    throw new Error(
      `Cannot bind matmul_affine (${a.rows}×${w.inDim} · ${w.outDim}×${w.inDim}ᵀ, ${w.bits}-bit): ${msg}`,
    );
  };
  for (const [key, v] of [["rows", a.rows], ["inDim", w.inDim], ["outDim", w.outDim]] as const) {
    if (!Number.isInteger(v) || v < 1) fail(`${key} must be a positive integer, got ${v}`);
  }
  for (const key of ["xRowOffset", "yStride", "yColOffset", "yRowOffset"] as const) {
    if (!Number.isInteger(a[key]) || a[key] < 0) fail(`${key} must be a non-negative integer, got ${a[key]}`);
  }
  if (![2, 3, 4].includes(w.bits)) fail(`bits must be 2, 3 or 4, got ${w.bits}`);
  if (w.groupSize % 32 !== 0 || w.groupSize < 0) {
    fail(`groupSize must be 0 or a multiple of 32, got ${w.groupSize}`);
  }
  const nGroups = w.groupSize ? ceilDiv(w.inDim, w.groupSize) : 1;
  if (w.nGroups !== nGroups) fail(`nGroups must be ${nGroups}, got ${w.nGroups}`);
  if (a.yStride < a.yColOffset + w.outDim) {
    fail(`yStride ${a.yStride} is less than yColOffset + outDim = ${a.yColOffset + w.outDim}`);
  }
  const need: [string, GPUBuffer | null, number][] = [
    ["x", a.x, (a.xRowOffset + a.rows) * w.inDim * 4],
    ["codes", w.codes, w.outDim * affineRowWords(w.bits, w.inDim) * 4],
    ["scaleZero", w.scaleZero, w.outDim * w.nGroups * 4],
    ["perm", w.perm, w.inDim * 4],
    ["norm weight", a.norm?.weight ?? null, w.inDim * 4],
    ["siluMulUp", a.siluMulUp ?? null, (a.xRowOffset + a.rows) * w.inDim * 4],
    ["y", a.y, ((a.yRowOffset + a.rows - 1) * a.yStride + a.yColOffset + w.outDim) * 4],
  ];
  for (const [name, buffer, bytes] of need) {
    if (!buffer) continue;
    if (buffer.size < bytes) fail(`buffer "${name}" holds ${buffer.size} bytes, needs ${bytes}`);
    if (buffer.size > gpu.maxBindingBytes) {
      fail(
        `buffer "${name}" (${buffer.size} bytes) exceeds the ${gpu.maxBindingBytes}-byte binding limit; ` +
          `split the weight into row panels`,
      );
    }
  }
}
