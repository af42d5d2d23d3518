/**
 * The GPU port of GPTQ's blocked error-feedback loop with LeanQuant grids: gptq.py `fasterquant`
 * (IST-DASLab/gptq 2d65066) and its fork `lean_quantizer.py` (LeanModels/LeanQuant bc8c8ee), spec
 * docs/quantization.md §1.3, f64 reference `gptqReference` in quant/reference.ts (same names, same loop shape):
 *
 *   GPTQ Algorithm 1                          here
 *   W ← W[:, perm], dead columns zeroed       gather_cols (perm, −1 for dead columns)
 *   for i1 = 0, B, 2B, …                      one gptq_block dispatch per block, over row tiles:
 *     Q1, Err1 ← quantize W1 column by column   q = grid(w), e = (w − q)/d, W1[:, i:] −= e·Hinv[k, i:]
 *     W[:, i2:] −= Err1 · Hinv[i1:i2, i2:]      gptq_update (a tiled GEMM); skipped for RTN
 *   Q, codes ← un-permute with invperm        gather_cols (f32, and packed codes)
 *
 * `U` here is gptq.py's `Hinv` after factorisation: the upper Cholesky factor of the damped, permuted H⁻¹
 * (H⁻¹ = UᵀU), NOT the inverse itself; quant/cholesky.ts produces it. The grid arrives fitted (LeanQuant nu
 * LUT, LeanQuant aff row-wise params) or is fitted inside the loop through a {@link GroupFitter} at every
 * group start (min-max, or LeanQuant aff group-wise). Everything for one layer is recorded into one compute
 * pass and submitted once; the host reads back codes, loss and grid in a single mapAsync (≥ 10 ms each).
 */
import {
  createGatherCols,
  createGptqBlock,
  createGptqUpdate,
  createMinMaxParams,
} from "../kernels/quant/mod.ts";
import {
  align4,
  ceilDiv,
  createStorage,
  type Gpu,
  type MatrixBuffer,
  matrixBytes,
  uploadStorage,
} from "../kernels/core/mod.ts";
import type { QuantizedLinear, QuantizeOptions } from "./types.ts";

/** What a group fit sees: the current W and the slot its (scale, zero) go to. */
export interface GroupFitArgs {
  /** (rows, cols) f32, the error-updated W in permuted order, as it stands before the block that holds colStart */
  W: GPUBuffer;
  /** (cols, cols) f32, the factor U (for importances a_k = U_kk^(−p)); one buffer or two parts */
  U: MatrixBuffer;
  rows: number;
  cols: number;
  /** First permuted column of the group, a multiple of the group size. */
  colStart: number;
  /** Columns in the group: min(groupSize, cols − colStart). */
  groupCols: number;
  /** colStart / groupSize. */
  groupIndex: number;
  nGroups: number;
  /** (rows, nGroups) vec2<f32> (scale, zero): the fit writes entry (r, groupIndex) of every row r */
  params: GPUBuffer;
}

/** Records into `pass` the dispatches that fit one group's affine grid for every row (encode only). */
export type GroupFitter = (pass: GPUComputePassEncoder, args: GroupFitArgs) => void;

/** The grid of one layer, by who fits it. */
export type GridInput =
  /** GPTQ's min-max per row (groupSize 0, on the raw W) or per group at k % g == 0 (on the current W). */
  | { kind: "minmax" }
  /** LeanQuant nu: lut (rows, 2^bits) f32, every entry f16-representable, fitted before the loop. */
  | { kind: "lut"; lut: GPUBuffer }
  /** LeanQuant aff row-wise: params (rows) vec2<f32> (scale, zero), fitted before the loop. */
  | { kind: "affine-row"; params: GPUBuffer }
  /** LeanQuant aff group-wise (opts.groupSize > 0): called at every group start. */
  | { kind: "affine-group"; fitGroup: GroupFitter };

