/**
 * RoPE with per-row positions plus the append of k and v into a paged KV cache (vLLM's PagedAttention
 * layout, Kwon et al. 2023), in one dispatch (two for int8 pools): the batched counterpart of rope.ts's
 * `append`.
 *
 * The cache of one layer is a pool of blocks of `blockSize` positions: pool[(block · blockSize + p %
 * blockSize) · kvDim + c], f16 (two per u32, element 2j low) or f32; or int8 (vLLM's quantized KV cache,
 * `--kv-cache-dtype int8`): each (pool row, KV head) is headDim/4 words of four codes (element 4w in the low
 * byte) and then its f32 scale, code = round(x · 127 / max|x|) over the head's row, x ≈ code · scale with
 * scale = max|x| / 127 (a relative error of at most 1/254 of the row's largest element; half the f16
 * bytes). Sequence slot s finds the block of
 * position p at blockTable[s · maxBlocks + p / blockSize]. Row t of the forward is at position rowPos[t]
 * of slot rowSlot[t]; q and k are rotated as in rope.ts (θ = fl32(f32(pos) · invFreq[i]), same cos/sin),
 * and the rotated k and v land in the pool. Padding rows (slot NONE), positions past the table and
 * unmapped blocks (NONE) are not written. Each invocation takes two adjacent pairs (i, i + 1), so an
 * f16 word is written whole; headDim must be a multiple of 4. An int8 head row needs its maximum first, so
 * int8 pools take a second dispatch for k and v (INT8_APPEND_WGSL: a workgroup per row and KV head).
 */
import {
  bindBuffers,
  type BindingKind,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  sequence,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";
import { ROPE_COS_SIN_WGSL } from "./rope.ts";

/** Element type of the paged pool. */
export type KvType = "f16" | "f32" | "int8";

/** Bytes of one position of one layer's K (or V) pool. */
export function poolBytesPerPosition(kvType: KvType, nKvHeads: number, headDim: number): number {
  const kvDim = nKvHeads * headDim;
  return kvType === "f16" ? 2 * kvDim : kvType === "f32" ? 4 * kvDim : kvDim + 4 * nKvHeads;
}

/**
 * WGSL: a layer's K and V pools at bindings `first` and `first + 1` (read-only), and `loadK(i)`, `loadV(i)`:
 * the i-th vec4 of the pool's elements (pool row · kvDim / 4 + d) as f32 (the attention kernels). `hd4` is
 * a WGSL expression for headDim / 4, which the int8 layout needs.
 */
export function pagedPoolWgsl(kvType: KvType, hd4: string, first = 5): string {
  const decl = (name: string, type: string, note: string) =>
    `@group(0) @binding(${name === "kPool" ? first : first + 1}) var<storage, read> ${name}: ${type};${note}`;
  if (kvType === "int8") {
    return `${decl("kPool", "array<u32>", " // per (row, KV head): HD4 words of 4 codes, f32 scale")}
${decl("vPool", "array<u32>", "")}
// vec4 i of the elements is word i + i / HD4 (one scale word after each head row); its scale ends that row.
fn loadK(i: u32) -> vec4<f32> {
  let h = i / (${hd4});
  return vec4<f32>(unpack4xI8(kPool[i + h])) * bitcast<f32>(kPool[h * (${hd4} + 1u) + ${hd4}]);
}
fn loadV(i: u32) -> vec4<f32> {
  let h = i / (${hd4});
  return vec4<f32>(unpack4xI8(vPool[i + h])) * bitcast<f32>(vPool[h * (${hd4} + 1u) + ${hd4}]);
}`;
  }
  return kvType === "f16"
    ? `${decl("kPool", "array<vec2<u32>>", " // (rows, kvDim) f16, 4 per vec2")}
${decl("vPool", "array<vec2<u32>>", "")}
fn loadK(i: u32) -> vec4<f32> { let w = kPool[i]; return vec4(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn loadV(i: u32) -> vec4<f32> { let w = vPool[i]; return vec4(unpack2x16float(w.x), unpack2x16float(w.y)); }`
    : `${decl("kPool", "array<vec4<f32>>", " // (rows, kvDim) f32")}
${decl("vPool", "array<vec4<f32>>", "")}
fn loadK(i: u32) -> vec4<f32> { return kPool[i]; }
fn loadV(i: u32) -> vec4<f32> { return vPool[i]; }`;
}

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
  if (kvType === "int8") return appendWgsl("u32", "return; // k and v: INT8_APPEND_WGSL's dispatch");
  const store = kvType === "f16"
    ? `kPool[dst / 2u] = pack2x16float(ka);
      kPool[(dst + half) / 2u] = pack2x16float(kb);
      vPool[dst / 2u] = pack2x16float(vec2(v[base], v[base + 1u]));
      vPool[(dst + half) / 2u] = pack2x16float(vec2(v[base + half], v[base + half + 1u]));`
    : `kPool[dst] = ka.x; kPool[dst + 1u] = ka.y; kPool[dst + half] = kb.x; kPool[dst + half + 1u] = kb.y;
      vPool[dst] = v[base]; vPool[dst + 1u] = v[base + 1u];
      vPool[dst + half] = v[base + half]; vPool[dst + half + 1u] = v[base + half + 1u];`;
  return appendWgsl(kvType === "f16" ? "u32" : "f32", store);
}

/**
 * Both dispatches' params, bindings (the int8 one leaves q alone), the page lookup and cos/sin; `elem`: the
 * pool's element type. zero: always 0 (it keeps RoPE's angle rounded to f32, rot() below).
 */
