/**
 * Causal GQA attention over a paged KV cache for a batch of rows from different sequences (vLLM's
 * PagedAttention, Kwon et al. 2023): row t of the forward, at position rowPos[t] of slot rowSlot[t],
 * attends to positions 0..rowPos[t] of its own sequence, found through the block table (paged_kv.ts):
 *   out[t, h] = Σ_{lo ≤ p ≤ pos_t} softmax_p(s(q[t, h] · k[p, h/G] · scale)) · v[p, h/G],
 * with attention.ts's scale (default 1/√headDim), sliding window (lo = pos_t − window + 1) and soft cap s.
 * Decode rows of many sequences and the prompt rows of a chunked prefill share one dispatch; a prompt's
 * rows are causal because its positions were appended (paged_kv.ts) before this runs.
 *
 * The work split and the tile walk are attention.ts's (one WGSL, attention_wgsl.ts): one workgroup per (row, KV head, split) owns the G query heads of
 * that KV head, walks its span in tiles with an online softmax, and (flash-decoding, Dao et al. 2023)
 * splits each row's positions over workgroups whose partial (m, l, acc) triples a second dispatch merges
 * (attention_combine.ts's merge). A row's split count depends only on its own length (batch_rows.ts's
 * prepare computes it, and the grid as an indirect dispatch), so its result does not depend on which
 * other rows share the forward: batched decode gives the bits of one-at-a-time decode. Each tile first looks up the pool row of each of its positions. K and V
 * are f16 (unpacked to f32), f32 or int8 codes with a scale per head row (paged_kv.ts); everything else is
 * f32. Padding rows (slot NONE) output zeros.
 */
import {
  bindBuffers,
  type BindingKind,
  createStorage,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  uniformParams,
} from "../core/mod.ts";
import { attentionPlan, attentionWorkgroupBytes } from "./attention.ts";
import { MAX_ROW_SPLITS } from "./batch_rows.ts";
import { createPagedCombine } from "./attention_combine.ts";
import { SOFTCAP_FN } from "./softcap.ts";
import { PAGED_ROW_WGSL, type PagedLayout, pagedPoolWgsl } from "./paged_kv.ts";
import { attentionEpilogueWgsl, attentionTileWgsl } from "./attention_wgsl.ts";

/**
 * WGSL of the staged-keys build (f16 pools): each tile's K rows go to workgroup memory first, a row's
 * columns read by neighbouring invocations (coalesced), rows padded by one vec2 so the scores' reads of
 * eight rows at one column fall in different banks; the scores then read them from there.
 */
const STAGE_K = {
  wgsl: `
  for (var e = lid; e < n * HD4; e += WG) {
    let sj = e / HD4;
    let sd = e % HD4;
    kt[sj * (HD4 + 1u) + sd] = kPool[rowW[sj] * params.nKvHeads * HD4 + kvh * HD4 + sd];
  }
  workgroupBarrier();`,
  loadK: (j: string, d: string) => `unpackKt(kt[${j} * (HD4 + 1u) + ${d}])`,
  decl: `override KT: u32 = 1u; // TILE · (HD4 + 1): the staged K rows, padded
var<workgroup> kt: array<vec2<u32>, KT>;
fn unpackKt(w: vec2<u32>) -> vec4<f32> { return vec4(unpack2x16float(w.x), unpack2x16float(w.y)); }`,
};