/** One layer handed to {@link quantizeLinear}. */
export interface LinearInput {
  /** (rows, cols) f32, original column order; overwritten: it returns holding Q */
  W: GPUBuffer;
  rows: number;
  cols: number;
  /**
   * (cols, cols) f32, upper Cholesky factor of the damped H⁻¹ in permuted order (gptq.py's Hinv); one
   * buffer or, past one binding, two parts (kernels/core/matrix_parts.ts)
   */
  U: MatrixBuffer;
  /** (cols) perm[k] = original column quantized k-th */
  perm: Int32Array;
  /** (cols) 1 for original columns with H_cc == 0; their weights are zeroed */
  dead: Uint8Array;
  grid: GridInput;
  /** The damping λ the factorisation used, reported back (NaN when not given). */
  dampUsed?: number;
}

/** A quantized layer on the host, plus Q still on the GPU. */
export interface GpuQuantizedLinear extends QuantizedLinear {
  /** (rows, cols) f32 dequantized weights in ORIGINAL column order: the same buffer as the input W */
  Q: GPUBuffer;
}

/**
 * The min-max group fit (quant.py `find_params` on columns [colStart, colStart + groupCols)), as a hook.
 * @param gpu the device
 * @param bits grid bits
 * @returns a fitter that encodes one minmax_params dispatch
 */
export function createMinMaxGroupFitter(gpu: Gpu, bits: number): GroupFitter {
  const kernel = createMinMaxParams(gpu, { bits });
  return (pass, a) =>
    kernel.bind({
      x: a.W,
      out: a.params,
      rows: a.rows,
      stride: a.cols,
      colStart: a.colStart,
      groupCols: a.groupCols,
      nGroups: a.nGroups,
      groupIndex: a.groupIndex,
    }).encode(pass);
}

/**
 * Quantizes one linear layer on the GPU with GPTQ's blocked error-feedback loop ("rtn": the same grid
 * without feedback). `opts.method` only switches feedback off for "rtn"; the grid kind decides the values:
 * "gptq" takes the minmax grid, "leanquant-nu" a LUT, "leanquant-aff" the affine-row or affine-group grid,
 * and "rtn" any grid. The group size applies to minmax and affine-group grids; LUT and affine-row grids are
 * one per row. opts.actOrder, percdamp and exponent were spent producing U, perm and the grid.
 * @param gpu the device
 * @param layer W, its factor U, the permutation, dead columns and the grid
 * @param opts method, bits, groupSize and blockSize (a multiple of 4)
 * @returns codes, grid and loss on the host (original column order), and Q on the GPU in layer.W's buffer
 * @example
 * ```ts ignore
 * const f = await factorHessian(gpu, H, cols, { actOrder: true, percdamp: 0.01 });
 * const q = await quantizeLinear(gpu, { W, rows, cols, U: f.U, perm: f.perm, dead: f.dead, grid: { kind: "minmax" } }, {
 *   ...QUANTIZE_DEFAULTS, method: "gptq", bits: 4,
 * });
 * ```
 */
