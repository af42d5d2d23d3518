/**
 * Causal grouped-query attention for whole windows of prompt rows, tiled in the manner of FlashAttention
 * (Dao et al. 2022): the same function as attention.ts (same arguments, scale, sliding window and soft cap),
 * without an S × S score matrix and with each K/V row read from memory once per block of query rows instead
 * of once per row. The quantizer's calibration forward runs 2,048-token windows through it (issue 12); decode
 * and short prompts keep attention.ts, whose per-row workgroups and splits suit them.
 *
 * One workgroup per (block of BR query rows, query head): TPR invocations per row each hold a slice of the
 * row's query and output (D4 ≤ 16 vec4 each, in registers: named variables, since arrays indexed in loops
 * end up in local memory on NVIDIA). For each tile of BC positions the K and V rows go to workgroup memory,
 * every invocation dots its query slice with each key, the TPR partial scores of a row are summed through
 * workgroup memory (in a fixed order, so the row's invocations agree bit for bit), and the online softmax
 * (running max m, sum l, output rescaled by e^(m_old − m_new); Milakov & Gimelshein 2018) takes the tile.
 * Positions past a row's own (causal) or before its window are masked; cache rows past pos + rows are never
 * read. Everything is f32.
 *
 * The tile walk is bound by workgroup-memory reads: one float per FMA, ~14 TFLOP/s at 8B heads on the H100
 * (BENCHMARKS.md, "tiled attention for prompts"). With R = 2 (FlashTune.R) each invocation group holds two
 * rows (TPR doubles so their registers fit) and every K/V vec4 it reads serves both; timed slower at every
 * size (H200: 2,048 rows 4.6 against 3.0 ms a layer, BENCHMARKS.md), so R = 1 is the default and R = 2 a
 * tested build for sweeps (`deno task bench:attention` compares them).
 */
import {
  bindBuffers,
  type BindingKind,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  STATE_STRUCT,
  uniformParams,
  unroll,
} from "../core/mod.ts";
import { type AttentionArgs, createAttention } from "./attention.ts";
import { SOFTCAP_FN } from "./softcap.ts";
import {
  type BlockedFlashPlan,
  blockedFlashPlan,
  blockedSetupWgsl,
  blockedSumsWgsl,
  blockedTileWgsl,
  blockedWorkgroupWgsl,
} from "./flash_attention_blocked.ts";

/** The tiling of one head size. */
export interface FlashPlan {
  /** invocations per workgroup */
  WG: number;
  /** invocations per query row */
  TPR: number;
  /** vec4 of a row each invocation owns: headDim / 4 / TPR */
  D4: number;
  /** positions per K/V tile */
  BC: number;
  /** headDim / 4 */
  HD4: number;
  /** query rows per invocation group (1, or 2: each K/V vec4 read from workgroup memory serves two rows) */
  R: number;
  /** query rows per workgroup: WG / TPR · R */
  BR: number;
}

/**
 * The tiling for `headDim`, or null when the flash kernel cannot serve it (the caller falls back).
 * @param gpu the device (workgroup size and memory limits)
 * @param tune overrides of the defaults
 */
export function flashAttentionPlan(
  gpu: Gpu,
  { headDim }: { headDim: number },
  tune: FlashTune = {},
): FlashPlan | null {
  if (headDim % 4 !== 0) return null;
  const HD4 = headDim / 4;
  const R = tune.R ?? 1;
  if (R !== 1 && R !== 2) throw new Error(`Cannot tile attention with ${R} rows per invocation: 1 or 2`);
  // Each invocation holds R rows' query and output slices in registers: 2·R·D4 vec4 ≤ 32.
  let TPR = 1;
  while (HD4 / TPR > 16 / R) TPR *= 2;
  if (HD4 % TPR !== 0) return null;
  const WG = Math.min(tune.WG ?? 128, gpu.maxInvocationsPerWorkgroup);
  if (TPR > WG) return null;
  const bytes = (bc: number) => 2 * bc * HD4 * 16 + (TPR > 1 ? R * bc * WG * 4 : 0);
  const BC = [16, 8, 4].filter((bc) => bc <= (tune.BC ?? 16)).find((bc) =>
    bytes(bc) <= gpu.maxWorkgroupStorageBytes
  );
  if (BC === undefined) return null;
  return { WG, TPR, D4: HD4 / TPR, BC, HD4, R, BR: (WG / TPR) * R };
}

/**
 * Overrides of the default tiling (benchmarks): invocations per workgroup, the largest K/V tile and rows per
 * invocation group; and the fewest rows a bind takes the tiled kernel for (fewer get attention.ts; default 1).
 */