function wgsl(kvType: PagedLayout["kvType"], stageKeys: boolean): string {
  const pool = pagedPoolWgsl(kvType, "HD4");
  return /* wgsl */ `
const NONE = 0xffffffffu;

// window: 0 for none; softcap: 0 for none
struct Params { rows: u32, nKvHeads: u32, scale: f32, blockSize: u32, maxBlocks: u32, window: u32, softcap: f32 }
struct Page { blockSize: u32, maxBlocks: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowPos: array<u32>;
@group(0) @binding(2) var<storage, read> rowSlot: array<u32>;
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;       // (rows, nHeads·headDim)
${pool}
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>; // (rows, nHeads·headDim)
@group(0) @binding(8) var<storage, read_write> partAcc: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> partMl: array<vec2<f32>>;
@group(0) @binding(10) var<storage, read> rowSplits: array<u32>;   // (rows) splits of each row
@group(0) @binding(11) var<storage, read> dispatch: array<u32, 4>; // [3]: the largest split count (cap)

var<private> PAGE: Page;
${PAGED_ROW_WGSL}

${
    attentionTileWgsl({
      scoreParams: "slot: u32, ",
      prelude: `
  if (lid < TILE) { rowW[lid] = select(0u, physRow(slot, start + lid), lid < n); }
  workgroupBarrier();`,
      row: (j) => `rowW[${j}]`,
      loadK: (i) => `loadK(${i})`,
      loadV: (i) => `loadV(${i})`,
      ...(stageKeys ? { stage: STAGE_K } : {}),
    })
  }
var<workgroup> rowW: array<u32, TILE>; // pool row of each position of the tile
${stageKeys ? STAGE_K.decl : ""}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  PAGE = Page(params.blockSize, params.maxBlocks);
  let flat = wid.x + wid.y * nwg.x;
  let rows = params.rows;
  let cap = dispatch[3];
  if (flat >= rows * params.nKvHeads * cap) { return; }
  let t = flat % rows;
  let kvh = (flat / rows) % params.nKvHeads;
  let split = flat / (rows * params.nKvHeads);
  let nSplits = rowSplits[t];
  if (split >= nSplits) { return; }
  let slot = rowSlot[t];
  let pad = slot == NONE;
  let len = select(rowPos[t] + 1u, 0u, pad);
  let span = splitSpan(len, params.window, nSplits, split);
  let begin = span.x;
  let end = span.y;
  let qRow = (t * params.nKvHeads + kvh) * QN;

  for (var i = lid; i < QN; i += WG) { qs[i] = q[qRow + i] * params.scale; }
  if (lid < G) { mW[lid] = NEG; }
  workgroupBarrier();
  var acc: Acc;
  for (var start = begin; start < end; start += TILE) {
    let n = min(TILE, end - start);
    scoreTile(lid, slot, kvh, start, n);
    accumulateTile(lid, kvh, start, n, &acc);
    workgroupBarrier();
  }
${
    attentionEpilogueWgsl({
      nSplits: "nSplits",
      cap: "cap",
      beforeOut: `
  // A padding row outputs zeros: sum 1 over an all-zero accumulator (split 0 carries it).
  if (pad && lid < G) {
    mW[lid] = select(NEG, 0.0, split == 0u);
    lW[lid] = select(0.0, 1.0, split == 0u || nSplits == 1u);
  }
  workgroupBarrier();`,
    })
  }}
${SOFTCAP_FN}`;
}

export interface PagedAttentionArgs {
  /** q: (rows, nHeads · headDim) f32, already rotated */
  q: GPUBuffer;
  /** kPool, vPool: one layer's pool (paged_kv.ts), positions 0..rowPos[t] of every row's slot filled */
  kPool: GPUBuffer;
  vPool: GPUBuffer;
  /** rowPos, rowSlot: (rows) u32 */
  rowPos: GPUBuffer;
  rowSlot: GPUBuffer;
  /** blockTable: (slots, maxBlocks) u32 */
  blockTable: GPUBuffer;
  /** out: (rows, nHeads · headDim) f32 */
  out: GPUBuffer;
  layout: PagedLayout;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** rowSplits: (rows) u32 and dispatch: the grid and split cap, both written by batch_rows.ts's prepare */
  rowSplits: GPUBuffer;
  dispatch: GPUBuffer;
  /** the largest split count a row of this bind can have (sizes the partials) */
  maxSplits: number;
  /** score scale; default 1/√headDim */
  scale?: number;
  /** sliding window: a row attends to its last `window` positions only; default none */
  window?: number | null;
  /** scores s become softcap·tanh(s / softcap); default none */
  softcap?: number | null;
}

const BINDINGS: readonly BindingKind[] = [
  "uniform",
  ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
  ...(["read-only-storage", "read-only-storage"] as const),
  ...(["storage", "storage", "storage"] as const),
  ...(["read-only-storage", "read-only-storage"] as const),
];

/**
 * Positions per attention split of a row, by the kernel that attends it: decode rows (short splits fill the
 * GPU), prompt rows on this kernel (few, long splits), prompt rows on paged_flash_attention.ts (a short piece
 * at a long context has few blocks of rows, and its splits give it workgroups).
 */
export const SPLIT_SPAN = { decode: 64, prefill: 1024, tiled: 128 } as const;

/**
 * Most splits of a row. The tiled kernel's prompt rows are many, and their partials take rows · nHeads · cap
 * · headDim f32 (16 MiB per 128 rows at 8B heads); past cap · span positions their splits grow longer.
 */
export const SPLIT_CAP = { decode: MAX_ROW_SPLITS, prefill: MAX_ROW_SPLITS, tiled: 8 } as const;

/** The largest split count a row can have when sequences reach `maxLen` positions. */
export function pagedMaxSplits(maxLen: number, span: number, cap: number = MAX_ROW_SPLITS): number {
  return Math.max(1, Math.min(cap, MAX_ROW_SPLITS, Math.ceil(maxLen / span)));
}

