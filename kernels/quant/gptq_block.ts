/**
 * One lazy-batch block of GPTQ's column loop (Frantar et al. 2022, Algorithm 1; gptq.py `fasterquant`, the
 * inner `for i in range(count)`; docs/quantization.md §1.3), for columns [i1, i1 + count) of the permuted W:
 *   for i in 0..count−1, k = i1 + i:
 *     q = grid(W1[:, i]);  e = (W1[:, i] − q) / U[k, k]          (U: upper Cholesky factor of H⁻¹, "Hinv")
 *     W1[:, i+1:] −= e ⊗ U[k, k+1 : i1+count]                    (skipped for RTN: no error feedback)
 *     Err1[:, i] = e;  loss += e²/2
 * Grids: affine q = scale·(clamp(round(w/scale) + zero, 0, maxq) − zero), WGSL round = half to even like
 * torch; or a per-row LUT, q = lut[argmin_c |lut[c] − w|] with the first index winning ties (torch.argmin).
 *
 * Rows are independent once U is known, so one workgroup owns a tile of TR rows for the whole block and
 * keeps W1 in workgroup memory; invocation (r, l) owns the block columns j ≡ l (mod L) of row r. Each step
 * applies e_i to the owned columns right of i, and the owner of column i+1 then quantizes it at once, so
 * one barrier per column suffices (e is double-buffered by the parity of i). U rows are read from storage:
 * every row of the tile reads the same U[k, j] and a block's rows of U stay in L1. Staging U in 32-row
 * sub-blocks (plus its diagonal and the grid) in workgroup memory was measured 1.3–1.5× SLOWER on the
 * H100, since the bigger workgroup footprint shrinks L1. Only the LUTs are staged (TR·2^bits floats).
 *
 * On return the block's columns of W hold Q (written back coalesced), codes holds the codes (4 per u32,
 * little-endian, packed through workgroup atomics because neighbouring columns belong to different
 * invocations), err holds Err1ᵀ (count, rows) for the inter-block GEMM (kernels/gptq_update.ts), and
 * loss[r] has grown by this block's Σ e²/2.
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
  type MatrixBuffer,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";
import { uRows } from "./gptq_update.ts";

function wgsl(U: MatrixAccess): string {
  return U.wgsl + /* wgsl */ `
override TR: u32 = 8u;     // rows per workgroup
override L: u32 = 32u;     // invocations per row; lane l owns block columns j ≡ l (mod L)
override B: u32 = 128u;    // block width (blockSize), a multiple of 4
override LUT: bool = false;  // grid: per-row LUT of MAXQ + 1 ≤ 16 entries, else affine (scale, zero)
override MAXQ: u32 = 15u;  // 2^bits − 1
override WG: u32 = TR * L;

struct Params {
  rows: u32, cols: u32,
  i1: u32, count: u32,  // this block: permuted columns [i1, i1 + count), count ≤ B
  uBase: u32,           // element index of U[i1, 0] in the u binding
  codeStride: u32,      // u32 words per row of codes: ceil(cols / 4)
  groupSize: u32,       // affine: permuted columns per group, 0 = one grid per row
  nGroups: u32,         // affine: groups per row of grid
  feedback: u32,        // 0 for RTN: no error feedback
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> W: array<f32>;      // (rows, cols) permuted working copy
@group(0) @binding(2) var<storage, read> U: array<f32>;            // rows [i1, i1+count) of (cols, cols), from uBase
@group(0) @binding(3) var<storage, read> grid: array<f32>;         // LUT: (rows, maxq+1); affine: (rows, nGroups, 2)
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;  // (rows, codeStride) 4 codes per word, LE
@group(0) @binding(5) var<storage, read_write> err: array<f32>;    // (B, rows) Err1ᵀ
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;   // (rows) running Σ e²/2

var<workgroup> w1: array<f32, TR * B>;                // W1 of the tile, (TR, B); column i becomes q
var<workgroup> codes1: array<atomic<u32>, TR * B / 4u>;  // (TR, B/4) packed codes of the block
var<workgroup> errs: array<f32, 2u * TR>;             // e of the last quantized column, by parity
var<workgroup> red: array<f32, WG>;
var<workgroup> lutS: array<f32, TR * (MAXQ + 1u)>;     // the tile's LUTs, (TR, MAXQ+1)

// (code, q) of weight w of tile row r (global row) on the grid; k is the permuted column.
fn gridValue(r: u32, row: u32, w: f32, k: u32) -> vec2f {
  if (LUT) {
    let base = r * (MAXQ + 1u);
    var best = 0u;
    var bestDist = abs(lutS[base] - w);
    for (var c = 1u; c <= MAXQ; c++) {  // may stay a loop on NVIDIA (docs/webgpu.md §6); not timed written out
      let dist = abs(lutS[base + c] - w);
      if (dist < bestDist) {
        best = c;
        bestDist = dist;
      }
    }
    return vec2f(f32(best), lutS[base + best]);
  }
  var gi = 0u;
  if (params.groupSize > 0u) { gi = k / params.groupSize; }
  let p = 2u * (row * params.nGroups + gi);
  let scale = grid[p];
  let zero = grid[p + 1u];
  let code = clamp(round(w / scale) + zero, 0.0, f32(MAXQ));
  return vec2f(code, scale * (code - zero));
}

// Quantizes block column i of tile row r (global row); returns e².
fn quantize(r: u32, row: u32, i: u32) -> f32 {
  let k = params.i1 + i;
  let w = w1[r * B + i];
  let cq = gridValue(r, row, w, k);
  w1[r * B + i] = cq.y;
  atomicOr(&codes1[(r * B + i) / 4u], u32(cq.x) << (8u * (i % 4u)));
  let e = (w - cq.y) / ${U.ld("params.uBase + i * params.cols + k")};
  errs[(i & 1u) * TR + r] = e;
  err[i * params.rows + row] = e;
  return e * e;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row0 = (wid.x + wid.y * nwg.x) * TR;
  if (row0 >= params.rows) { return; }
  let r = lid / L;
  let l = lid % L;
  let row = row0 + r;
  let live = row < params.rows;
  // Stage W1 = W[tile rows, i1 : i1 + count] (coalesced along columns).
  for (var t = lid; t < TR * B; t += WG) {
    let rr = row0 + t / B;
    let j = t % B;
    var v = 0.0;
    if (rr < params.rows && j < params.count) { v = W[rr * params.cols + params.i1 + j]; }
    w1[t] = v;
  }
  for (var t = lid; t < TR * B / 4u; t += WG) { atomicStore(&codes1[t], 0u); }
  if (LUT) {
    for (var t = lid; t < TR * (MAXQ + 1u); t += WG) {
      if (row0 * (MAXQ + 1u) + t < params.rows * (MAXQ + 1u)) { lutS[t] = grid[row0 * (MAXQ + 1u) + t]; }
    }
  }
  workgroupBarrier();
  var lossAcc = 0.0;
  if (l == 0u && live) { lossAcc += quantize(r, row, 0u); }
  workgroupBarrier();
  for (var i = 0u; i < params.count; i++) {
    let e = errs[(i & 1u) * TR + r];
    if (params.feedback != 0u) {
      let u = params.uBase + i * params.cols + params.i1;
      // First owned column right of i: the smallest j > i with j ≡ l (mod L).
      for (var j = i + 1u + (l + L - (i + 1u) % L) % L; j < params.count; j += L) {
        w1[r * B + j] = fma(-e, ${U.ld("u + j")}, w1[r * B + j]);
      }
    }
    let next = i + 1u;
    if (next < params.count && l == next % L && live) { lossAcc += quantize(r, row, next); }
    workgroupBarrier();
  }
  red[lid] = lossAcc;
  workgroupBarrier();
  if (l == 0u && live) {
    var s = 0.0;
    for (var t = 0u; t < L; t++) { s += red[lid + t]; }
    loss[row] += 0.5 * s;
  }
  // Write Q over the block's columns of W and the packed codes (the block starts on a word: B % 4 == 0).
  for (var t = lid; t < TR * B; t += WG) {
    let rr = row0 + t / B;
    let j = t % B;
    if (rr < params.rows && j < params.count) { W[rr * params.cols + params.i1 + j] = w1[t]; }
  }
  for (var t = lid; t < TR * B / 4u; t += WG) {
    let rr = row0 + t / (B / 4u);
    let m = t % (B / 4u);
    if (rr < params.rows && 4u * m < params.count) {
      codes[rr * params.codeStride + params.i1 / 4u + m] = atomicLoad(&codes1[t]);
    }
  }
}
`;
}

