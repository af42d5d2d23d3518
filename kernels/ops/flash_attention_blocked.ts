/**
 * WGSL pieces of the register-blocked build of the tiled causal attention, which flash_attention.ts and
 * paged_flash_attention.ts assemble into their kernels (same arguments and results as their other build):
 * the scores and the output are computed as two small GEMMs per K/V tile, each
 * invocation owning a 4 × 4 block of scores and a 4-row × DV-vec4 block of the output, so every vec4 it
 * reads from workgroup memory serves four rows or four positions.
 *
 * Why: the row-per-invocation-group build (flash_attention.ts) reads one float of workgroup memory per
 * multiply-add (each key and value vec4 serves one row), which held it near 11–14 TFLOP/s on the H100
 * (BENCHMARKS.md, "tiled attention for prompts"), while the f32 GEMM core with its 8 × 8 register tiles runs
 * at 37. Here the scores take 8 vec4 reads per 64 multiply-adds (4 query rows' and 4 keys' vec4 at one
 * column offset) and P·V 1 + DV reads per 16·DV.
 *
 * One workgroup per (block of BR query rows, query head), WG = (BR / 4)·(BC / 4) invocations; invocation
 * (rb, cb) owns rows rb + i·BR/4 and positions cb + j·BC/4 (i, j < 4: neighbouring invocations read
 * neighbouring rows, so the reads spread over the banks), and output columns (vec4) cb + k·BC/4, k < DV.
 * Per tile of BC positions: K → workgroup memory; scores; the scores → `pS`; V → the K tile's memory while
 * the first BR invocations each run the online softmax (Milakov & Gimelshein 2018) of one row over the tile
 * (running max and sum in that invocation's registers, the rescale factor α to `rowS`); then every invocation
 * rescales its output block and adds P·V. Four barriers a tile. Masking and the tile walk are those of
 * flash_attention.ts (a masked position adds exactly nothing). Everything is f32; the sums run in another
 * order than the other build's (tested against the same f64 reference).
 */
import { unroll } from "../core/mod.ts";

/** The tiling of one head size for the blocked build. */
export interface BlockedFlashPlan {
  /** query rows per workgroup, a multiple of 4 */
  BR: number;
  /** positions per K/V tile, a multiple of 4 */
  BC: number;
  /** headDim / 4 */
  HD4: number;
  /** output vec4 per invocation and row: HD4 / (BC / 4) */
  DV: number;
  /** invocations per workgroup: (BR / 4)·(BC / 4) */
  WG: number;
}

/** Output vec4 per invocation and row at most (4·DV vec4 accumulators in registers). */
const MAX_DV = 8;

/** Workgroup bytes of one blocked tiling: Q and the K/V tile (rows padded by a vec4), P, and α / l. */
export function blockedFlashBytes({ BR, BC, HD4 }: Pick<BlockedFlashPlan, "BR" | "BC" | "HD4">): number {
  return 16 * ((BR + BC) * (HD4 + 1) + BC * (BR / 4) + BR / 4);
}

/**
 * The blocked tiling for `headDim`, or null when this build cannot serve it (the caller keeps the other):
 * the first of 32 × 32, 16 × 32, 32 × 16, 16 × 16 (rows × positions) that fits the device's workgroup
 * memory and invocations with DV ≤ {@link MAX_DV}, or the one `tune` names.
 */
export function blockedFlashPlan(
  limits: { maxWorkgroupStorageBytes: number; maxInvocationsPerWorkgroup: number },
  { headDim }: { headDim: number },
  tune: { BR?: number; BC?: number } = {},
): BlockedFlashPlan | null {
  if (headDim % 16 !== 0) return null; // column vec4 four at a time
  const HD4 = headDim / 4;
  const tilings = tune.BR !== undefined || tune.BC !== undefined
    ? [[tune.BR ?? 32, tune.BC ?? 32]]
    : [[32, 32], [16, 32], [32, 16], [16, 16]];
  for (const [BR, BC] of tilings) {
    if (BR % 4 !== 0 || BC % 4 !== 0 || HD4 % (BC / 4) !== 0) continue;
    const plan = { BR, BC, HD4, DV: HD4 / (BC / 4), WG: (BR / 4) * (BC / 4) };
    if (
      plan.DV <= MAX_DV && plan.WG <= limits.maxInvocationsPerWorkgroup &&
      blockedFlashBytes(plan) <= limits.maxWorkgroupStorageBytes
    ) return plan;
  }
  return null;
}

/**
 * WGSL: the workgroup tiles of a blocked plan: Q (scaled), the K/V tile, the scores/probabilities `pS` and
 * the per-row factors `rowS`.
 */
export function blockedWorkgroupWgsl({ BR, BC, HD4 }: BlockedFlashPlan): string {
  const RB4 = BR / 4;
  return /* wgsl */ `
var<workgroup> qS: array<vec4f, ${BR * (HD4 + 1)}>;  // [row][column vec4], scaled; rows padded by a vec4
var<workgroup> kvS: array<vec4f, ${BC * (HD4 + 1)}>; // [position][column vec4]: the tile's keys, then values
var<workgroup> pS: array<vec4f, ${
    BC * RB4
  }>;  // [position][rb]: scores, then probabilities, of rows rb + i·${RB4}
var<workgroup> rowS: array<vec4f, ${RB4}>;     // [rb]: α (per tile), then l (at the end), of rows rb + i·${RB4}`;
}

/**
 * WGSL after the kernel has `lid`, `t0` (first row of the block) and `h`: the invocation's row and column
 * blocks `rb`, `cb`, the block's query rows in qS (row t0 + r of head h, zero past params.rows) and the
 * output accumulators o{i}_{k}; the softmax state `m`, `l` of row t0 + lid (lid < BR) is declared too.
 */