/** A paged attention kernel's split partials, shared by its binds and grown to each one's need. */
export interface SplitScratch {
  /**
   * Checks `a.maxSplits` and sizes the partials for it.
   * @returns the kernel's buffers after its params (bindings 1–11: rowPos, rowSlot, blockTable, q, kPool,
   * vPool, out, partAcc, partMl, rowSplits, dispatch) and the merge of the splits (null for one split)
   */
  bind(a: PagedAttentionArgs): { buffers: GPUBuffer[]; merge: Encodable | null };
}

/**
 * The split scratch of paged_attention.ts and paged_flash_attention.ts. Binds share it: WebGPU orders a
 * pass's dispatches, and an earlier bind keeps the smaller buffer it was bound with.
 */
export function createSplitScratch(gpu: Gpu, label: string): SplitScratch {
  let partAcc = createStorage(gpu, 16, `${label} partAcc`);
  let partMl = createStorage(gpu, 16, `${label} partMl`);
  return {
    bind(a: PagedAttentionArgs) {
      const { rows, nHeads, headDim, maxSplits } = a;
      if (!(Number.isInteger(maxSplits) && maxSplits >= 1 && maxSplits <= MAX_ROW_SPLITS)) {
        throw new Error(
          `Cannot bind paged attention: maxSplits ${maxSplits} must be in [1, ${MAX_ROW_SPLITS}]`,
        );
      }
      const cells = rows * nHeads * maxSplits;
      if (maxSplits > 1 && partAcc.size < cells * headDim * 4) {
        partAcc = createStorage(gpu, cells * headDim * 4, `${label} partAcc`);
      }
      if (maxSplits > 1 && partMl.size < cells * 8) {
        partMl = createStorage(gpu, cells * 8, `${label} partMl`);
      }
      const buffers = [a.rowPos, a.rowSlot, a.blockTable, a.q, a.kPool, a.vPool, a.out, partAcc, partMl];
      const merge = maxSplits > 1
        ? createPagedCombine(gpu).bind({ ...a, partAcc, partMl, rows, nHeads, headDim })
        : null;
      return { buffers: [...buffers, a.rowSplits, a.dispatch], merge };
    },
  };
}

/** Build options of the paged attention. */
export interface PagedAttentionOptions {
  /**
   * Stage each tile's K rows in workgroup memory with coalesced loads before the scores (f16 pools, where
   * the staged tile fits the device's workgroup memory; elsewhere the plain build). The same bits either
   * way. Default false: not yet timed on a GPU (bench:profile --staged-keys).
   */
  stageKeys?: boolean;
}

/** Whether a staged-keys build fits: the stage (TILE · (HD4 + 1) f16 vec4s), the tile's pool rows and the rest. */
function stagedKeysFit(gpu: Gpu, plan: ReturnType<typeof attentionPlan>): boolean {
  const stage = plan.TILE * (plan.HD4 + 1) * 8 + plan.TILE * 4;
  return attentionWorkgroupBytes(plan) + stage <= gpu.maxWorkgroupStorageBytes;
}

/**
 * Builds the paged attention. Binds of one kernel share their split scratch (WebGPU orders the
 * dispatches of a pass).
 * @param gpu the device
 * @param options the staged-keys build, or not
 * @returns a kernel whose `bind` fixes buffers, shapes and the split count
 */
export function createPagedAttention(
  gpu: Gpu,
  options: PagedAttentionOptions = {},
): Kernel<PagedAttentionArgs> {
  const scratch = createSplitScratch(gpu, "paged attention");
  return {
    bind(a: PagedAttentionArgs): Encodable {
      const { rows, nKvHeads, headDim } = a;
      const plan = attentionPlan(gpu, { nHeads: a.nHeads, nKvHeads, headDim });
      const staged = (options.stageKeys ?? false) && a.layout.kvType === "f16" && stagedKeysFit(gpu, plan);
      const { buffers, merge } = scratch.bind(a);
      const main = getPipeline(gpu, {
        name: "paged_attention",
        code: wgsl(a.layout.kvType, staged),
        constants: staged ? { ...plan, KT: plan.TILE * (plan.HD4 + 1) } : plan,
        bindings: BINDINGS,
        spec: { kvType: a.layout.kvType, staged },
      });
      const params = uniformParams(gpu, [
        ["u32", rows],
        ["u32", nKvHeads],
        ["f32", a.scale ?? 1 / Math.sqrt(headDim)],
        ["u32", a.layout.blockSize],
        ["u32", a.layout.maxBlocks],
        ["u32", a.window ?? 0],
        ["f32", a.softcap ?? 0],
      ], "paged attention params");
      const bindGroup = bindBuffers(gpu, main, [params, ...buffers]);
      return {
        encode(pass) {
          pass.setPipeline(main);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroupsIndirect(a.dispatch, 0);
          merge?.encode(pass);
        },
      };
    },
  };
}
