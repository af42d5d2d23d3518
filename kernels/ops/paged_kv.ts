/**
 * RoPE with per-row positions plus the append of k and v into a paged KV cache (vLLM's PagedAttention
 * layout, Kwon et al. 2023), in one dispatch: the batched counterpart of rope.ts's `append`.
 *
 * The cache of one layer is a pool of blocks of `blockSize` positions: pool[(block · blockSize + p %
 * blockSize) · kvDim + c], f16 (two per u32, element 2j low) or f32. Sequence slot s finds the block of
 * position p at blockTable[s · maxBlocks + p / blockSize]. Row t of the forward is at position rowPos[t]
 * of slot rowSlot[t]; q and k are rotated as in rope.ts (θ = fl32(f32(pos) · invFreq[i]), same cos/sin),
 * and the rotated k and v land in the pool. Padding rows (slot NONE), positions past the table and
 * unmapped blocks (NONE) are not written. Each invocation takes two adjacent pairs (i, i + 1), so an
 * f16 word is written whole; headDim must be a multiple of 4.
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
  uniformParams,
} from "../core/mod.ts";
import { ROPE_COS_SIN_WGSL } from "./rope.ts";

/** Element type of the paged pool. */
export type KvType = "f16" | "f32";

/** Where a paged cache puts things: shared by paged_kv.ts and paged_attention.ts. */
export interface PagedLayout {
  /** positions per block */
  blockSize: number;
  /** entries per slot in the block table */
  maxBlocks: number;
  kvType: KvType;
}

/** WGSL: `fn physRow(slot, pos) -> u32` (pool row of a position, NONE when unmapped); needs the bindings. */
export const PAGED_ROW_WGSL = /* wgsl */ `
fn physRow(slot: u32, pos: u32) -> u32 {
  let b = pos / PAGE.blockSize;
  if (slot == 0xffffffffu || b >= PAGE.maxBlocks) { return 0xffffffffu; }
  let block = blockTable[slot * PAGE.maxBlocks + b];
  if (block == 0xffffffffu) { return 0xffffffffu; }
  return block * PAGE.blockSize + pos % PAGE.blockSize;
}
`;

function wgsl(kvType: KvType): string {
  const store = kvType === "f16"
    ? `kPool[dst / 2u] = pack2x16float(ka);
      kPool[(dst + half) / 2u] = pack2x16float(kb);
      vPool[dst / 2u] = pack2x16float(vec2(v[base], v[base + 1u]));
      vPool[(dst + half) / 2u] = pack2x16float(vec2(v[base + half], v[base + half + 1u]));`
    : `kPool[dst] = ka.x; kPool[dst + 1u] = ka.y; kPool[dst + half] = kb.x; kPool[dst + half + 1u] = kb.y;
      vPool[dst] = v[base]; vPool[dst + 1u] = v[base + 1u];
      vPool[dst + half] = v[base + half]; vPool[dst + half + 1u] = v[base + half + 1u];`;
  const elem = kvType === "f16" ? "u32" : "f32";
  return /* wgsl */ `
override WG: u32 = 256u;

// zero: always 0 (see the angle below)
struct Params { rows: u32, nHeads: u32, nKvHeads: u32, half: u32, zero: u32, blockSize: u32, maxBlocks: u32 }
struct Page { blockSize: u32, maxBlocks: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowPos: array<u32>;      // (rows)
@group(0) @binding(2) var<storage, read> rowSlot: array<u32>;     // (rows)
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;  // (slots, maxBlocks)
@group(0) @binding(4) var<storage, read> invFreq: array<f32>;     // (headDim/2)
@group(0) @binding(5) var<storage, read_write> q: array<f32>;     // (rows, nHeads·headDim), in place
@group(0) @binding(6) var<storage, read> k: array<f32>;           // (rows, kvDim)
@group(0) @binding(7) var<storage, read> v: array<f32>;           // (rows, kvDim)
@group(0) @binding(8) var<storage, read_write> kPool: array<${elem}>; // (blocks · blockSize, kvDim)
@group(0) @binding(9) var<storage, read_write> vPool: array<${elem}>;

var<private> PAGE: Page;
${PAGED_ROW_WGSL}
${ROPE_COS_SIN_WGSL}

// θ must be the f32-rounded product, as in PyTorch; XOR with a uniform zero keeps the compiler from
// fusing the product into the reduction (rope.ts).
fn rot(pos: u32, j: u32, a: f32, b: f32) -> vec2<f32> {
  let angle = bitcast<f32>(bitcast<u32>(f32(pos) * invFreq[j]) ^ params.zero);
  let cs = cosSin(angle);
  return vec2(a * cs.x - b * cs.y, b * cs.x + a * cs.y);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  PAGE = Page(params.blockSize, params.maxBlocks);
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let heads = params.nHeads + params.nKvHeads;
  let quarter = params.half / 2u;
  if (i >= params.rows * heads * quarter) { return; }
  let j = 2u * (i % quarter);
  let head = (i / quarter) % heads;
  let t = i / (quarter * heads);
  let pos = rowPos[t];
  let half = params.half;
  let headDim = 2u * half;
  if (head < params.nHeads) {
    let base = (t * params.nHeads + head) * headDim + j;
    let r0 = rot(pos, j, q[base], q[base + half]);
    let r1 = rot(pos, j + 1u, q[base + 1u], q[base + half + 1u]);
    q[base] = r0.x;
    q[base + half] = r0.y;
    q[base + 1u] = r1.x;
    q[base + half + 1u] = r1.y;
    return;
  }
  let kvh = head - params.nHeads;
  let kvDim = params.nKvHeads * headDim;
  let row = physRow(rowSlot[t], pos);
  if (row == 0xffffffffu) { return; }
  let base = t * kvDim + kvh * headDim + j;
  let r0 = rot(pos, j, k[base], k[base + half]);
  let r1 = rot(pos, j + 1u, k[base + 1u], k[base + half + 1u]);
  let ka = vec2(r0.x, r1.x); // elements j, j + 1
  let kb = vec2(r0.y, r1.y); // elements j + half, j + half + 1
  let dst = row * kvDim + kvh * headDim + j;
  ${store}
}
`;
}

