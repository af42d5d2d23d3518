/**
 * GPTQ's lazy-batch (inter-block) update (Frantar et al. 2022, Algorithm 1, the step after each block;
 * gptq.py `W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])`; docs/quantization.md §1.3):
 *   W[r, j] −= Σ_{i < count} Err1[r, i] · U[i1 + i, j]      for j in [i2, cols), i2 = i1 + count
 * Err1 arrives transposed, (count, rows), as gptq_block writes it, so both operands stage along contiguous
 * memory. A tiled GEMM: TM×TN output tiles, K staged TK at a time in workgroup memory, 4×4 register tiles
 * per invocation held in four vec4 accumulators (no dynamically indexed register arrays), every load and
 * store bounds-checked. Only U rows [i1, i2) are bound ({@link rowPanel}, shared with gptq_block).
 */
import {
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  partHolding,
  singleDispatch,
  splitElement,
  uniformParams,
  unroll,
} from "../core/mod.ts";

function wgsl(U: MatrixAccess): string {
  return U.wgsl + /* wgsl */ `
override TM: u32 = 64u;  // rows of W per tile
override TN: u32 = 64u;  // columns of W per tile
const TK: u32 = 16u;     // block columns (K) staged per step (written out in main)
override WG: u32 = (TM / 4u) * (TN / 4u);

struct Params {
  rows: u32, cols: u32,
  i2: u32,      // first column updated
  count: u32,   // K: columns of the block just quantized
  uBase: u32,   // element index of U[i1, 0] in the u binding
  tilesN: u32,  // output tiles along the columns
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> W: array<f32>;  // (rows, cols) f32, permuted working copy
@group(0) @binding(2) var<storage, read> err: array<f32>;      // (count, rows) f32, Err1ᵀ
@group(0) @binding(3) var<storage, read> U: array<f32>;        // rows [i1, i2) of (cols, cols), from uBase

var<workgroup> es: array<f32, TK * TM>;  // [k][m]
var<workgroup> us: array<f32, TK * TN>;  // [k][n]

fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  for (var t = lid; t < TK * TM; t += WG) {
    let k = k0 + t / TM;
    let m = m0 + t % TM;
    var v = 0.0;
    if (k < params.count && m < params.rows) { v = err[k * params.rows + m]; }
    es[t] = v;
  }
  for (var t = lid; t < TK * TN; t += WG) {
    let k = k0 + t / TN;
    let n = n0 + t % TN;
    var v = 0.0;
    if (k < params.count && n < params.cols) { v = ${U.ld("params.uBase + k * params.cols + n")}; }
    us[t] = v;
  }
}

fn store(r: u32, n0: u32, acc: vec4f) {
  if (r >= params.rows) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j < params.cols) { W[r * params.cols + n0 + j] -= acc[j]; }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= ((params.rows + TM - 1u) / TM) * params.tilesN) { return; }
  let m0 = (tile / params.tilesN) * TM;
  let n0 = params.i2 + (tile % params.tilesN) * TN;
  let tx = lid % (TN / 4u);
  let ty = lid / (TN / 4u);
  var acc0 = vec4f();  // rows m0 + 4ty + 0..3, columns n0 + 4tx .. +3
  var acc1 = vec4f();
  var acc2 = vec4f();
  var acc3 = vec4f();
  for (var k0 = 0u; k0 < params.count; k0 += TK) {
    stage(lid, m0, n0, k0);
    workgroupBarrier();
    ${
    unroll(16, (k) =>
      /* wgsl */ `{
      let a = ${k}u * TM + 4u * ty;
      let b = ${k}u * TN + 4u * tx;
      let u = vec4f(us[b], us[b + 1u], us[b + 2u], us[b + 3u]);
      acc0 = fma(vec4f(es[a]), u, acc0);
      acc1 = fma(vec4f(es[a + 1u]), u, acc1);
      acc2 = fma(vec4f(es[a + 2u]), u, acc2);
      acc3 = fma(vec4f(es[a + 3u]), u, acc3);
    }`, "\n    ")
  }
    workgroupBarrier();
  }
  let r = m0 + 4u * ty;
  let n = n0 + 4u * tx;
  store(r, n, acc0);
  store(r + 1u, n, acc1);
  store(r + 2u, n, acc2);
  store(r + 3u, n, acc3);
}
`;
}

export interface GptqUpdateArgs {
  /** W: (rows, cols) f32, permuted working copy; columns [i1 + count, cols) are updated */
  W: GPUBuffer;
  /** err: (≥ count, rows) f32, Err1ᵀ of the block (gptq_block's output) */
  err: GPUBuffer;
  /**
   * U: (cols, cols) f32 upper Cholesky factor of the permuted H⁻¹, one buffer or two parts; only rows
   * [i1, i1+count) are bound ({@link uRows})
   */
  U: MatrixBuffer;
  rows: number;
  cols: number;
  /** First column of the block. */
  i1: number;
  /** Columns in the block; the update covers [i1 + count, cols), which must not be empty. */
  count: number;
}