export function blockedSetupWgsl({ BR, HD4, DV, WG }: BlockedFlashPlan): string {
  const RB4 = BR / 4;
  return /* wgsl */ `
  let rb = lid % ${RB4}u;
  let cb = lid / ${RB4}u;
  for (var e = lid; e < ${BR * HD4}u; e += ${WG}u) {
    let r = e / ${HD4}u;
    var v = vec4f();
    if (t0 + r < params.rows) { v = q[((t0 + r) * params.nHeads + h) * ${HD4}u + e % ${HD4}u] * params.scale; }
    qS[r * ${HD4 + 1}u + e % ${HD4}u] = v;
  }
  var m = NEG;  // row t0 + lid's running max and sum (lid < BR; at pS[·][lid % ${RB4}][lid / ${RB4}])
  var l = 0.0;
  ${unroll(4, (i) => unroll(DV, (k) => `var o${i}_${k} = vec4f();`, " "))}`;
}

/**
 * WGSL: one tile of BC positions from c0 (a multiple of BC). `load(kind, c, col)` is a statement that sets
 * `var v: vec4f` (already zero) to K or V of tile position c, column vec4 col (zero for a position no row
 * sees); `sees(c)` says whether row t0 + lid sees position c0 + c. Ends with a barrier: the next tile
 * overwrites the tiles.
 */
export function blockedTileWgsl(
  { BR, BC, HD4, DV, WG }: BlockedFlashPlan,
  load: (kind: "K" | "V", c: string, col: string) => string,
  sees: (c: string) => string,
): string {
  const RB4 = BR / 4;
  const CB4 = BC / 4;
  const QS = HD4 + 1; // vec4 row stride of the Q and K/V tiles; the pad spreads neighbouring rows' banks
  const r4 = [0, 1, 2, 3];
  // scores s{i}[j] of rows rb + i·RB4 and positions cb + j·CB4, four column vec4 per written-out step
  const scoreStep = (u: number) =>
    `{
      ${unroll(4, (i) => `let a${i} = qS[(rb + ${i * RB4}u) * ${QS}u + d + ${u}u];`, "\n      ")}
      ${unroll(4, (j) => `let b${j} = kvS[(cb + ${j * CB4}u) * ${QS}u + d + ${u}u];`, "\n      ")}
      ${unroll(4, (i) => `s${i} += vec4f(${r4.map((j) => `dot(a${i}, b${j})`).join(", ")});`, "\n      ")}
    }`;
  // P·V for position c + u: p holds rows rb + i·RB4
  const pvStep = (u: number) =>
    `{
      let p = pS[(c + ${u}u) * ${RB4}u + rb];
      ${
      unroll(DV, (k) =>
        `{ let v = kvS[(c + ${u}u) * ${QS}u + cb + ${k * CB4}u]; ${
          r4.map((i) => `o${i}_${k} = fma(vec4f(p[${i}]), v, o${i}_${k});`).join(" ")
        } }`, "\n      ")
    }
    }`;
  const fill = (kind: "K" | "V") =>
    `for (var e = lid; e < ${BC * HD4}u; e += ${WG}u) {
      var v = vec4f();
      ${load(kind, `e / ${HD4}u`, `e % ${HD4}u`)}
      kvS[e / ${HD4}u * ${QS}u + e % ${HD4}u] = v;
    }`;
  return /* wgsl */ `
    ${fill("K")}
    workgroupBarrier();
    ${unroll(4, (i) => `var s${i} = vec4f();`, " ")}
    for (var d = 0u; d < ${HD4}u; d += 4u) {
      ${unroll(4, scoreStep, "\n      ")}
    }
    ${
    unroll(4, (j) => `pS[(cb + ${j * CB4}u) * ${RB4}u + rb] = vec4f(s0[${j}], s1[${j}], s2[${j}], s3[${j}]);`)
  }
    workgroupBarrier();
    ${fill("V")}
    if (lid < ${BR}u) {
      let at = lid % ${RB4}u;
      let comp = lid / ${RB4}u;
      var mt = m;
      for (var c = 0u; c < ${BC}u; c++) {
        var s = pS[c * ${RB4}u + at][comp];
        if (params.softcap > 0.0) {
          s = softcap(s, params.softcap);
          pS[c * ${RB4}u + at][comp] = s;
        }
        if (${sees("c")}) { mt = max(mt, s); }
      }
      var sum = 0.0;
      for (var c = 0u; c < ${BC}u; c++) {
        let p = select(0.0, exp(pS[c * ${RB4}u + at][comp] - mt), ${sees("c")});
        pS[c * ${RB4}u + at][comp] = p;
        sum += p;
      }
      let alpha = exp(m - mt);
      l = l * alpha + sum;
      m = mt;
      rowS[at][comp] = alpha;
    }
    workgroupBarrier();
    let alpha = rowS[rb];
    ${unroll(4, (i) => unroll(DV, (k) => `o${i}_${k} *= alpha[${i}];`, " "))}
    for (var c = 0u; c < ${BC}u; c += 4u) {
      ${unroll(4, pvStep, "\n      ")}
    }
    workgroupBarrier();`;
}

/** WGSL after the last tile: `ls`, the sums l of rows rb + i·BR/4 (every invocation). */
export function blockedSumsWgsl({ BR }: BlockedFlashPlan): string {
  return /* wgsl */ `
  if (lid < ${BR}u) { rowS[lid % ${BR / 4}u][lid / ${BR / 4}u] = l; }
  workgroupBarrier();
  let ls = rowS[rb];`;
}
