/**
 * Causal GQA attention of prompt rows over a paged KV cache, tiled: flash_attention.ts's tiling (blocks of
 * query rows share each K/V tile in workgroup memory, online softmax, no score matrix) over
 * paged_attention.ts's cache (block table, f16 or f32 pools), with its scale, sliding window and soft cap.
 * The engine's prefill forwards (pieces of prompts, batch_runner.ts) run it; decode rows keep
 * paged_attention.ts, whose per-row workgroups and splits suit one row per sequence.
 *
 * One workgroup per (block of BR consecutive rows of the forward, query head). Pieces of several prompts
 * follow each other in a forward, so a block may hold rows of more than one sequence: it walks them one run
 * of consecutive same-slot rows at a time, loading that slot's tiles (positions from the run's lowest window start to its
 * highest position, BC-aligned) through the block table while the block's other rows see none of them. A
 * position a row does not see adds exactly nothing to it (flash_attention.ts flashTileWgsl), so a row's
 * result depends only on its own slot and position, never on what shares its block or forward: batched
 * greedy decode still gives the bits of one-at-a-time decode. Padding rows (slot NONE) output zeros.
 */
import {
  bindBuffers,
  type BindingKind,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  uniformParams,
  unroll,
} from "../core/mod.ts";
import { flashAttentionPlan, type FlashPlan, flashTileWgsl, flashWorkgroupWgsl } from "./flash_attention.ts";
import { createPagedAttention, type PagedAttentionArgs, pagedPoolWgsl } from "./paged_attention.ts";
import { PAGED_ROW_WGSL, type PagedLayout } from "./paged_kv.ts";
import { SOFTCAP_FN } from "./softcap.ts";

/** The WGSL of one plan and pool type. */
export function pagedFlashShader(plan: FlashPlan, kvType: PagedLayout["kvType"]): string {
  const { WG, TPR, D4, BC, HD4, BR } = plan;
  return /* wgsl */ `
const NONE = 0xffffffffu;
const NEG = -1.0e30; // stands in for −∞ (flash_attention.ts)

// window: 0 for none; softcap: 0 for none; blocks: ⌈rows / BR⌉
struct Params {
  rows: u32, nHeads: u32, nKvHeads: u32, scale: f32, blockSize: u32, maxBlocks: u32, window: u32, softcap: f32,
  blocks: u32,
}
struct Page { blockSize: u32, maxBlocks: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rowPos: array<u32>;
@group(0) @binding(2) var<storage, read> rowSlot: array<u32>;
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;
@group(0) @binding(4) var<storage, read> q: array<vec4f>; // (rows, nHeads·headDim)
${pagedPoolWgsl(kvType)}
@group(0) @binding(7) var<storage, read_write> out: array<vec4f>; // (rows, nHeads·headDim)

var<private> PAGE: Page;
${PAGED_ROW_WGSL}
${flashWorkgroupWgsl(plan)}
var<workgroup> poolRow: array<u32, ${BC}>; // pool row of each position of the tile (NONE: zeros)

/** The first position row position p sees. */
fn windowStart(p: u32) -> u32 {
  return select(0u, p + 1u - params.window, params.window > 0u && p + 1u > params.window);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  PAGE = Page(params.blockSize, params.maxBlocks);
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= params.blocks * params.nHeads) { return; }
  let blk = flat % params.blocks;
  let h = flat / params.blocks;
  let kvh = h / (params.nHeads / params.nKvHeads);
  let r = lid / ${TPR}u;
  let j = lid % ${TPR}u;
  let t0 = blk * ${BR}u;
  let tEnd = min(t0 + ${BR}u, params.rows);
  let t = min(t0 + r, params.rows - 1u); // rows past the end compute row rows − 1 and write nothing
  let slot = rowSlot[t];
  let P = rowPos[t];
  let lo = windowStart(P);
  let stride = params.nKvHeads * ${HD4}u;
  let capped = params.softcap > 0.0;
  let qBase = (t * params.nHeads + h) * ${HD4}u + j;
  ${unroll(D4, (k) => `let q${k} = q[qBase + ${k * TPR}u] * params.scale;`)}
  ${unroll(D4, (k) => `var a${k} = vec4f();`)}
  var m = NEG;
  var l = 0.0;
  // Runs of same-slot rows; every value here comes from uniform indices, so the barriers stay uniform.
  var s = t0;
  loop {
    if (s >= tEnd) { break; }
    let run = rowSlot[s];
    var runLo = windowStart(rowPos[s]);
    var runHi = rowPos[s];
    var e = s + 1u;
    loop {
      if (e >= tEnd || rowSlot[e] != run) { break; }
      runLo = min(runLo, windowStart(rowPos[e]));
      runHi = max(runHi, rowPos[e]);
      e += 1u;
    }
    let mine = t >= s && t < e; // this row is one of the run's
    if (run != NONE) {
      for (var c0 = runLo / ${BC}u * ${BC}u; c0 <= runHi; c0 += ${BC}u) {
        if (lid < ${BC}u) { poolRow[lid] = select(NONE, physRow(run, c0 + lid), c0 + lid <= runHi); }
        workgroupBarrier();
        for (var i = lid; i < ${BC * HD4}u; i += ${WG}u) {
          let pr = poolRow[i / ${HD4}u];
          var kv = vec4f();
          var vv = vec4f();
          if (pr != NONE) {
            let at = pr * stride + kvh * ${HD4}u + i % ${HD4}u;
            kv = loadK(at);
            vv = loadV(at);
          }
          kT[i] = kv;
          vT[i] = vv;
        }
        workgroupBarrier();
${flashTileWgsl(plan, (c) => `mine && c0 + ${c}u <= P && c0 + ${c}u >= lo`)}
      }
    }
    s = e;
  }
  if (t0 + r < params.rows) {
    let pad = slot == NONE;
    ${unroll(D4, (k) => `out[qBase + ${k * TPR}u] = select(a${k} / l, vec4f(), pad);`)}
  }
}
${SOFTCAP_FN}`;
}