/**
 * A binding of rows [r0, r0 + nRows) of a row-major (·, rowLen) f32 matrix: the offset is rounded down to
 * `minStorageBufferOffsetAlignment`, and `base` is the element index of row r0 inside the binding. Binding
 * only a block's rows of U keeps each binding far below the ~2 GiB cap even where U itself is larger.
 */
export function rowPanel(
  gpu: Gpu,
  buffer: GPUBuffer,
  { rowLen, r0, nRows }: { rowLen: number; r0: number; nRows: number },
): { binding: { buffer: GPUBuffer; offset: number; size: number }; base: number } {
  const align = Number(gpu.device.limits.minStorageBufferOffsetAlignment);
  const start = r0 * rowLen * 4;
  const offset = Math.floor(start / align) * align;
  const size = start + nRows * rowLen * 4 - offset;
  if (offset + size > buffer.size) {
    throw new Error(
      `Cannot bind rows [${r0}, ${r0 + nRows}) of "${buffer.label}": it holds ${buffer.size} bytes`,
    );
  }
  if (size > gpu.maxBindingBytes) {
    throw new Error(
      `Cannot bind ${size} bytes of "${buffer.label}": exceeds the binding limit ${gpu.maxBindingBytes}`,
    );
  }
  return { binding: { buffer, offset, size }, base: (start - offset) / 4 };
}

/**
 * U rows [r0, r0 + nRows) as gptq_update and gptq_block bind them. Rows inside one buffer (always when U is
 * one buffer; with two parts whenever the block does not straddle the split, e.g. 128-column blocks and
 * rowsPerPart a multiple of 128) are one {@link rowPanel}: the unsplit build. A block straddling the split
 * binds both parts whole and indexes globally (`split` = U_SPLIT of the split build, matrix_parts.ts).
 */
export function uRows(
  gpu: Gpu,
  U: MatrixBuffer,
  { rowLen, r0, nRows }: { rowLen: number; r0: number; nRows: number },
): { bindings: GPUBufferBinding[]; base: number; split: number | null } {
  const part = partHolding(U, r0 * rowLen, (r0 + nRows) * rowLen - 1);
  if (part) {
    const u = rowPanel(gpu, part.buffer, { rowLen, r0: part.first / rowLen, nRows });
    return { bindings: [u.binding], base: u.base, split: null };
  }
  return {
    bindings: matrixBindings(U).map((buffer) => ({ buffer })),
    base: r0 * rowLen,
    split: splitElement(U),
  };
}

/** The WGSL source (variants are `override` constants); `split`: U rows from two parts ({@link uRows}). */
export function gptqUpdateShader({ split = false }: { split?: boolean } = {}): string {
  return wgsl(matrixAccess("U", split ? { binding: 4, access: "read" } : null));
}

/**
 * Builds the inter-block update GEMM.
 * @param gpu the device
 * @returns a kernel; `bind` fixes one block's buffers and column range
 */
export function createGptqUpdate(gpu: Gpu): Kernel<GptqUpdateArgs> {
  const [tm, tn] = [64, 64];
  const pipelineFor = (split: number | null) =>
    split === null
      ? getPipeline(gpu, {
        name: "gptq_update",
        code: gptqUpdateShader(),
        constants: { TM: tm, TN: tn },
        bindings: ["uniform", "storage", "read-only-storage", "read-only-storage"],
      })
      : getPipeline(gpu, {
        name: "gptq_update",
        code: gptqUpdateShader({ split: true }),
        constants: { TM: tm, TN: tn, U_SPLIT: split },
        spec: { split: true },
        bindings: ["uniform", "storage", "read-only-storage", "read-only-storage", "read-only-storage"],
      });
  pipelineFor(null);
  return {
    bind({ W, err, U, rows, cols, i1, count }: GptqUpdateArgs): Encodable {
      const i2 = i1 + count;
      const problem = !(rows > 0 && count > 0)
        ? `rows ${rows} and count ${count} must be positive`
        : !(i2 < cols)
        ? `the block [${i1}, ${i2}) leaves no columns of ${cols} to update`
        : W.size < rows * cols * 4
        ? `W holds ${W.size} bytes, needs ${rows * cols * 4}`
        : err.size < count * rows * 4
        ? `err holds ${err.size} bytes, needs ${count * rows * 4}`
        : null;
      if (problem) throw new Error(`Cannot bind gptq_update: ${problem}`);
      const u = uRows(gpu, U, { rowLen: cols, r0: i1, nRows: count });
      const pipeline = pipelineFor(u.split);
      const tilesN = ceilDiv(cols - i2, tn);
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", cols], ["u32", i2], ["u32", count], ["u32", u.base], ["u32", tilesN]],
        "gptq_update params",
      );
      const bindGroup = gpu.device.createBindGroup({
        label: "gptq_update",
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ buffer: params }, { buffer: W }, { buffer: err }, ...u.bindings].map((
          resource,
          binding,
        ) => ({
          binding,
          resource,
        })),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows, tm) * tilesN);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