function headerWgsl(elem: string): string {
  return /* wgsl */ `
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
@group(0) @binding(8) var<storage, read_write> kPool: array<${elem}>; // (blocks · blockSize, kvDim), or int8 rows
@group(0) @binding(9) var<storage, read_write> vPool: array<${elem}>;

var<private> PAGE: Page;
${PAGED_ROW_WGSL}
${ROPE_COS_SIN_WGSL}`;
}

/**
 * The int8 pool's second dispatch: one workgroup per (row, KV head) rotates k's head row and quantizes it and
 * v's (the maximum needs the whole row, so the first dispatch rotates q alone): invocation i takes the pair
 * (i, i + headDim/2), the workgroup meets at a barrier for the maximum, then invocation w packs word w.
 */
const INT8_APPEND_WGSL = /* wgsl */ `
override HALF: u32 = 64u; // headDim / 2: the workgroup's invocations, one pair each

${headerWgsl("u32")}
var<workgroup> kx: array<f32, 2 * HALF>; // the rotated k head row
var<workgroup> vx: array<f32, 2 * HALF>;
var<workgroup> kMax: array<f32, HALF>;
var<workgroup> vMax: array<f32, HALF>;

fn code(x: f32, inv: f32) -> i32 { return i32(round(x * inv)); }

@compute @workgroup_size(HALF)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) i: u32) {
  PAGE = Page(params.blockSize, params.maxBlocks);
  let flat = wid.x + wid.y * nwg.x; // uniform: every return below is the whole workgroup's
  let t = flat / params.nKvHeads;
  let kvh = flat % params.nKvHeads;
  if (t >= params.rows) { return; }
  let pos = rowPos[t];
  let row = physRow(rowSlot[t], pos);
  if (row == 0xffffffffu) { return; }
  let headDim = 2u * HALF;
  let hb = (t * params.nKvHeads + kvh) * headDim;
  let angle = bitcast<f32>(bitcast<u32>(f32(pos) * invFreq[i]) ^ params.zero);
  let cs = cosSin(angle);
  let a = k[hb + i];
  let b = k[hb + i + HALF];
  kx[i] = a * cs.x - b * cs.y;
  kx[i + HALF] = b * cs.x + a * cs.y;
  vx[i] = v[hb + i];
  vx[i + HALF] = v[hb + i + HALF];
  kMax[i] = max(abs(kx[i]), abs(kx[i + HALF]));
  vMax[i] = max(abs(vx[i]), abs(vx[i + HALF]));
  workgroupBarrier();
  var km = 0.0;
  var vm = 0.0;
  for (var e = 0u; e < HALF; e++) {
    km = max(km, kMax[e]);
    vm = max(vm, vMax[e]);
  }
  let kInv = select(0.0, 127.0 / km, km > 0.0);
  let vInv = select(0.0, 127.0 / vm, vm > 0.0);
  let hd4 = headDim / 4u;
  let w0 = (row * params.nKvHeads + kvh) * (hd4 + 1u); // this head row's first word
  if (i < hd4) {
    let e = 4u * i;
    kPool[w0 + i] = pack4xI8(vec4(code(kx[e], kInv), code(kx[e + 1u], kInv), code(kx[e + 2u], kInv),
      code(kx[e + 3u], kInv)));
    vPool[w0 + i] = pack4xI8(vec4(code(vx[e], vInv), code(vx[e + 1u], vInv), code(vx[e + 2u], vInv),
      code(vx[e + 3u], vInv)));
  }
  if (i == 0u) {
    kPool[w0 + hd4] = bitcast<u32>(km / 127.0);
    vPool[w0 + hd4] = bitcast<u32>(vm / 127.0);
  }
}
`;

/** The kernel around a pool's store of one invocation's k and v elements (`store`; `elem`: the pool's). */
function appendWgsl(elem: string, store: string): string {
  return /* wgsl */ `
override WG: u32 = 256u;
${headerWgsl(elem)}
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
  let ka = vec2(r0.x, r1.x); // elements j, j + 1 (the int8 store recomputes its own)
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

const RO = "read-only-storage" as const;
/** Both dispatches' bindings: params, rowPos, rowSlot, blockTable, invFreq, q, k, v, kPool, vPool. */
const BINDINGS: BindingKind[] = ["uniform", RO, RO, RO, RO, "storage", RO, RO, "storage", "storage"];

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
        bindings: BINDINGS,
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
      const buffers = [params, a.rowPos, a.rowSlot, a.blockTable, a.invFreq, a.q, a.k, a.v, a.kPool, a.vPool];
      const invocations = a.rows * (a.nHeads + a.nKvHeads) * (half / 2);
      const rope = singleDispatch(
        pipeline,
        bindBuffers(gpu, pipeline, buffers),
        dispatch2d(gpu, ceilDiv(invocations, wg)),
      );
      if (a.layout.kvType !== "int8") return rope;
      // k and v: a workgroup of headDim/2 per row and KV head, over the same params and buffers
      if (half > gpu.maxInvocationsPerWorkgroup) {
        throw new Error(`Cannot bind the int8 KV append: headDim ${a.headDim} needs ${half} invocations`);
      }
      const int8 = getPipeline(gpu, {
        name: "paged_kv_int8_append",
        code: INT8_APPEND_WGSL,
        constants: { HALF: half },
        bindings: BINDINGS,
      });
      const append = singleDispatch(
        int8,
        bindBuffers(gpu, int8, buffers),
        dispatch2d(gpu, a.rows * a.nKvHeads),
      );
      return sequence([rope, append]);
    },
  };
}
