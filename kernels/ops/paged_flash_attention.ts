/**
 * Causal GQA attention of prompt rows over a paged KV cache, tiled: flash_attention.ts's tiling (blocks of
 * query rows share each K/V tile in workgroup memory, online softmax, no score matrix) over
 * paged_attention.ts's cache (block table, f16 or f32 pools), with its scale, sliding window and soft cap.
 * The engine's prefill forwards (pieces of prompts, batch_runner.ts) run it; decode rows keep
 * paged_attention.ts, whose per-row workgroups and splits suit one row per sequence.
 *
 * One workgroup per (block of BR consecutive rows of the forward, query head, split); BR shrinks with the
 * forward, so that a short piece still spreads over the GPU. Pieces of several prompts follow each other in
 * a forward, so a block may hold rows of more than one sequence: it walks them one run of consecutive
 * same-slot rows at a time, loading that slot's tiles through the block table while the block's other rows
 * see none of them. A position a row does not see adds exactly nothing to it (flash_attention.ts
 * flashTileWgsl) and the tiles are BC-aligned positions whatever the block, so a row's result depends only on
 * its own slot and position, never on what shares its block or forward, nor on BR: batched greedy decode
 * still gives the bits of one-at-a-time decode. Padding rows (slot NONE) output zeros.
 *
 * Splits (flash-decoding, as paged_attention.ts): a short piece at a long context has few blocks, so each
 * row's positions are split as paged_attention.ts splits them (the row's own split count, batch_rows.ts,
 * from its own length only: the sums stay batch invariant). Split s of a block walks the union of its rows'
 * s-th spans, each row seeing only its own; rows of one split write their output, the others partial
 * (m, l, acc) triples that paged_attention.ts's merge (attention_combine.ts) combines.
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
import {
  FLASH_BUILD_DEFAULT,
  flashAttentionPlan,
  type FlashPlan,
  flashRowsWgsl,
  flashTileWgsl,
  flashWorkgroupWgsl,
} from "./flash_attention.ts";
import { createPagedAttention, createSplitScratch, type PagedAttentionArgs } from "./paged_attention.ts";
import { PAGED_ROW_WGSL, type PagedLayout, pagedPoolWgsl } from "./paged_kv.ts";
import { SOFTCAP_FN } from "./softcap.ts";
import {
  type BlockedFlashPlan,
  blockedFlashPlan,
  blockedSetupWgsl,
  blockedSumsWgsl,
  blockedTileWgsl,
  blockedWorkgroupWgsl,
} from "./flash_attention_blocked.ts";
import { SPLIT_SPAN_WGSL } from "./attention_wgsl.ts";

/** WGSL shared by both paged builds: params, bindings, the pool, the block table and `span`. */
function pagedHeaderWgsl(kvType: PagedLayout["kvType"], hd4: number): string {
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
${pagedPoolWgsl(kvType, `${hd4}u`)}
@group(0) @binding(7) var<storage, read_write> out: array<vec4f>; // (rows, nHeads·headDim)
@group(0) @binding(8) var<storage, read_write> partAcc: array<vec4f>; // (rows, nHeads, cap, headDim)
@group(0) @binding(9) var<storage, read_write> partMl: array<vec2f>;  // (rows, nHeads, cap): (m, l)
@group(0) @binding(10) var<storage, read> rowSplits: array<u32>;   // (rows) splits of each row
@group(0) @binding(11) var<storage, read> dispatch: array<u32, 4>; // [3]: the forward's largest split count

var<private> PAGE: Page;
${PAGED_ROW_WGSL}

${SPLIT_SPAN_WGSL}
/** The positions [begin, end) of a split of the row at position p with n splits (empty for split ≥ n). */
fn span(p: u32, n: u32, split: u32) -> vec2u {
  return select(vec2u(0u, 0u), splitSpan(p + 1u, params.window, n, split), split < n);
}`;
}

/**
 * WGSL of both builds' walk over the block's runs of same-slot rows [s, e): `mine` (statements knowing s and
 * e) per run, then per tile of BC positions from c0 the pool rows in `poolRow`, a barrier, and `tile`. Every
 * value the loops test comes from uniform indices, so the barriers stay uniform.
 */
function pagedRunsWgsl({ BC, WG }: { BC: number; WG: number }, mine: string, tile: string): string {
  return /* wgsl */ `var s = t0;
  loop {
    if (s >= tEnd) { break; }
    let run = rowSlot[s];
    var runLo = 0xffffffffu;
    var runHi = 0u; // the union of the run's rows' spans of this split: [runLo, runHi)
    var e = s;
    loop {
      if (e >= tEnd || rowSlot[e] != run) { break; }
      let seg = span(rowPos[e], rowSplits[e], split);
      if (seg.y > seg.x) {
        runLo = min(runLo, seg.x);
        runHi = max(runHi, seg.y);
      }
      e += 1u;
    }
    ${mine}
    if (run != NONE && runHi > 0u) {
      for (var c0 = runLo / ${BC}u * ${BC}u; c0 < runHi; c0 += ${BC}u) {
        for (var i = lid; i < ${BC}u; i += ${WG}u) {
          poolRow[i] = select(NONE, physRow(run, c0 + i), c0 + i < runHi);
        }
        workgroupBarrier();
        ${tile}
      }
    }
    s = e;
  }`;
}

/**
 * WGSL of both builds from the tile's pool rows to the start of `main`: the workgroup's split, block of rows
 * `blk` and head `h` (its KV head `kvh`); workgroups past the forward's largest split count return.
 */
function pagedEntryWgsl({ BC, WG }: { BC: number; WG: number }): string {
  return /* wgsl */ `var<workgroup> poolRow: array<u32, ${BC}>; // pool row of each position of the tile (NONE: zeros)

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  PAGE = Page(params.blockSize, params.maxBlocks);
  let flat = wid.x + wid.y * nwg.x;
  let cells = params.blocks * params.nHeads;
  let cap = dispatch[3];
  let split = flat / cells;
  if (split >= cap) { return; }
  let blk = flat % params.blocks;
  let h = (flat % cells) / params.blocks;
  let kvh = h / (params.nHeads / params.nKvHeads);`;
}

/** The WGSL of one plan and pool type. */
export function pagedFlashShader(plan: FlashPlan, kvType: PagedLayout["kvType"]): string {
  const { WG, TPR, D4, BC, HD4, BR, R } = plan;
  return /* wgsl */ `
${pagedHeaderWgsl(kvType, HD4)}
${flashWorkgroupWgsl(plan)}
${pagedEntryWgsl(plan)}
  let rg = lid / ${TPR}u;
  let j = lid % ${TPR}u;
  let t0 = blk * ${BR}u;
  let tEnd = min(t0 + ${BR}u, params.rows);
  // row i of this invocation: t0 + rg·R + i; rows past the end compute row rows − 1 and write nothing
  ${
    unroll(R, (i) =>
      `let row${i} = min(t0 + rg * ${R}u + ${i}u, params.rows - 1u);
  let nSplits${i} = rowSplits[row${i}];
  let own${i} = span(rowPos[row${i}], nSplits${i}, split);`)
  }
  let stride = params.nKvHeads * ${HD4}u;
  let capped = params.softcap > 0.0;
  ${flashRowsWgsl(plan, (i) => `(row${i} * params.nHeads + h) * ${HD4}u + j`)}
  ${
    pagedRunsWgsl(
      plan,
      unroll(R, (i) => `let mine${i} = row${i} >= s && row${i} < e; // row i is one of the run's`),
      `for (var i = lid; i < ${BC * HD4}u; i += ${WG}u) {
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
${flashTileWgsl(plan, (i, c) => `mine${i} && c0 + ${c}u >= own${i}.x && c0 + ${c}u < own${i}.y`)}`,
    )
  }
  ${
    unroll(R, (i) =>
      `if (t0 + rg * ${R}u + ${i}u < params.rows && split < nSplits${i}) {
    let cell = row${i} * params.nHeads + h;
    if (nSplits${i} == 1u) {
      let pad = rowSlot[row${i}] == NONE;
      ${
        unroll(D4, (k) => `out[cell * ${HD4}u + j + ${k * TPR}u] = select(a${i}_${k} / l${i}, vec4f(), pad);`)
      }
    } else {
      let part = (cell * cap + split) * ${HD4}u + j;
      ${unroll(D4, (k) => `partAcc[part + ${k * TPR}u] = a${i}_${k};`)}
      if (j == 0u) { partMl[cell * cap + split] = vec2f(m${i}, l${i}); }
    }
  }`)
  }
}
${SOFTCAP_FN}`;
}

/**
 * The WGSL of one blocked plan (flash_attention_blocked.ts) and pool type: the same bindings, runs, splits
 * and outputs as {@link pagedFlashShader}, with the register-blocked tile. Row t0 + lid's softmax state
 * (lid < BR) decides what it sees; the output blocks write each row's result or split partials.
 */
export function pagedBlockedShader(plan: BlockedFlashPlan, kvType: PagedLayout["kvType"]): string {
  const { BC, HD4, BR, DV } = plan;
  const RB4 = BR / 4;
  const CB4 = BC / 4;
  return /* wgsl */ `