/** Pipeline variant: block width, grid kind and bits. */
export interface GptqBlockSpec {
  /** B, a multiple of 4: the lazy-batch width (gptq.py blocksize, default 128). */
  blockSize: number;
  /** Per-row LUT grid (LeanQuant nu, ≤ 4 bits) instead of affine (scale, zero). */
  lut: boolean;
  /** Grid bits: 1..8 affine, 1..4 LUT. */
  bits: number;
}

export interface GptqBlockArgs {
  /** W: (rows, cols) f32, permuted working copy; columns [i1, i1+count) are replaced by Q */
  W: GPUBuffer;
  /**
   * U: (cols, cols) f32 upper Cholesky factor of the permuted H⁻¹, one buffer or two parts; only rows
   * [i1, i1+count) are bound (gptq_update.ts `uRows`)
   */
  U: MatrixBuffer;
  /** grid: LUT (rows, 2^bits) f32, or affine (rows, nGroups) vec2<f32> (scale, zero) */
  grid: GPUBuffer;
  /** codes: (rows, ceil(cols/4)) u32, 4 codes per word, little-endian, permuted column order */
  codes: GPUBuffer;
  /** err: (blockSize, rows) f32, receives Err1ᵀ */
  err: GPUBuffer;
  /** loss: (rows) f32, running Σ e²/2 (zero it before the first block) */
  loss: GPUBuffer;
  rows: number;
  cols: number;
  /** First permuted column of the block, a multiple of 4. */
  i1: number;
  /** Columns in the block, 1..blockSize. */
  count: number;
  /** Affine: permuted columns per group (0: one grid per row). Ignored for a LUT. */
  groupSize: number;
  /** Affine: groups per row in grid (1 when groupSize is 0). */
  nGroups: number;
  /** False for RTN: quantize without error feedback. */
  feedback: boolean;
}

