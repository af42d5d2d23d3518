/**
 * The row bookkeeping of a batched forward (continuous batching): which sequence slot and position every
 * row of the forward belongs to, which token it embeds, and which rows get logits.
 *
 * The host records several forwards into one submit (docs/webgpu.md §3), so it cannot write each
 * forward's rows between them. Instead it writes a "program" for the whole chunk: for step k, up to
 * `rowStride` row entries (slot, pos, token) and up to `gatherStride` row indices whose logits are wanted.
 * `prepare` (the first dispatch of every forward) reads step k = state.step and materialises
 *   rowSlot[r], rowPos[r], ids[r] = token, or slots[slot].token when token is NONE (a decode row takes the
 *   id its sequence sampled in the previous step, which only the GPU knows), gather[i], and each row's
 *   attention split count with the grid of the paged attention (an indirect dispatch);
 * after the forward, `advance` (step_state.ts) moves state.step on. Rows with slot NONE are padding:
 * their id is 0 and every kernel leaves their cache and outputs alone.
 * `gatherRows` copies the rows named by `gather` into a compact buffer (the LM head's input).
 */
import {
  bindBuffers,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";

/** Marks a padding row (slot) or a row that embeds its slot's last sampled token (token). */
export const ROW_NONE = 0xffffffff;
/** u32 words of one row entry of the program: slot, pos, token, reserved. */
export const ROW_ENTRY_WORDS = 4;
/** u32 words of one slot's state: token (last sampled id), step (sampled ids so far), 2 reserved. */
export const SLOT_STATE_WORDS = 4;

/** WGSL declaration of a slot's state, for kernels that read or write it. */
export const SLOT_STRUCT = /* wgsl */ `
struct SlotState { token: u32, step: u32, reserved0: u32, reserved1: u32 }
`;

/** Most attention splits of one row (paged_attention.ts). */
export const MAX_ROW_SPLITS = 64;
/** u32 words of the dispatch buffer: the attention's indirect (x, y, z), then the split cap. */
export const DISPATCH_WORDS = 4;

const PREPARE_WGSL = /* wgsl */ `
${STATE_STRUCT}
${SLOT_STRUCT}
override WG: u32 = 256u;
const NONE = 0xffffffffu;

struct Params {
  rows: u32, logitRows: u32, rowStride: u32, gatherStride: u32,
  nKvHeads: u32, span: u32, maxSplits: u32, maxWorkgroups: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> progRows: array<vec4<u32>>; // (steps, rowStride): slot, pos, token
@group(0) @binding(3) var<storage, read> progGather: array<u32>;     // (steps, gatherStride)
@group(0) @binding(4) var<storage, read> slots: array<SlotState>;
@group(0) @binding(5) var<storage, read_write> ids: array<u32>;      // (rows)
@group(0) @binding(6) var<storage, read_write> rowPos: array<u32>;   // (rows)
@group(0) @binding(7) var<storage, read_write> rowSlot: array<u32>;  // (rows)
@group(0) @binding(8) var<storage, read_write> gather: array<u32>;   // (logitRows)
@group(0) @binding(9) var<storage, read_write> rowSplits: array<u32>; // (rows)
@group(0) @binding(10) var<storage, read_write> dispatch: array<u32, 4>; // x, y, z, cap

var<workgroup> red: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let k = state.step;
  var most = 1u;
  for (var i = lid; i < params.rows; i += WG) {
    let e = progRows[k * params.rowStride + i];
    let pad = e.x == NONE;
    rowSlot[i] = e.x;
    rowPos[i] = select(e.y, 0u, pad);
    var id = e.z;
    if (pad) {
      id = 0u;
    } else if (id == NONE) {
      id = slots[e.x].token;
    }
    ids[i] = id;
    // A row's split count depends on its own length only, so its sums do not depend on the batch.
    let len = select(e.y + 1u, 1u, pad);
    let n = clamp((len + params.span - 1u) / params.span, 1u, params.maxSplits);
    rowSplits[i] = n;
    most = max(most, n);
  }
  for (var i = lid; i < params.logitRows; i += WG) { gather[i] = progGather[k * params.gatherStride + i]; }
  red[lid] = most;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let cap = red[0];
    let count = params.rows * params.nKvHeads * cap;
    let y = (count + params.maxWorkgroups - 1u) / params.maxWorkgroups;
    dispatch[0] = (count + y - 1u) / y;
    dispatch[1] = y;
    dispatch[2] = 1u;
    dispatch[3] = cap;
  }
}
`;

export interface BatchPrepareArgs {
  /** state: [STATE_WORDS] u32 (step_state.ts); state.step is the step of the chunk's program */
  state: GPUBuffer;
  /** progRows: (steps, rowStride) entries of ROW_ENTRY_WORDS u32: slot (or ROW_NONE), pos, token (or ROW_NONE) */
  progRows: GPUBuffer;
  /** progGather: (steps, gatherStride) u32 row indices (ROW_NONE: no row) */
  progGather: GPUBuffer;
  /** slots: (maxSlots) SlotState */
  slots: GPUBuffer;
  ids: GPUBuffer;
  rowPos: GPUBuffer;
  rowSlot: GPUBuffer;
  gather: GPUBuffer;
  /** rowSplits: (rows) u32, attention splits of each row: ⌈(pos + 1) / splitSpan⌉ in [1, maxSplits] */
  rowSplits: GPUBuffer;
  /** dispatch: [DISPATCH_WORDS] u32, a {@link createDispatchBuffer} (the attention's indirect grid and cap) */
  dispatch: GPUBuffer;
  rows: number;
  logitRows: number;
  rowStride: number;
  gatherStride: number;
  nKvHeads: number;
  /** positions per attention split of a row */
  splitSpan: number;
  /** most splits of a row (default MAX_ROW_SPLITS) */
  maxSplits?: number;
}

/** A buffer the prepare kernel writes and the attention dispatches from (storage and indirect). */
export function createDispatchBuffer(gpu: Gpu, label: string): GPUBuffer {
  return gpu.device.createBuffer({
    label,
    size: DISPATCH_WORDS * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.INDIRECT | GPUBufferUsage.COPY_DST |
      GPUBufferUsage.COPY_SRC,
  });
}

/**
 * Builds `prepare` (one workgroup: it also reduces the largest split count for the attention's grid).
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers and row counts
 */
export function createBatchPrepare(gpu: Gpu): Kernel<BatchPrepareArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "batch_prepare",
    code: PREPARE_WGSL,
    constants: { WG: wg },
    bindings: [
      "uniform",
      ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
      ...(["storage", "storage", "storage", "storage", "storage", "storage"] as const),
    ],
  });
  return {
    bind(a: BatchPrepareArgs): Encodable {
      if (a.rows > a.rowStride || a.logitRows > a.gatherStride || a.rows < 1) {
        throw new Error(
          `Cannot bind batch_prepare: ${a.rows} rows and ${a.logitRows} logit rows exceed strides ` +
            `${a.rowStride} and ${a.gatherStride}`,
        );
      }
      const params = uniformParams(gpu, [
        ["u32", a.rows],
        ["u32", a.logitRows],
        ["u32", a.rowStride],
        ["u32", a.gatherStride],
        ["u32", a.nKvHeads],
        ["u32", a.splitSpan],
        ["u32", Math.min(a.maxSplits ?? MAX_ROW_SPLITS, MAX_ROW_SPLITS)],
        ["u32", gpu.maxWorkgroupsPerDimension],
      ], "batch_prepare params");
      const bindGroup = bindBuffers(gpu, pipeline, [
        params,
        a.state,
        a.progRows,
        a.progGather,
        a.slots,
        a.ids,
        a.rowPos,
        a.rowSlot,
        a.gather,
        a.rowSplits,
        a.dispatch,
      ]);
      return singleDispatch(pipeline, bindGroup, [1, 1]);
    },
  };
}

