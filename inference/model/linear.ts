/**
 * A Linear layer's weights on the GPU and the dispatches that apply it.
 *
 * Weights larger than one storage binding (~2 GiB on an H100, 128 MiB on lavapipe) are split into
 * row panels; each panel is its own buffer and writes its own column range of y.
 */
import {
  createStorage,
  type Encodable,
  f32ToF16Bits,
  type Gpu,
  sequence,
  uploadStorage,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import {
  affineHasPrologue,
  type AffineWeights,
  createMatmul,
  createMatmulAffine,
  createMatmulLut,
  GEMV_MAX_ROWS,
  LUT_GEMV_BATCH_MAX_ROWS,
  LUT_PROLOGUE_MAX_ROWS,
  type LutWeights,
} from "../../kernels/matmul/mod.ts";

/** How dense weights are stored on the GPU. */
export type WeightType = "f32" | "f16";

/** One row panel of a weight matrix. */
export interface WeightPanel {
  /** w: (rows, inDim) row-major; f32, or f16 pairs packed in u32 */
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/** A Linear weight on the GPU: dense, or quantized in one of the fused kernels' layouts. */
export type GpuLinear = DenseLinear | AffineLinear | LutLinear;

/** A dense Linear weight (outDim, inDim), as Hugging Face stores it. */
export interface DenseLinear {
  format: "dense";
  weightType: WeightType;
  outDim: number;
  inDim: number;
  panels: WeightPanel[];
}

/** Affine-quantized weight (codes + per-group f16 scale/zero) in kernels/matmul_affine.ts's layout. */
export interface AffineLinear {
  format: "affine";
  outDim: number;
  inDim: number;
  weights: AffineWeights;
  /**
   * Decode activations (1–2 rows, and every decode row of the engine): "q8" (default) quantizes them to
   * int8 per 32 columns for int8 dot products (kernels/matmul/matmul_affine_q8_wgsl.ts and, batched,
   * matmul_affine_q8mm_wgsl.ts; llama.cpp's q8 activations); "f32" is exact.
   */
  activations?: "q8" | "f32";
}

/** LUT-quantized weight (codes + a per-row f16 table, LeanQuant nu) in kernels/matmul_lut.ts's layout. */
export interface LutLinear {
  format: "lut";
  outDim: number;
  inDim: number;
  weights: LutWeights;
  /**
   * The engine's rows (pinned paths, `pinnedPath`): "q8" takes the int8 batched LUT path (int8 activations
   * per 32 columns and int8 tables per output row, kernels/matmul/matmul_lut_q8mm_wgsl.ts); "f32"
   * (default) the exact f32 kernels.
   */
  activations?: "q8" | "f32";
}

/** Every GPU buffer a linear holds (to size or destroy it). */
export function linearBuffers(l: GpuLinear): GPUBuffer[] {
  if (l.format === "dense") return l.panels.map((p) => p.buffer);
  if (l.format === "lut") return [l.weights.codes, l.weights.lut];
  const w = l.weights;
  return [w.codes, w.scaleZero, ...(w.perm ? [w.perm] : [])];
}

/** Bytes per element of a weight type. */
export function weightBytes(type: WeightType): number {
  return type === "f32" ? 4 : 2;
}

/**
 * Uploads a dense (outDim, inDim) f32 matrix, converting to f16 when asked, in row panels that fit
 * one binding.
 */
export function uploadLinear(
  gpu: Gpu,
  data: Float32Array,
  outDim: number,
  inDim: number,
  { weightType, label, maxBindingBytes = gpu.maxBindingBytes }: {
    weightType: WeightType;
    label: string;
    maxBindingBytes?: number;
  },
): DenseLinear {
  if (data.length !== outDim * inDim) {
    throw new Error(`Cannot upload "${label}": expected ${outDim * inDim} values, got ${data.length}`);
  }
  const rowBytes = inDim * weightBytes(weightType);
  const rowsPerPanel = Math.max(1, Math.floor(maxBindingBytes / rowBytes));
  const panels: WeightPanel[] = [];
  for (let rowStart = 0; rowStart < outDim; rowStart += rowsPerPanel) {
    const rows = Math.min(rowsPerPanel, outDim - rowStart);
    const slice = data.subarray(rowStart * inDim, (rowStart + rows) * inDim);
    const buffer = createStorage(gpu, rows * rowBytes, `${label}[${rowStart}:${rowStart + rows}]`);
    writeBuffer(gpu, buffer, weightType === "f32" ? slice : toF16Pairs(slice));
    panels.push({ buffer, rowStart, rows });
  }
  return { format: "dense", weightType, outDim, inDim, panels };
}

/** Uploads a dense table (e.g. the token embedding) as f32, or as f16 pairs packed in u32. */
export function uploadDense(gpu: Gpu, data: Float32Array, weightType: WeightType, label: string): GPUBuffer {
  return uploadStorage(gpu, weightType === "f32" ? data : toF16Pairs(data), label);
}

/** f32 values → f16 bits, two per u32 (element 2j low, 2j+1 high). */
export function toF16Pairs(values: Float32Array): Uint32Array {
  const halves = new Uint16Array(values.length + (values.length & 1));
  for (let i = 0; i < values.length; i++) halves[i] = f32ToF16Bits(values[i]);
  return new Uint32Array(halves.buffer);
}

/** Arguments for applying a linear: y[:, cols] (+)= x · Wᵀ. */
export interface LinearCall {
  /** x: (≥ xRowOffset + rows, inDim) f32 */
  x: GPUBuffer;
  /** y: (rows, yStride) f32 */
  y: GPUBuffer;
  rows: number;
  xRowOffset?: number;
  accumulate?: boolean;
  /** Apply this RMSNorm to x first; only where {@link fusesPrologue} says the linear's kernel can. */
  norm?: { weight: GPUBuffer; eps: number };
  /** x is a gate: apply silu(x)·siluMulUp first; only where {@link fusesPrologue} says so. */
  siluMulUp?: GPUBuffer;
  /**
   * Pin the kernel family whatever `rows` is, so each row's sums are the same however many rows the call
   * has (the batched engine): "gemm" the tiled GEMM (no prologue; prompt rows), "gemv" the batched decode
   * kernels (decode rows); q8 affine weights take their batched q8 path for both (`pinnedPath`). "decode":
   * rows that one dispatch of the format's GEMV serves take it (fused prologues, merged q/k/v; faster, but
   * its sums differ from the batched kernels'), more rows the batched kernels. "prompt": prompt rows as
   * "gemm", except small pieces of LUT weights, which take the batched LUT kernel (`pinnedPath`); a row's
   * sums then depend on its piece's size. Absent: chosen by `rows`.
   */
  path?: LinearPath;
}

/** Prompt pieces of LUT weights on the "prompt" path take the GEMM from this many rows ({@link pinnedPath}). */
export const LUT_PROMPT_GEMM_ROWS = 128;

/**
 * Prompt pieces of f16 dense weights on the "prompt" path take the tiled GEMM from this many rows, fewer
 * their batched decode kernel ({@link pinnedPath}).
 */
export const DENSE_PROMPT_GEMM_ROWS = 512;

/** See {@link LinearCall.path}. */
export type LinearPath = "gemm" | "gemv" | "decode" | "prompt";

/**
 * Decode rows that take a linear's GEMV on the "decode" path, from H100 timings at 8B shape (BENCHMARKS.md
 * "Serving under load"): one row for q8 affine weights (a 2-row step on the q8 GEMV's two-row dispatches
 * took 7.8 ms, on the batched kernel 5.8); what one dispatch serves for dense f16 weights; for LUT weights
 * every row count the LUT GEMV's 8-row batches serve, which beat the batched LUT kernel at every count
 * measured (8.8 against 24.5 ms a 2-row step, 25.5 against 44.7 ms a 16-row one, 93.6 against 137.8 at 64);
 * with q8 activations one row, as affine (its int8 batched path beyond).
 */
function gemvRows(linear: GpuLinear): number {
  if (linear.format === "affine") return (linear.activations ?? "q8") === "q8" ? 1 : 0;
  if (linear.format === "lut" && linear.activations === "q8") return 1;
  return linear.format === "lut" ? LUT_GEMV_BATCH_MAX_ROWS : GEMV_MAX_ROWS;
}

/**
 * The family a pinned call of `linear` runs. The engine's prompt rows ("gemm") of affine weights with q8
 * activations take the batched q8 path, as its decode rows do, instead of the tiled f32 GEMM: at 8B shape
 * it was faster at every prompt piece size, by far at small pieces, where the GEMM's few output tiles leave
 * most of the GPU idle (BENCHMARKS.md, "Serving under load"). Its activations are int8 per 32 columns, as
 * llama.cpp's quantized matmuls use them for prompts too; `--decode-activations f32` keeps every row exact.
 * Pinned "gemm" rows of f16 dense weights take their batched decode kernel likewise (f32 sums of the same
 * f16 weights, in another order): at the 32–128-row pieces prompts are read in while others decode the GEMM
 * leaves most of the GPU idle (64 rows: 1.4 ms per layer, against 8.4–8.8 for the affine GEMM on the same
 * tiles). On the "prompt" path, pieces of {@link DENSE_PROMPT_GEMM_ROWS} rows or more take the GEMM: since
 * its staging was written out it runs a 512-row layer in 7.2 ms against the decode kernel's 11.1 (H100,
 * BENCHMARKS.md "f16 builds re-timed"), and an idle server's prompts come in such pieces (smaller pieces
 * leave its 128 × 128 tiles too few for the GPU: untimed, so they stay). LUT prompts keep the GEMM: eight
 * 64-row dispatches of the batched LUT kernel (4.4 ms each) would be ~2.5× its ~13 ms at 512 rows. But the
 * pieces of ~2 decode steps' rows that prompts advance by while others decode (32 at 16 streams) left the
 * GEMM ~10 ms a layer (its few output tiles) and LUT streams at 164 ms a token under load (H100, 2026-12-06):
 * on the "prompt" path LUT pieces under {@link LUT_PROMPT_GEMM_ROWS} rows take the batched LUT kernel, about
 * 0.07 ms a row and layer. LUT weights with q8 activations (the default for quantized folders) take their
 * int8 batched path for every engine row instead, as q8 affine weights do.
 */
function pinnedPath(
  linear: GpuLinear,
  pinned: LinearPath | undefined,
  rows: number,
): "gemm" | "gemv" | undefined {
  const smallLut = linear.format === "lut" && rows < LUT_PROMPT_GEMM_ROWS;
  const path = pinned === "prompt" ? (smallLut ? "gemv" : "gemm") : pinned;
  if (path === "decode") return rows <= gemvRows(linear) ? undefined : "gemv";
  const q8 = linear.format === "affine"
    ? (linear.activations ?? "q8") === "q8"
    : linear.format === "lut" && linear.activations === "q8";
  const denseRows = linear.format === "dense" && linear.weightType === "f16" && linear.inDim % 8 === 0 &&
    !(pinned === "prompt" && rows >= DENSE_PROMPT_GEMM_ROWS);
  return path === "gemm" && (q8 || denseRows) ? "gemv" : path;
}

/**
 * Whether applying `linear` to `rows` rows can take the preceding RMSNorm or (with `siluMul`) SiLU·mul into
 * its kernel, so that dispatch can go: the q8 GEMV of affine weights takes both; the LUT GEMVs take
 * SiLU·mul only. Their RMSNorm prologue works (kernels/matmul_lut.ts) but each workgroup's extra pass over x
 * before its first code load made an 8B-shaped LUT decode slower on the H100 (3-bit: 110 → 91 tok/s).
 */
export function fusesPrologue(
  linear: GpuLinear,
  rows: number,
  kind: "norm" | "siluMul" = "norm",
  pinned?: LinearPath,
): boolean {
  const path = pinnedPath(linear, pinned, rows);
  if (path === "gemm") return false;
  // The int8 LUT path's prep pass takes either; the pinned f32 LUT path has none (its builds must not
  // change with the rows).
  if (linear.format === "lut" && path === "gemv" && linear.activations === "q8") return true;
  if (linear.format === "lut") return kind === "siluMul" && rows <= LUT_PROLOGUE_MAX_ROWS && path !== "gemv";
  return linear.format === "affine" &&
    affineHasPrologue({ activations: linear.activations ?? "q8", ...(path ? { path } : {}) }, rows);
}

/**
 * Whether a call on this path lets its row count change a row's sums: the "decode" path (which already picks
 * kernels by rows) has the batched q8 affine path split K by the rows (kernels/matmul
 * MatmulAffineSpec.kSplitByRows). Prompt pieces come in 32 rows or more (scheduler.ts), where the split is
 * the pinned one anyway; the pinned paths keep every row's bits batch-invariant.
 */
function rowDependentSums(path: LinearPath | undefined): boolean {
  return path === "decode";
}

/** Binds the dispatches that apply `linear` (one per panel for dense weights). */
export function bindLinear(gpu: Gpu, linear: GpuLinear, call: LinearCall): Encodable {
  if (
    (call.norm && !fusesPrologue(linear, call.rows, "norm", call.path)) ||
    (call.siluMulUp && !fusesPrologue(linear, call.rows, "siluMul", call.path))
  ) {
    throw new Error(`Cannot fuse a norm or SiLU·mul into a ${linear.format} linear over ${call.rows} rows`);
  }
  const pinned = pinnedPath(linear, call.path, call.rows);
  const path = pinned ? { path: pinned } : {};
  if (linear.format !== "dense") {
    const spec = { accumulate: call.accumulate ?? false };
    const args = { x: call.x, y: call.y, rows: call.rows, xRowOffset: call.xRowOffset ?? 0 };
    return linear.format === "affine"
      ? createMatmulAffine(gpu, {
        ...spec,
        activations: linear.activations ?? "q8",
        kSplitByRows: rowDependentSums(call.path),
        ...path,
      }).bind({
        ...args,
        w: linear.weights,
        ...(call.norm ? { norm: call.norm } : {}),
        ...(call.siluMulUp ? { siluMulUp: call.siluMulUp } : {}),
      })
      : createMatmulLut(gpu, { ...spec, activations: linear.activations ?? "f32", ...path }).bind({
        ...args,
        w: linear.weights,
        ...(call.norm ? { norm: call.norm } : {}),
        ...(call.siluMulUp ? { siluMulUp: call.siluMulUp } : {}),
      });
  }
  const kernel = createMatmul(gpu, {
    weightType: linear.weightType,
    accumulate: call.accumulate ?? false,
    ...path,
  });
  const bound = linear.panels.map((panel) =>
    kernel.bind({
      x: call.x,
      w: panel.buffer,
      y: call.y,
      rows: call.rows,
      inDim: linear.inDim,
      outDim: panel.rows,
      xRowOffset: call.xRowOffset ?? 0,
      yStride: linear.outDim,
      yColOffset: panel.rowStart,
    })
  );
  return sequence(bound);
}

/**
 * Whether these linears, applied to the same x over `rows` rows, can run as one bind: affine weights on the
 * q8 GEMV or batched q8 path with the same bits, inDim and groups and one shared perm buffer (q/k/v and
 * gate/up of our folders share their act-order permutation; quant_folder.ts uploads it once), one dispatch;
 * or LUT weights with the same bits and inDim on the int8 batched path, which quantizes x once for all.
 */
export function mergesLinears(linears: GpuLinear[], rows: number, path?: LinearPath): boolean {
  if (linears.length < 2 || linears.length > 3) return false;
  const [first] = linears;
  if (first.format === "lut") {
    return pinnedPath(first, path, rows) === "gemv" &&
      linears.every((l) =>
        l.format === "lut" && l.activations === "q8" && l.weights.bits === first.weights.bits &&
        l.inDim === first.inDim
      );
  }
  return linears.every((l) =>
    l.format === "affine" && first.format === "affine" && fusesPrologue(l, rows, "norm", path) &&
    l.weights.bits === first.weights.bits && l.weights.inDim === first.weights.inDim &&
    l.weights.groupSize === first.weights.groupSize && l.weights.perm === first.weights.perm
  );
}

/**
 * Binds linears that read the same x (with the same prologue), each into its own y: one dispatch when
 * {@link mergesLinears} allows, else one {@link bindLinear} each.
 */
export function bindLinears(
  gpu: Gpu,
  items: { linear: GpuLinear; y: GPUBuffer }[],
  call: Omit<LinearCall, "y">,
): Encodable {
  const linears = items.map((i) => i.linear);
  if (!mergesLinears(linears, call.rows, call.path)) {
    const bound = items.map(({ linear, y }) => bindLinear(gpu, linear, { ...call, y }));
    return sequence(bound);
  }
  const pinned = pinnedPath(linears[0], call.path, call.rows);
  const path = pinned ? { path: pinned } : {};
  const common = {
    x: call.x,
    y: items[0].y,
    rows: call.rows,
    xRowOffset: call.xRowOffset ?? 0,
    ...(call.norm ? { norm: call.norm } : {}),
    ...(call.siluMulUp ? { siluMulUp: call.siluMulUp } : {}),
  };
  const first = linears[0];
  if (first.format === "lut") {
    return createMatmulLut(gpu, { accumulate: call.accumulate ?? false, activations: "q8", ...path }).bind({
      ...common,
      w: first.weights,
      more: items.slice(1).map(({ linear, y }) => ({ w: (linear as LutLinear).weights, y })),
    });
  }
  return createMatmulAffine(gpu, {
    accumulate: call.accumulate ?? false,
    activations: "q8",
    kSplitByRows: rowDependentSums(call.path),
    ...path,
  }).bind({
    ...common,
    w: (first as AffineLinear).weights,
    more: items.slice(1).map(({ linear, y }) => ({ w: (linear as AffineLinear).weights, y })),
  });
}
