/**
 * Causal grouped-query attention over the KV cache (Vaswani et al. 2017; GQA: Ainslie et al. 2023):
 *   out[t, h] = Σ_{lo ≤ p ≤ P} softmax_p(s(q[t, h] · k[p, h/G] · scale)) · v[p, h/G],  G = nHeads/nKvHeads,
 * where P = state.pos + t (pos read on the GPU), the cache already holds positions 0..pos+rows−1, scale is
 * 1/√headDim unless given (Gemma: query_pre_attn_scalar^−½), lo = 0, or P − window + 1 with a sliding window
 * (Mistral, Gemma's local layers: Hugging Face's `kv_idx > q_idx − window`), and s is the identity, or
 * c·tanh(x / c) with a soft cap c (Gemma 2).
 *
 * One workgroup per (row t, KV head, split): it owns the G query heads that share the KV head, so
 * every K/V row is read once for all of them. Its span of positions is walked in tiles of TILE:
 * scores for all G heads into workgroup memory, then an online-softmax update (running max m, sum l,
 * unnormalised output acc rescaled by e^(m_old − m_new); Milakov & Gimelshein 2018), then acc += p·V.
 * Flash-decoding (Dao et al. 2023): when rows · nKvHeads is too small to fill the GPU (decode), the
 * positions of each row are split over `splits` workgroups that write partial (m, l, acc) triples,
 * and a second dispatch (attention_combine.ts) merges them. Everything is f32; no atomics.
 */