/** The WGSL source (variants are `override` constants); `split`: U rows from two parts (`uRows`). */
export function gptqBlockShader({ split = false }: { split?: boolean } = {}): string {
  return wgsl(matrixAccess("U", split ? { binding: 7, access: "read" } : null));
}

/**
 * Builds the GPTQ block kernel.
 * @param gpu the device
 * @param spec block width, grid kind and bits
 * @returns a kernel; `bind` fixes one block's buffers and column range
 */
export function createGptqBlock(gpu: Gpu, spec: GptqBlockSpec): Kernel<GptqBlockArgs> {
  const { blockSize, lut, bits } = spec;
  const lanes = 32;
  const tr = Math.max(1, Math.min(8, Math.floor(gpu.maxInvocationsPerWorkgroup / lanes)));
  const wgBytes = tr * blockSize * 5 + 8 * tr + 4 * tr * lanes + (lut ? 4 * tr * 2 ** bits : 0);
  const problem = !(Number.isInteger(blockSize) && blockSize >= 4 && blockSize % 4 === 0)
    ? `blockSize ${blockSize} is not a positive multiple of 4`
    : !(Number.isInteger(bits) && bits >= 1 && bits <= (lut ? 4 : 8))
    ? `bits ${bits} is outside 1..${lut ? 4 : 8}`
    : wgBytes > gpu.maxWorkgroupStorageBytes
    ? `needs ${wgBytes} bytes of workgroup memory (${gpu.maxWorkgroupStorageBytes})`
    : null;
  if (problem) throw new Error(`Cannot build gptq_block ${JSON.stringify(spec)}: ${problem}`);
  const constants = { TR: tr, L: lanes, B: blockSize, LUT: lut ? 1 : 0, MAXQ: 2 ** bits - 1 };
  const bindings = [
    "uniform",
    "storage",
    "read-only-storage",
    "read-only-storage",
    "storage",
    "storage",
    "storage",
  ] as const;
  const pipelineFor = (split: number | null) =>
    split === null
      ? getPipeline(gpu, { name: "gptq_block", code: gptqBlockShader(), constants, bindings, spec })
      : getPipeline(gpu, {
        name: "gptq_block",
        code: gptqBlockShader({ split: true }),
        constants: { ...constants, U_SPLIT: split },
        bindings: [...bindings, "read-only-storage"],
        spec: { ...spec, split: true },
      });
  pipelineFor(null);
  return {
    bind(a: GptqBlockArgs): Encodable {
      checkArgs(a, spec);
      const { rows, cols, i1, count } = a;
      const u = uRows(gpu, a.U, { rowLen: cols, r0: i1, nRows: count });
      const pipeline = pipelineFor(u.split);
      const params = uniformParams(gpu, [
        ["u32", rows],
        ["u32", cols],
        ["u32", i1],
        ["u32", count],
        ["u32", u.base],
        ["u32", ceilDiv(cols, 4)],
        ["u32", lut ? 0 : a.groupSize],
        ["u32", lut ? 1 : a.nGroups],
        ["u32", a.feedback ? 1 : 0],
      ], "gptq_block params");
      const resources = [params, a.W, u.bindings[0], a.grid, a.codes, a.err, a.loss, ...u.bindings.slice(1)];
      const bindGroup = gpu.device.createBindGroup({
        label: "gptq_block",
        layout: pipeline.getBindGroupLayout(0),
        entries: resources.map((r, binding) => ({
          binding,
          resource: r instanceof GPUBuffer ? { buffer: r } : r,
        })),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows, tr));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}

/** Load-time shape and size checks; throws a message naming the offending value. */
function checkArgs(a: GptqBlockArgs, { blockSize, lut, bits }: GptqBlockSpec): void {
  const { rows, cols, i1, count } = a;
  const gridBytes = lut ? rows * 2 ** bits * 4 : rows * a.nGroups * 8;
  const problem = !(rows > 0 && cols > 0)
    ? `rows ${rows} and cols ${cols} must be positive`
    : i1 % 4 !== 0
    ? `i1 ${i1} is not a multiple of 4`
    : !(count >= 1 && count <= blockSize && i1 + count <= cols)
    ? `count ${count} at i1 ${i1} leaves [1, ${blockSize}] or passes cols ${cols}`
    : !lut && a.groupSize > 0 && a.nGroups < ceilDiv(cols, a.groupSize)
    ? `nGroups ${a.nGroups} is less than ceil(${cols}/${a.groupSize})`
    : a.W.size < rows * cols * 4
    ? `W holds ${a.W.size} bytes, needs ${rows * cols * 4}`
    : a.grid.size < gridBytes
    ? `grid holds ${a.grid.size} bytes, needs ${gridBytes}`
    : a.codes.size < rows * ceilDiv(cols, 4) * 4
    ? `codes holds ${a.codes.size} bytes, needs ${rows * ceilDiv(cols, 4) * 4}`
    : a.err.size < blockSize * rows * 4
    ? `err holds ${a.err.size} bytes, needs ${blockSize * rows * 4}`
    : a.loss.size < rows * 4
    ? `loss holds ${a.loss.size} bytes, needs ${rows * 4}`
    : null;
  if (problem) throw new Error(`Cannot bind gptq_block: ${problem}`);
}