export interface FlashTune {
  WG?: number;
  BC?: number;
  /** query rows per invocation group (default 1) */
  R?: number;
  minRows?: number;
  /**
   * "blocked": the register-blocked build (flash_attention_blocked.ts) where it can tile the head size, with
   * its tiling from `blockedTile` (default: the largest that fits); "rows" (default): this module's build.
   */
  build?: "rows" | "blocked";
  blockedTile?: { BR?: number; BC?: number };
}

/**
 * The build both tiled kernels (this one and paged_flash_attention.ts) take unless tuned: the rows build. The
 * blocked one is 2–7× faster on lavapipe but 3–7× slower on the H100 at 512–2,048 prompt rows (BENCHMARKS.md,
 * "fourteenth session"), so it stays opt-in.
 */
export const FLASH_BUILD_DEFAULT: "rows" | "blocked" = "rows";

/**
 * WGSL shared by the tiled kernels (this one and paged_flash_attention.ts): the K/V tiles in workgroup
 * memory, and the partial scores of a row's invocations when TPR > 1.
 */
export function flashWorkgroupWgsl({ WG, TPR, BC, HD4, R }: FlashPlan): string {
  return /* wgsl */ `
var<workgroup> kT: array<vec4f, ${BC * HD4}>; // [c·HD4 + d]: the tile's keys
var<workgroup> vT: array<vec4f, ${BC * HD4}>; // [c·HD4 + d]: the tile's values
${
    TPR > 1
      ? `var<workgroup> sp: array<f32, ${R * BC * WG}>; // [(i·BC + c)·WG + invocation]: partial scores`
      : ""
  }`;
}

/**
 * WGSL: an invocation's row state for {@link flashTileWgsl}: row i's query slice q{i}_k (scaled), output
 * accumulators a{i}_k, running max m{i} and sum l{i}; `qBase(i)` is row i's first vec4 for this invocation.
 */
export function flashRowsWgsl({ D4, TPR, R }: FlashPlan, qBase: (i: number) => string): string {
  return unroll(
    R,
    (i) =>
      `${unroll(D4, (k) => `let q${i}_${k} = q[${qBase(i)} + ${k * TPR}u] * params.scale;`)}
  ${unroll(D4, (k) => `var a${i}_${k} = vec4f();`)}
  var m${i} = NEG;
  var l${i} = 0.0;`,
  );
}

/**
 * WGSL: one K/V tile (positions c0..c0 + BC − 1, already in kT and vT) taken by the online softmax of the
 * invocation's R rows (state from {@link flashRowsWgsl}; `rg` its row group, `j` its slice): each key and
 * value read from workgroup memory serves all R rows; a row's partial scores are summed in a fixed order (so
 * its invocations agree bit for bit), then m, l and the accumulators updated. `ok(i, c)` says whether row i
 * sees position c0 + c; an unseen position adds exactly nothing (p = 0, and α = 1 while m stays), so a row's
 * result depends only on its own positions and the BC-aligned tiles, not on the rows that share its block.
 * Ends with a barrier: the next tile overwrites kT, vT and sp.
 */
export function flashTileWgsl(
  { WG, TPR, D4, BC, HD4, R }: FlashPlan,
  ok: (i: number, c: number) => string,
): string {
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const rs = range(R);
  const at = (c: number, k: number) => `${c * HD4}u + j + ${k * TPR}u`;
  // score c of every row: this invocation's slices of q · K[c0 + c], each key vec4 loaded once
  const score = (c: number) =>
    `{
      ${unroll(D4, (k) => `let k${k} = kT[${at(c, k)}];`, "\n      ")}
      ${
      unroll(R, (i) =>
        `s${i}_${c} = ${range(D4).map((k) => `dot(q${i}_${k}, k${k})`).join(" + ")};`, "\n      ")
    }
    }`;
  const slot = (i: number, c: number) => (i * BC + c) * WG;
  const sum = (i: number, c: number) =>
    range(TPR).map((p) => `sp[${slot(i, c)}u + rg * ${TPR}u + ${p}u]`).join(" + ");
  const row = (i: number) => `
    var mt${i} = m${i};
    ${
    unroll(BC, (c) =>
      `let ok${i}_${c} = ${ok(i, c)};
    if (capped) { s${i}_${c} = softcap(s${i}_${c}, params.softcap); }
    if (ok${i}_${c}) { mt${i} = max(mt${i}, s${i}_${c}); }`)
  }
    let alpha${i} = exp(m${i} - mt${i});
    ${unroll(BC, (c) => `let p${i}_${c} = select(0.0, exp(s${i}_${c} - mt${i}), ok${i}_${c});`)}
    l${i} = l${i} * alpha${i} + ${range(BC).map((c) => `p${i}_${c}`).join(" + ")};
    ${unroll(D4, (k) => `a${i}_${k} *= alpha${i};`)}
    m${i} = mt${i};`;
  const accumulate = (c: number) =>
    unroll(
      D4,
      (k) =>
        `{ let v = vT[${at(c, k)}]; ${
          rs.map((i) => `a${i}_${k} = fma(vec4f(p${i}_${c}), v, a${i}_${k});`).join(" ")
        } }`,
    );
  return /* wgsl */ `
    ${unroll(R, (i) => unroll(BC, (c) => `var s${i}_${c}: f32;`))}
    ${unroll(BC, score)}
    ${
    TPR > 1
      ? `${unroll(R, (i) => unroll(BC, (c) => `sp[${slot(i, c)}u + lid] = s${i}_${c};`))}
    workgroupBarrier();
    ${unroll(R, (i) => unroll(BC, (c) => `s${i}_${c} = ${sum(i, c)};`))}`
      : ""
  }
    ${rs.map(row).join("")}
    ${unroll(BC, accumulate)}
    workgroupBarrier();`;
}

/** WGSL shared by both builds: the step state, params and bindings. */
const FLASH_HEADER_WGSL = /* wgsl */ `
${STATE_STRUCT}
const NEG = -1.0e30; // stands in for −∞: WGSL may assume no infinities, and e^(NEG − m) is 0