import {
  bindBuffers,
  type BindingKind,
  createStorage,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";
import { createAttentionCombine } from "./attention_combine.ts";
import { attentionEpilogueWgsl, attentionTileWgsl, SPLIT_ALIGN } from "./attention_wgsl.ts";
import { SOFTCAP_FN } from "./softcap.ts";

const WGSL = /* wgsl */ `
${STATE_STRUCT}
// window: 0 for none; softcap: 0 for none
struct Params { rows: u32, nKvHeads: u32, seqLen: u32, nSplits: u32, scale: f32, window: u32, softcap: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;       // (rows, nHeads·headDim)
@group(0) @binding(3) var<storage, read> kCache: array<vec4<f32>>;  // (seqLen, nKvHeads·headDim)
@group(0) @binding(4) var<storage, read> vCache: array<vec4<f32>>;  // (seqLen, nKvHeads·headDim)
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>; // (rows, nHeads·headDim)
@group(0) @binding(6) var<storage, read_write> partAcc: array<vec4<f32>>; // (rows, nHeads, nSplits, headDim)
@group(0) @binding(7) var<storage, read_write> partMl: array<vec2<f32>>;  // (rows, nHeads, nSplits): (m, l)
${
  attentionTileWgsl({
    scoreParams: "",
    prelude: "",
    row: (j) => `(start + ${j})`,
    loadK: (i) => `kCache[${i}]`,
    loadV: (i) => `vCache[${i}]`,
  })
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let flat = wid.x + wid.y * nwg.x;
  let rows = params.rows;
  if (flat >= rows * params.nKvHeads * params.nSplits) { return; }
  let t = rows - 1u - flat % rows; // longest rows first, so the grid's tail is short
  let kvh = (flat / rows) % params.nKvHeads;
  let split = flat / (rows * params.nKvHeads);
  let len = min(state.pos + t + 1u, params.seqLen);
  let span = splitSpan(len, params.window, params.nSplits, split);
  let begin = span.x;
  let end = span.y;
  let qRow = (t * params.nKvHeads + kvh) * QN; // heads kvh·G .. kvh·G + G − 1 of row t are adjacent

  for (var i = lid; i < QN; i += WG) { qs[i] = q[qRow + i] * params.scale; }
  if (lid < G) { mW[lid] = NEG; }
  workgroupBarrier();
  var acc: Acc;
  for (var start = begin; start < end; start += TILE) {
    let n = min(TILE, end - start);
    scoreTile(lid, kvh, start, n);
    accumulateTile(lid, kvh, start, n, &acc);
    workgroupBarrier();
  }
${attentionEpilogueWgsl({ nSplits: "params.nSplits", cap: "params.nSplits" })}}
${SOFTCAP_FN}`;

export interface AttentionArgs {
  /** q: (rows, nHeads · headDim) f32, already rotated */
  q: GPUBuffer;
  /** kCache: (seqLen, nKvHeads · headDim) f32, positions 0..state.pos + rows − 1 filled */
  kCache: GPUBuffer;
  /** vCache: (seqLen, nKvHeads · headDim) f32 */
  vCache: GPUBuffer;
  /** out: (rows, nHeads · headDim) f32 */
  out: GPUBuffer;
  /** state: [STATE_WORDS] u32 (step_state.ts); row t is at position state.pos + t */
  state: GPUBuffer;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  /** a multiple of 4 */
  headDim: number;
  seqLen: number;
  /** workgroups per (row, KV head) along the positions; default: enough to fill the GPU */
  splits?: number;
  /** score scale; default 1/√headDim */
  scale?: number;
  /** sliding window: row t attends to positions P − window + 1..P only; default none */
  window?: number | null;
  /** scores s become softcap·tanh(s / softcap); default none */
  softcap?: number | null;
}

/** The WGSL of the main pass; shapes are set through `override` constants (see {@link attentionPlan}). */
export function attentionShader(): string {
  return WGSL;
}

/** The `override` constants of the main pass for one head configuration. */
export function attentionPlan(
  gpu: Gpu,
  { nHeads, nKvHeads, headDim }: { nHeads: number; nKvHeads: number; headDim: number },
): Record<"WG" | "HD4" | "G" | "QN" | "TILE" | "NPART" | "R", number> {
  const what = `Cannot build attention for nHeads ${nHeads}, nKvHeads ${nKvHeads}, headDim ${headDim}`;
  if (headDim % 4 !== 0) throw new Error(`${what}: headDim must be a multiple of 4`);
  if (nHeads % nKvHeads !== 0) throw new Error(`${what}: nHeads must be a multiple of nKvHeads`);
  const WG = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const HD4 = headDim / 4;
  const G = nHeads / nKvHeads;
  const QN = G * HD4;
  if (G > WG) throw new Error(`${what}: more than ${WG} query heads per KV head`);
  const R = Math.ceil(QN / WG);
  if (R > 4) throw new Error(`${what}: more than ${4 * WG} vec4 outputs per KV head`);
  const TILE = floorPow2(WG / G);
  const NPART = R > 1 ? 1 : floorPow2(Math.min(WG / QN, TILE));
  const plan = { WG, HD4, G, QN, TILE, NPART, R };
  const bytes = attentionWorkgroupBytes(plan);
  if (bytes > gpu.maxWorkgroupStorageBytes) {
    throw new Error(`${what}: needs ${bytes} bytes of workgroup memory (${gpu.maxWorkgroupStorageBytes})`);
  }
  return plan;
}

/** Bytes of the shared walk's workgroup memory (attention_wgsl.ts): qs, sc, red, accW, mW, lW, alphaW. */
export function attentionWorkgroupBytes(p: { WG: number; QN: number; G: number }): number {
  return p.QN * 16 + p.WG * (4 + 4 + 16) + p.G * 12;
}

function floorPow2(x: number): number {
  return 2 ** Math.floor(Math.log2(x));
}

/** Enough workgroups to keep a large GPU busy (H100: 132 SMs) when rows · nKvHeads cannot. */
const TARGET_WORKGROUPS = 512;
const MAX_SPLITS = 64;

/**
 * Splits per (row, KV head): `requested` or, by default, one when rows alone fill the GPU (prefill)
 * and enough to reach TARGET_WORKGROUPS otherwise (decode); never more than `span` positions have spans.
 */
function splitCount(rows: number, nKvHeads: number, span: number, requested?: number) {
  const groups = rows * nKvHeads;
  const auto = groups >= TARGET_WORKGROUPS / 2 ? 1 : Math.ceil(TARGET_WORKGROUPS / groups);
  return Math.max(1, Math.min(requested ?? auto, Math.ceil(span / SPLIT_ALIGN), MAX_SPLITS));
}

const MAIN_BINDINGS: readonly BindingKind[] = [
  "uniform",
  ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
  ...(["storage", "storage", "storage"] as const),
];

/**
 * Builds causal GQA attention. Binds of one kernel share its split scratch buffers, which is safe
 * because WebGPU orders the dispatches of a pass.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers, shapes and the split count
 */
export function createAttention(gpu: Gpu): Kernel<AttentionArgs> {
  // Partial results of split rows, grown to the largest bind: partAcc (rows, nHeads, splits, headDim)
  // f32 and partMl (rows, nHeads, splits) (m, l) pairs.
  let partAcc = createStorage(gpu, 16, "attention partAcc");
  let partMl = createStorage(gpu, 16, "attention partMl");
  const combine = createAttentionCombine(gpu);
  return {
    bind(args: AttentionArgs): Encodable {
      const { q, kCache, vCache, out, state, rows, nHeads, nKvHeads, headDim, seqLen } = args;
      const plan = attentionPlan(gpu, { nHeads, nKvHeads, headDim });
      // A window bounds every row's span, so decode splits only that many positions.
      const span = args.window ? Math.min(args.window, seqLen) : seqLen;
      const splits = splitCount(rows, nKvHeads, span, args.splits);
      const cells = rows * nHeads * splits;
      if (splits > 1 && partAcc.size < cells * headDim * 4) {
        partAcc = createStorage(gpu, cells * headDim * 4, "attention partAcc");
      }
      if (splits > 1 && partMl.size < cells * 8) partMl = createStorage(gpu, cells * 8, "attention partMl");
      const main = getPipeline(gpu, {
        name: "attention",
        code: WGSL,
        constants: plan,
        bindings: MAIN_BINDINGS,
      });
      const params = uniformParams(
        gpu,
        [
          ["u32", rows],
          ["u32", nKvHeads],
          ["u32", seqLen],
          ["u32", splits],
          ["f32", args.scale ?? 1 / Math.sqrt(headDim)],
          ["u32", args.window ?? 0],
          ["f32", args.softcap ?? 0],
        ],
        "attention params",
      );
      const bindGroup = bindBuffers(gpu, main, [params, state, q, kCache, vCache, out, partAcc, partMl]);
      const [gx, gy] = dispatch2d(gpu, rows * nKvHeads * splits);
      const merge = splits > 1 ? combine.bind({ partAcc, partMl, out, rows, nHeads, headDim, splits }) : null;
      return {
        encode(pass) {
          pass.setPipeline(main);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
          merge?.encode(pass);
        },
      };
    },
  };
}