const GATHER_WGSL = /* wgsl */ `
override WG: u32 = 256u;
const NONE = 0xffffffffu;
struct Params { rows: u32, dim: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gather: array<u32>;  // (rows) source row indices
@group(0) @binding(2) var<storage, read> x: array<f32>;       // (≥ max index + 1, dim)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // (rows, dim)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.rows * params.dim) { return; }
  let src = gather[i / params.dim];
  out[i] = select(x[src * params.dim + i % params.dim], 0.0, src == NONE);
}
`;

export interface GatherRowsArgs {
  /** gather: (rows) u32 indices into x's rows (or a slice of a longer list); ROW_NONE gives a row of zeros */
  gather: GPUBuffer | GPUBufferBinding;
  /** x: (…, dim) f32 */
  x: GPUBuffer;
  /** out: (rows, dim) f32 */
  out: GPUBuffer;
  rows: number;
  dim: number;
}

/**
 * Builds `gatherRows`: out[i, :] = x[gather[i], :].
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers and sizes
 */
export function createGatherRows(gpu: Gpu): Kernel<GatherRowsArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "gather_rows",
    code: GATHER_WGSL,
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
  });
  return {
    bind({ gather, x, out, rows, dim }: GatherRowsArgs): Encodable {
      const params = uniformParams(gpu, [["u32", rows], ["u32", dim]], "gather_rows params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, gather, x, out]);
      return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, ceilDiv(rows * dim, wg)));
    },
  };
}