const BINDINGS: readonly BindingKind[] = [
  "uniform",
  ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
  ...(["read-only-storage", "read-only-storage"] as const),
  "storage",
];

/**
 * Builds the tiled paged attention for prompt rows. It takes paged_attention.ts's arguments and ignores the
 * split ones (rowSplits, dispatch, maxSplits); a head size it cannot tile gets paged_attention.ts.
 * @param gpu the device
 */
export function createPagedFlashAttention(gpu: Gpu): Kernel<PagedAttentionArgs> {
  let fallback: Kernel<PagedAttentionArgs> | null = null;
  return {
    bind(a: PagedAttentionArgs): Encodable {
      const { rows, nHeads, nKvHeads, headDim } = a;
      const plan = flashAttentionPlan(gpu, { headDim });
      if (!plan) return (fallback ??= createPagedAttention(gpu)).bind(a);
      if (nHeads % nKvHeads !== 0) {
        throw new Error(
          `Cannot build attention for nHeads ${nHeads}, nKvHeads ${nKvHeads}: nHeads must be a multiple of nKvHeads`,
        );
      }
      const kvType = a.layout.kvType;
      const pipeline = getPipeline(gpu, {
        name: "paged_flash_attention",
        code: pagedFlashShader(plan, kvType),
        spec: { ...plan, kvType },
        bindings: BINDINGS,
      });
      const blocks = Math.ceil(rows / plan.BR);
      const params = uniformParams(gpu, [
        ["u32", rows],
        ["u32", nHeads],
        ["u32", nKvHeads],
        ["f32", a.scale ?? 1 / Math.sqrt(headDim)],
        ["u32", a.layout.blockSize],
        ["u32", a.layout.maxBlocks],
        ["u32", a.window ?? 0],
        ["f32", a.softcap ?? 0],
        ["u32", blocks],
      ], "paged flash attention params");
      const bindGroup = bindBuffers(gpu, pipeline, [
        params,
        a.rowPos,
        a.rowSlot,
        a.blockTable,
        a.q,
        a.kPool,
        a.vPool,
        a.out,
      ]);
      const [gx, gy] = dispatch2d(gpu, blocks * nHeads);
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
        },
      };
    },
  };
}