// window: 0 for none; softcap: 0 for none; blocks: ⌈rows / BR⌉
struct Params { rows: u32, nHeads: u32, nKvHeads: u32, seqLen: u32, scale: f32, window: u32, softcap: f32, blocks: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> q: array<vec4f>;       // (rows, nHeads·headDim)
@group(0) @binding(3) var<storage, read> kCache: array<vec4f>;  // (seqLen, nKvHeads·headDim)
@group(0) @binding(4) var<storage, read> vCache: array<vec4f>;  // (seqLen, nKvHeads·headDim)
@group(0) @binding(5) var<storage, read_write> out: array<vec4f>; // (rows, nHeads·headDim)`;

/**
 * WGSL of both builds' start of `main`: the workgroup's block of rows `blk` (longest blocks first, so the
 * grid's tail is short) and head `h` (its KV head `kvh`).
 */
function flashEntryWgsl(WG: number): string {
  return /* wgsl */ `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= params.blocks * params.nHeads) { return; }
  let blk = params.blocks - 1u - flat % params.blocks;
  let h = flat / params.blocks;
  let kvh = h / (params.nHeads / params.nKvHeads);`;
}

/** The WGSL of one plan. */
export function flashAttentionShader(plan: FlashPlan): string {
  const { WG, TPR, D4, BC, HD4, BR, R } = plan;
  return /* wgsl */ `
${FLASH_HEADER_WGSL}
${flashWorkgroupWgsl(plan)}

${flashEntryWgsl(WG)}
  let rg = lid / ${TPR}u;
  let j = lid % ${TPR}u;
  let t0 = blk * ${BR}u;
  // row i of this invocation: t0 + rg·R + i; rows past the end compute row rows − 1 and write nothing
  ${
    unroll(R, (i) =>
      `let row${i} = min(t0 + rg * ${R}u + ${i}u, params.rows - 1u);
  let P${i} = state.pos + row${i};
  let lo${i} = select(0u, P${i} + 1u - params.window, params.window > 0u && P${i} + 1u > params.window);`)
  }
  let first = state.pos + t0;
  let blockLo = select(0u, first + 1u - params.window, params.window > 0u && first + 1u > params.window);
  let last = state.pos + min(t0 + ${BR}u, params.rows) - 1u;
  let filled = min(state.pos + params.rows, params.seqLen);
  let stride = params.nKvHeads * ${HD4}u;
  let capped = params.softcap > 0.0;
  ${flashRowsWgsl(plan, (i) => `(row${i} * params.nHeads + h) * ${HD4}u + j`)}
  for (var c0 = blockLo / ${BC}u * ${BC}u; c0 <= last; c0 += ${BC}u) {
    for (var e = lid; e < ${BC * HD4}u; e += ${WG}u) {
      let c = c0 + e / ${HD4}u;
      var kv = vec4f();
      var vv = vec4f();
      if (c < filled) {
        let i = c * stride + kvh * ${HD4}u + e % ${HD4}u;
        kv = kCache[i];
        vv = vCache[i];
      }
      kT[e] = kv;
      vT[e] = vv;
    }
    workgroupBarrier();
${flashTileWgsl(plan, (i, c) => `c0 + ${c}u <= P${i} && c0 + ${c}u >= lo${i}`)}
  }
  ${
    unroll(R, (i) =>
      `if (t0 + rg * ${R}u + ${i}u < params.rows) {
    let o = (row${i} * params.nHeads + h) * ${HD4}u + j;
    ${unroll(D4, (k) => `out[o + ${k * TPR}u] = a${i}_${k} / l${i};`)}
  }`)
  }
}
${SOFTCAP_FN}`;
}

/** The WGSL of one blocked plan (flash_attention_blocked.ts): the same bindings, tile walk and output. */
function blockedShader(plan: BlockedFlashPlan): string {
  const { BR, BC, HD4, DV, WG } = plan;
  const RB4 = BR / 4;
  const CB4 = BC / 4;
  return /* wgsl */ `
${FLASH_HEADER_WGSL}
${blockedWorkgroupWgsl(plan)}

${flashEntryWgsl(WG)}
  let t0 = blk * ${BR}u;
  ${blockedSetupWgsl(plan)}
  let first = state.pos + t0;
  let blockLo = select(0u, first + 1u - params.window, params.window > 0u && first + 1u > params.window);
  let last = state.pos + min(t0 + ${BR}u, params.rows) - 1u;
  let filled = min(state.pos + params.rows, params.seqLen);
  let stride = params.nKvHeads * ${HD4}u;
  let P = state.pos + t0 + lid;  // row t0 + lid's position and window start (its softmax)
  let lo = select(0u, P + 1u - params.window, params.window > 0u && P + 1u > params.window);
  for (var c0 = blockLo / ${BC}u * ${BC}u; c0 <= last; c0 += ${BC}u) {
    ${
    blockedTileWgsl(
      plan,
      (kind, c, col) =>
        `if (c0 + ${c} < filled) { v = ${kind.toLowerCase()}Cache[(c0 + ${c}) * stride + kvh * ${HD4}u + ${col}]; }`,
      (c) => `c0 + ${c} <= P && c0 + ${c} >= lo`,
    )
  }
  }
  ${blockedSumsWgsl(plan)}
  ${
    unroll(4, (i) =>
      `if (t0 + rb + ${i * RB4}u < params.rows) {
    let o = ((t0 + rb + ${i * RB4}u) * params.nHeads + h) * ${HD4}u + cb;
    ${unroll(DV, (k) => `out[o + ${k * CB4}u] = o${i}_${k} / ls[${i}];`, " ")}
  }`)
  }
}
${SOFTCAP_FN}`;
}

const BINDINGS: readonly BindingKind[] = [
  "uniform",
  ...(["read-only-storage", "read-only-storage", "read-only-storage", "read-only-storage"] as const),
  "storage",
];

/**
 * Builds the tiled attention. Binds with a head size it cannot tile, with `splits` > 1 or with fewer than
 * `tune.minRows` rows get attention.ts.
 * @param gpu the device
 * @param tune tiling overrides (benchmarks; default 128 invocations, tiles of up to 16 positions)
 * @returns a kernel taking attention.ts's arguments
 */
export function createFlashAttention(gpu: Gpu, tune: FlashTune = {}): Kernel<AttentionArgs> {
  let fallback: Kernel<AttentionArgs> | null = null;
  return {
    bind(args: AttentionArgs): Encodable {
      const { q, kCache, vCache, out, state, rows, nHeads, nKvHeads, headDim, seqLen } = args;
      const plan = flashAttentionPlan(gpu, { headDim }, tune);
      if (!plan || (args.splits ?? 1) > 1 || rows < (tune.minRows ?? 1)) {
        return (fallback ??= createAttention(gpu)).bind(args);
      }
      if (nHeads % nKvHeads !== 0) {
        throw new Error(
          `Cannot build attention for nHeads ${nHeads}, nKvHeads ${nKvHeads}: nHeads must be a multiple of nKvHeads`,
        );
      }
      const blocked = (tune.build ?? FLASH_BUILD_DEFAULT) === "blocked"
        ? blockedFlashPlan(gpu, { headDim }, tune.blockedTile ?? {})
        : null;
      const pipeline = blocked
        ? getPipeline(gpu, {
          name: "flash_attention_blocked",
          code: blockedShader(blocked),
          spec: blocked,
          bindings: BINDINGS,
        })
        : getPipeline(gpu, {
          name: "flash_attention",
          code: flashAttentionShader(plan),
          spec: plan,
          bindings: BINDINGS,
        });
      const blocks = Math.ceil(rows / (blocked ?? plan).BR);
      const params = uniformParams(
        gpu,
        [
          ["u32", rows],
          ["u32", nHeads],
          ["u32", nKvHeads],
          ["u32", seqLen],
          ["f32", args.scale ?? 1 / Math.sqrt(headDim)],
          ["u32", args.window ?? 0],
          ["f32", args.softcap ?? 0],
          ["u32", blocks],
        ],
        "flash_attention params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, state, q, kCache, vCache, out]);
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