${pagedHeaderWgsl(kvType, HD4)}
${blockedWorkgroupWgsl(plan)}
${pagedEntryWgsl(plan)}
  let t0 = blk * ${BR}u;
  let tEnd = min(t0 + ${BR}u, params.rows);
  ${blockedSetupWgsl(plan)}
  // Row t0 + lid's softmax (lid < BR): its splits and this split's positions (none past the rows).
  let myRow = min(t0 + lid, params.rows - 1u);
  let real = t0 + lid < params.rows;
  let mySplits = rowSplits[myRow];
  let own = select(vec2u(0u, 0u), span(rowPos[myRow], mySplits, split), real);
  let stride = params.nKvHeads * ${HD4}u;
  ${
    pagedRunsWgsl(
      plan,
      "let mine = t0 + lid >= s && t0 + lid < e; // row t0 + lid is one of the run's",
      blockedTileWgsl(
        plan,
        (kind, c, col) =>
          `let pr = poolRow[${c}];
      if (pr != NONE) { v = load${kind}(pr * stride + kvh * ${HD4}u + ${col}); }`,
        (c) => `mine && c0 + ${c} >= own.x && c0 + ${c} < own.y`,
      ),
    )
  }
  if (real && split < mySplits && mySplits > 1u) { partMl[(myRow * params.nHeads + h) * cap + split] = vec2f(m, l); }
  ${blockedSumsWgsl(plan)}
  ${
    unroll(4, (i) =>
      `{
    let row = t0 + rb + ${i * RB4}u;
    let n = rowSplits[min(row, params.rows - 1u)];
    if (row < params.rows && split < n) {
      let cell = row * params.nHeads + h;
      if (n == 1u) {
        let pad = rowSlot[row] == NONE;
        ${
        unroll(DV, (k) =>
          `out[cell * ${HD4}u + cb + ${k * CB4}u] = select(o${i}_${k} / ls[${i}], vec4f(), pad);`)
      }
      } else {
        let part = (cell * cap + split) * ${HD4}u + cb;
        ${
        unroll(DV, (k) => `partAcc[part + ${k * CB4}u] = o${i}_${k};`)
      }
      }
    }
  }`)
  }
}
${SOFTCAP_FN}`;
}

const BINDINGS: readonly BindingKind[] = [
  "uniform",
  ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
  ...(["read-only-storage", "read-only-storage"] as const),
  ...(["storage", "storage", "storage"] as const),
  ...(["read-only-storage", "read-only-storage"] as const),
];

/**
 * Builds the tiled paged attention for prompt rows, with paged_attention.ts's arguments (rowSplits and
 * dispatch[3] from batch_rows.ts's prepare; its grid is not used); a head size it cannot tile gets
 * paged_attention.ts. Binds of one kernel share their split scratch (WebGPU orders a pass's dispatches).
 * @param gpu the device
 * @param tune WG: invocations per workgroup for every bind (tests; default by the bind's rows); R: rows per
 * invocation group (flash_attention.ts FlashTune; default 1)
 */
export function createPagedFlashAttention(
  gpu: Gpu,
  tune: { WG?: number; R?: number; build?: "rows" | "blocked"; BR?: number } = {},
): Kernel<PagedAttentionArgs> {
  let fallback: Kernel<PagedAttentionArgs> | null = null;
  const scratch = createSplitScratch(gpu, "paged flash attention");
  return {
    bind(a: PagedAttentionArgs): Encodable {
      const { rows, headDim } = a;
      const build = tune.build ?? FLASH_BUILD_DEFAULT;
      const blocked = build === "blocked" ? blockedPlanFor(gpu, headDim, rows, tune.BR) : null;
      if (blocked) {
        const spec = { ...blocked, kvType: a.layout.kvType, build: "blocked" };
        return bindPaged(gpu, a, scratch, blocked.BR, {
          code: pagedBlockedShader(blocked, spec.kvType),
          spec,
        });
      }
      const widest = flashAttentionPlan(gpu, { headDim }, { R: tune.R ?? 1 });
      if (!widest) return (fallback ??= createPagedAttention(gpu)).bind(a);
      // Blocks of fewer rows for smaller forwards (more workgroups for a short piece); the tile size stays
      // the widest plan's, so a row's sums are the same in every block size (tested).
      const WG = tune.WG ?? (rows >= 512 ? widest.WG : rows >= 128 ? 64 : 32);
      const plan = flashAttentionPlan(gpu, { headDim }, { WG, BC: widest.BC, R: widest.R }) ?? widest;
      if (plan.BC !== widest.BC) throw new Error(`Cannot tile attention: block sizes changed the tile`);
      const spec = { ...plan, kvType: a.layout.kvType };
      return bindPaged(gpu, a, scratch, plan.BR, { code: pagedFlashShader(plan, spec.kvType), spec });
    },
  };
}

/**
 * The blocked tiling of a bind, or null where it cannot tile the head size: blocks of 32 rows from 128
 * rows, of 16 below (more workgroups for a short piece), with the widest plan's tile of positions, so a
 * row's sums are the same in every block size.
 */
function blockedPlanFor(gpu: Gpu, headDim: number, rows: number, BR?: number): BlockedFlashPlan | null {
  const widest = blockedFlashPlan(gpu, { headDim });
  if (!widest) return null;
  const br = BR ?? (rows >= 128 ? widest.BR : 16);
  return blockedFlashPlan(gpu, { headDim }, { BR: br, BC: widest.BC }) ?? widest;
}

/** One bind of either build: its `BR` rows per block, the split scratch and merge, the grid. */
function bindPaged(
  gpu: Gpu,
  a: PagedAttentionArgs,
  scratch: ReturnType<typeof createSplitScratch>,
  BR: number,
  build: { code: string; spec: unknown },
): Encodable {
  const { rows, nHeads, nKvHeads, headDim, maxSplits } = a;
  if (nHeads % nKvHeads !== 0) {
    throw new Error(
      `Cannot build attention for nHeads ${nHeads}, nKvHeads ${nKvHeads}: nHeads must be a multiple of nKvHeads`,
    );
  }
  const { buffers, merge } = scratch.bind(a);
  const pipeline = getPipeline(gpu, { name: "paged_flash_attention", ...build, bindings: BINDINGS });
  const blocks = Math.ceil(rows / BR);
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
  const bindGroup = bindBuffers(gpu, pipeline, [params, ...buffers]);
  // Every split a row of this bind can have; workgroups past the forward's own cap return at once.
  const [gx, gy] = dispatch2d(gpu, blocks * nHeads * maxSplits);
  return {
    encode(pass) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
      merge?.encode(pass);
    },
  };
}