export interface PagedRopeAppendArgs {
  /** q: (rows, nHeads · headDim) f32, rotated in place */
  q: GPUBuffer;
  /** k, v: (rows, nKvHeads · headDim) f32; k is rotated on its way into the pool (k itself is unchanged) */
  k: GPUBuffer;
  v: GPUBuffer;
  /** invFreq: (headDim/2) f32 */
  invFreq: GPUBuffer;
  /** rowPos, rowSlot: (rows) u32 (batch_rows.ts) */
  rowPos: GPUBuffer;
  rowSlot: GPUBuffer;
  /** blockTable: (slots, maxBlocks) u32 */
  blockTable: GPUBuffer;
  /** kPool, vPool: (blocks · blockSize, nKvHeads · headDim) of layout.kvType */
  kPool: GPUBuffer;
  vPool: GPUBuffer;
  layout: PagedLayout;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/**
 * Builds the paged RoPE + append.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers and sizes
 */
export function createPagedRopeAppend(gpu: Gpu): Kernel<PagedRopeAppendArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  return {
    bind(a: PagedRopeAppendArgs): Encodable {
      if (a.headDim % 4 !== 0) {
        throw new Error(`Cannot bind paged RoPE: headDim ${a.headDim} must be a multiple of 4`);
      }
      const pipeline = getPipeline(gpu, {
        name: "paged_rope_append",
        code: wgsl(a.layout.kvType),
        constants: { WG: wg },
        bindings: [
          "uniform",
          ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
          "storage",
          "read-only-storage",
          "read-only-storage",
          "storage",
          "storage",
        ],
        spec: a.layout.kvType,
      });
      const half = a.headDim / 2;
      const params = uniformParams(gpu, [
        ["u32", a.rows],
        ["u32", a.nHeads],
        ["u32", a.nKvHeads],
        ["u32", half],
        ["u32", 0],
        ["u32", a.layout.blockSize],
        ["u32", a.layout.maxBlocks],
      ], "paged_rope_append params");
      const bindGroup = bindBuffers(gpu, pipeline, [
        params,
        a.rowPos,
        a.rowSlot,
        a.blockTable,
        a.invFreq,
        a.q,
        a.k,
        a.v,
        a.kPool,
        a.vPool,
      ]);
      const invocations = a.rows * (a.nHeads + a.nKvHeads) * (half / 2);
      return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, ceilDiv(invocations, wg)));
    },
  };
}