export async function quantizeLinear(
  gpu: Gpu,
  layer: LinearInput,
  opts: QuantizeOptions,
): Promise<GpuQuantizedLinear> {
  const { W, rows, cols, U, perm, dead, grid } = layer;
  const { method, bits, blockSize } = opts;
  checkLayer(gpu, layer, opts);
  const feedback = method !== "rtn";
  const g = grid.kind === "minmax" || grid.kind === "affine-group" ? opts.groupSize : 0;
  const nGroups = g > 0 ? ceilDiv(cols, g) : 1;
  const invperm = new Int32Array(cols);
  perm.forEach((c, k) => invperm[c] = k);
  const codeStride = ceilDiv(cols, 4);
  const temps: GPUBuffer[] = [];
  const temp = (buffer: GPUBuffer) => (temps.push(buffer), buffer);
  try {
    const Wp = temp(createStorage(gpu, rows * cols * 4, "gptq W")); // (rows, cols) permuted W, then Q
    const codesP = temp(createStorage(gpu, rows * codeStride * 4, "gptq codes permuted")); // (rows, codeStride)
    const codes = temp(createStorage(gpu, rows * cols, "gptq codes")); // rows·cols bytes, original order
    const Err1 = temp(createStorage(gpu, blockSize * rows * 4, "gptq Err1ᵀ")); // (blockSize, rows)
    const loss = temp(createStorage(gpu, rows * 4, "gptq loss")); // (rows) Σ e²/2
    const gridBuf = grid.kind === "lut" ? grid.lut : grid.kind === "affine-row" ? grid.params : temp(
      createStorage(gpu, rows * nGroups * 8, "gptq scale, zero"), // (rows, nGroups) vec2<f32>
    );
    const fitGroup = grid.kind === "minmax"
      ? createMinMaxGroupFitter(gpu, bits)
      : grid.kind === "affine-group"
      ? grid.fitGroup
      : null;
    const toPerm = temp(uploadStorage(gpu, Int32Array.from(perm, (c) => dead[c] ? -1 : c), "gptq perm"));
    const fromPerm = temp(uploadStorage(gpu, invperm, "gptq invperm"));
    const gather = createGatherCols(gpu, { bytes: 4 });
    const block = createGptqBlock(gpu, { blockSize, lut: grid.kind === "lut", bits });
    const update = createGptqUpdate(gpu);
    const fitArgs = { U, rows, cols, nGroups, params: gridBuf };

    const encoder = gpu.device.createCommandEncoder({ label: "gptq" });
    const pass = encoder.beginComputePass({ label: "gptq" });
    // Step 1: row-wise min-max runs on the raw W, before the dead-column fix (fasterquant calls
    // find_params first); order does not matter for a row's min and max.
    if (grid.kind === "minmax" && g === 0) {
      fitGroup!(pass, { ...fitArgs, W, colStart: 0, groupCols: cols, groupIndex: 0 });
    }
    // Step 2: W ← W[:, perm] with dead columns zeroed.
    gather.bind({ src: W, idx: toPerm, dst: Wp, rows, cols, srcStride: cols }).encode(pass);
    // Step 3: the blocked column loop.
    for (let i1 = 0; i1 < cols; i1 += blockSize) {
      const i2 = Math.min(i1 + blockSize, cols);
      // Groups starting in this block are fitted before it runs: gptq.py fits on W, not W1, so a group
      // that starts mid-block (groupSize < blockSize) sees every earlier block's update and none of this
      // block's; Wp holds exactly that until the block dispatch.
      for (let k = g > 0 ? ceilDiv(i1, g) * g : i2; k < i2; k += g) {
        fitGroup!(pass, {
          ...fitArgs,
          W: Wp,
          colStart: k,
          groupCols: Math.min(g, cols - k),
          groupIndex: k / g,
        });
      }
      const blockArgs = {
        W: Wp,
        U,
        grid: gridBuf,
        codes: codesP,
        err: Err1,
        loss,
        rows,
        cols,
        i1,
        count: i2 - i1,
      };
      block.bind({ ...blockArgs, groupSize: g, nGroups, feedback }).encode(pass);
      // Lazy batch update: W[:, i2:] −= Err1 · Hinv[i1:i2, i2:].
      if (feedback && i2 < cols) {
        update.bind({ W: Wp, err: Err1, U, rows, cols, i1, count: i2 - i1 }).encode(pass);
      }
    }
    // Step 4: un-permute Q (into W's buffer) and the codes (into dense bytes).
    gather.bind({ src: Wp, idx: fromPerm, dst: W, rows, cols, srcStride: cols }).encode(pass);
    createGatherCols(gpu, { bytes: 1 }).bind({
      src: codesP,
      idx: fromPerm,
      dst: codes,
      rows,
      cols,
      srcStride: codeStride,
    })
      .encode(pass);
    pass.end();
    // Step 5: one readback for the whole layer.
    const gridBytes = grid.kind === "lut" ? rows * 2 ** bits * 4 : rows * nGroups * 8;
    const [codeBytes, lossBytes, gridData] = await readAll(gpu, encoder, [
      [codes, rows * cols],
      [loss, rows * 4],
      [gridBuf, gridBytes],
    ]);
    const out: GpuQuantizedLinear = {
      rows,
      cols,
      bits,
      method,
      codes: new Uint8Array(codeBytes),
      loss: new Float32Array(lossBytes).reduce((s, v) => s + v, 0),
      dampUsed: layer.dampUsed ?? NaN,
      Q: W,
    };
    if (grid.kind === "lut") return { ...out, lut: new Float32Array(gridData) };
    const sz = new Float32Array(gridData);
    const [scale, zero] = [new Float32Array(sz.length / 2), new Float32Array(sz.length / 2)];
    for (let i = 0; i < scale.length; i++) [scale[i], zero[i]] = [sz[2 * i], sz[2 * i + 1]]; // filter() is ~100× slower
    const gIdx = Int32Array.from(invperm, (k) => g > 0 ? Math.floor(k / g) : 0);
    return { ...out, scale, zero, gIdx };
  } finally {
    for (const b of temps) b.destroy();
  }
}

/**
 * Copies several buffers into one staging buffer, submits `encoder` and maps once (each mapAsync costs
 * ≥ 10 ms in Deno, docs/webgpu.md §3).
 * @returns one fresh ArrayBuffer of `bytes` per part
 */
async function readAll(
  gpu: Gpu,
  encoder: GPUCommandEncoder,
  parts: readonly (readonly [GPUBuffer, number])[],
): Promise<ArrayBuffer[]> {
  const offsets: number[] = [];
  let size = 0;
  for (const [, bytes] of parts) [offsets[offsets.length], size] = [size, size + align4(bytes)];
  const staging = gpu.device.createBuffer({
    label: "gptq readback",
    size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    parts.forEach(([buffer, bytes], i) =>
      encoder.copyBufferToBuffer(buffer, 0, staging, offsets[i], align4(bytes))
    );
    gpu.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const all = staging.getMappedRange();
    const out = parts.map(([, bytes], i) => all.slice(offsets[i], offsets[i] + bytes));
    staging.unmap();
    return out;
  } finally {
    staging.destroy();
  }
}

/** Which grid kinds each method accepts ("rtn" takes any: it only drops the error feedback). */
const METHOD_GRIDS: Record<QuantizeOptions["method"], readonly GridInput["kind"][]> = {
  "rtn": ["minmax", "lut", "affine-row", "affine-group"],
  "gptq": ["minmax"],
  "leanquant-nu": ["lut"],
  "leanquant-aff": ["affine-row", "affine-group"],
};

/** Load-time checks of a layer and its options; throws naming the offending value. */
function checkLayer(gpu: Gpu, layer: LinearInput, opts: QuantizeOptions): void {
  const { rows, cols, perm, dead, grid } = layer;
  const { bits, blockSize, groupSize, method } = opts;
  const seen = new Uint8Array(cols);
  const isPerm = perm.length === cols && perm.every((c) => c >= 0 && c < cols && !seen[c] && (seen[c] = 1));
  const gridBytes = grid.kind === "lut" ? grid.lut.size : grid.kind === "affine-row" ? grid.params.size : 0;
  const needGrid = grid.kind === "lut" ? rows * 2 ** bits * 4 : grid.kind === "affine-row" ? rows * 8 : 0;
  const problem = !(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0)
    ? `rows ${rows} and cols ${cols} must be positive integers`
    : !(Number.isInteger(bits) && bits >= 1 && bits <= 8)
    ? `bits ${bits} is outside 1..8`
    : !(Number.isInteger(blockSize) && blockSize >= 4 && blockSize % 4 === 0)
    ? `blockSize ${blockSize} is not a positive multiple of 4`
    : !(Number.isInteger(groupSize) && groupSize >= 0)
    ? `groupSize ${groupSize} is not a non-negative integer`
    : !METHOD_GRIDS[method].includes(grid.kind)
    ? `method "${method}" cannot use a "${grid.kind}" grid`
    : grid.kind === "affine-group" && groupSize === 0
    ? `an "affine-group" grid needs groupSize > 0`
    : !isPerm
    ? `perm is not a permutation of ${cols} columns`
    : dead.length !== cols
    ? `dead has ${dead.length} entries, expected ${cols}`
    : layer.W.size < rows * cols * 4
    ? `W holds ${layer.W.size} bytes, needs ${rows * cols * 4}`
    : rows * cols * 4 > gpu.maxBindingBytes
    ? `W needs ${rows * cols * 4} bytes in one binding (${gpu.maxBindingBytes})`
    : matrixBytes(layer.U) < cols * cols * 4
    ? `U holds ${matrixBytes(layer.U)} bytes, needs ${cols * cols * 4}`
    : gridBytes < needGrid
    ? `the ${grid.kind} grid holds ${gridBytes} bytes, needs ${needGrid}`
    : null;
  if (problem) throw new Error(`Cannot quantize a ${rows}×${cols} linear: ${problem}`);
}
