/**
 * WGSL for the batched decode path of kernels/matmul_affine.ts ("q8mm"): int8 activations and
 * `dot4I8Packed`, like the q8 GEMV (matmul_affine_q8_wgsl.ts), for any number of activation rows, reading
 * each weight once per dispatch of up to ROW_LANES_MAX_ROWS.q8 (row_lanes_wgsl.ts) rows.
 *
 * Why a second int8 kernel: the q8 GEMV keeps every activation row's int8 pieces in registers and splits K
 * over a whole workgroup, so its registers and its cross-lane reduction grow with the rows: the engine had to
 * run it two rows per dispatch, re-reading the weights for every pair (BENCHMARKS.md, "Serving under load").
 * Here the activations are quantized once, by a prep pass, into a scratch buffer, and the main pass is
 * weight-stationary: a lane loads a piece of codes once and applies it to every row.
 *
 * Prep pass (one workgroup per activation row): optionally the RMSNorm or SiLU·mul prologue, then per
 * 32-column piece the int8 quantization of the q8 GEMV (d = max|x|/127, round half to even) written as
 * three vec4<u32>: the eight dot4 operand words in {@link operandElements} order, then (d, dz = d·Σq).
 *
 * Main pass: the lane layout of row_lanes_wgsl.ts (K split over a fixed number of lanes, rows split over
 * lanes), a piece of codes applied to each of a lane's rows; a row's result never depends on its batch.
 * Every accumulation is an explicit fma, so no compiler contracts one build differently from another.
 */
import { PARAMS_WGSL, STORE_WGSL } from "./matmul_affine_wgsl.ts";
import {
  codeOperand,
  gatherReadFn,
  matricesWgsl,
  matrixOfWorkgroup,
  operandElements,
  SPREAD3_WGSL,
} from "./matmul_affine_q8_wgsl.ts";
import { unroll } from "../core/mod.ts";
import { siluMulFn } from "../ops/mod.ts";
import {
  type RowLanes,
  rowLanesDecl,
  rowLanesOutputsPerWorkgroup,
  rowLanesReduce,
  rowLanesSetup,
  rowLanesWorkgroupSize,
} from "./row_lanes_wgsl.ts";

/** vec4<u32> per (row, piece) of the quantized activations: two of operand words, one of (d, dz). */
export const Q8MM_VEC4_PER_PIECE = 3;

/** Shape of the prep pass. */
export interface Q8PrepBuild {
  bits: 2 | 3 | 4;
  /** activations read through `perm` or with bounds checks (act-order, or inDim % 32 ≠ 0) */
  gather: boolean;
  prologue: "none" | "norm" | "siluMul";
}

/** Shape of one main-pass build: the lanes (row_lanes_wgsl.ts), pieces per loop iteration, the codes. */
export interface Q8mmBuild extends RowLanes {
  bits: 2 | 3 | 4;
  unroll: number;
  /** matrices sharing the activations in one dispatch, 1–3 (matrix m at bindings 2 + 3m, 3 + 3m, 4 + 3m) */
  mats: number;
  /** What to load a piece ahead (registers `nc{j}`, `ns{j}` and, for "all", `nx{a,b,d}{i}`; unroll 1). */
  prefetch?: Q8Prefetch;
}

const PREP_WG = 256;

/**
 * The prep pass. Bindings: 0 params, 1 x (f32 rows at xBase + r·xStride), 2 perm (or a dummy), 3 the norm
 * weight or the up projection (or a dummy), 4 xq (rows, nPieces) × 3 vec4<u32>.
 */
export function q8PrepWgsl(b: Q8PrepBuild): string {
  const load = (name: string, k: number) =>
    b.gather
      ? `vec4f(${unroll(4, (j) => `at${name}(r, p * 32u + ${4 * k + j}u)`, ", ")})`
      : `${name}4[(params.xBase + r * params.xStride) / 4u + p * 8u + ${k}u]`;
  const gatherFn = (name: string, arr: string, rowed: boolean) => gatherReadFn(`at${name}`, arr, rowed);
  const extraDecl = b.prologue === "none"
    ? `@group(0) @binding(3) var<storage, read> extra: array<f32>;  // a dummy word`
    : b.gather
    ? `@group(0) @binding(3) var<storage, read> extra: array<f32>;  // ${
      b.prologue === "norm" ? "(inDim) norm weight" : "the up projection, like x"
    }${gatherFn("E", "extra", b.prologue === "siluMul")}`
    : `@group(0) @binding(3) var<storage, read> E4: array<vec4f>;`;
  const values = (k: number) => {
    const v = load("X", k);
    if (b.prologue === "siluMul") return `siluMul(${v}, ${load("E", k)})`;
    if (b.prologue === "norm") {
      const w = b.gather
        ? `vec4f(${unroll(4, (j) => `atE(r, p * 32u + ${4 * k + j}u)`, ", ")})`
        : `E4[p * 8u + ${k}u]`;
      return `${v} * inv * ${w}`;
    }
    return v;
  };
  const el = (e: number) => `v${e >> 2}.${"xyzw"[e & 3]}`;
  const words = operandElements(b.bits).map(([, , es]) =>
    `pack4xI8(vec4i(round(vec4f(${unroll(4, (i) => el(es[i]), ", ")}) * q)))`
  );
  const norm = b.prologue !== "norm" ? "" : /* wgsl */ `
  var ss = 0.0;
  for (var p = lid; p < params.nPieces; p += ${PREP_WG}u) {
    ${unroll(8, (k) => `let v${k} = ${load("X", k)};`, "\n    ")}
    ss += ${unroll(8, (k) => `dot(v${k}, v${k})`, " + ")};
  }
  red[lid] = ss;
  workgroupBarrier();
  for (var h = ${PREP_WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { red[lid] += red[lid + h]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(params.inDim) + params.normEps);`;
  return PARAMS_WGSL + /* wgsl */ `
${b.gather ? "override PERM: bool = false;" : ""}
${
    b.gather
      ? `@group(0) @binding(1) var<storage, read> x: array<f32>;${gatherFn("X", "x", true)}`
      : `@group(0) @binding(1) var<storage, read> X4: array<vec4f>;`
  }
@group(0) @binding(2) var<storage, read> perm: array<u32>;   // (inDim) u32, or a dummy word
${extraDecl}
@group(0) @binding(4) var<storage, read_write> xq: array<vec4u>;
${b.prologue === "siluMul" ? siluMulFn("vec4<f32>") : ""}
var<workgroup> red: array<f32, ${PREP_WG}>;

@compute @workgroup_size(${PREP_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;  // one activation row per workgroup (uniform: the barriers stay legal)
  if (r >= params.rows) { return; }
  ${norm}
  for (var p = lid; p < params.nPieces; p += ${PREP_WG}u) {
    ${unroll(8, (k) => `let v${k} = ${values(k)};`, "\n    ")}
    var m = abs(v0);
    ${unroll(7, (k) => `m = max(m, abs(v${k + 1}));`, "\n    ")}
    let am = max(max(m.x, m.y), max(m.z, m.w));
    let d = am / 127.0;
    let q = select(0.0, 127.0 / am, am > 0.0);
    ${words.map((w, i) => `let w${i} = ${w};`).join("\n    ")}
    let dz = d * f32(${unroll(8, (i) => `dot4I8Packed(w${i}, 0x01010101u)`, " + ")});
    let at = (r * params.nPieces + p) * ${Q8MM_VEC4_PER_PIECE}u;
    xq[at] = vec4u(w0, w1, w2, w3);
    xq[at + 1u] = vec4u(w4, w5, w6, w7);
    xq[at + 2u] = vec4u(bitcast<u32>(d), bitcast<u32>(dz), 0u, 0u);
  }
}
`;
}

/** Piece u of a lane's loop iteration (lane s takes pieces s, s + KS, …): its index, clamped, and whether it is real. */
export function q8PieceHead(u: number, ks: number): string[] {
  return [
    `let p${u} = min(p + ${u * ks}u, params.nPieces - 1u);`,
    `let ok${u} = p + ${u * ks}u < params.nPieces;`,
  ];
}

/**
 * What a main pass loads one piece ahead (into registers, before the current piece's math, so the loads'
 * trip overlaps it): the codes and scales, or those and the activation rows too. Loops of one piece only.
 */
export type Q8Prefetch = "codes" | "all";

/** A prefetching pass's first piece of the lane, loaded before the loop. */
export const Q8_FIRST_PIECE = "min(s, params.nPieces - 1u)";

/** A prefetching pass's next piece (`pn`, clamped), loaded during the current one. */
export function q8NextPiece(ks: number): string {
  return `let pn = min(p + ${ks}u, params.nPieces - 1u);`;
}

/** Row i's words of piece q as the prep pass stored them: (xa, xb) the operand words, xd (d, dz, 0, 0). */
function q8RowWords(i: number, q: string): [string, string, string] {
  const at = `(xr${i} + ${q}) * ${Q8MM_VEC4_PER_PIECE}u`;
  return [`xq[${at}]`, `xq[${at} + 1u]`, `xq[${at} + 2u]`];
}

/**
 * The prep pass's piece u of the lane's row i: its eight operand words (xa, xb) and (d, dz) as xd. Prefetched,
 * they are the registers `nx{a,b,d}{i}` loaded an iteration before, which then load piece `pn`.
 */
export function q8RowLoads(i: number, u: number, prefetch = false): string[] {
  if (!prefetch) {
    const [a, b, d] = q8RowWords(i, `p${u}`);
    return [
      `let xa${i}_${u} = ${a};`,
      `let xb${i}_${u} = ${b};`,
      `let xd${i}_${u} = bitcast<vec2f>(${d}.xy);`,
    ];
  }
  const [a, b, d] = q8RowWords(i, "pn");
  return [
    `let xa${i}_${u} = nxa${i};`,
    `let xb${i}_${u} = nxb${i};`,
    `let xd${i}_${u} = bitcast<vec2f>(nxd${i}.xy);`,
    `nxa${i} = ${a};`,
    `nxb${i} = ${b};`,
    `nxd${i} = ${d};`,
  ];
}

/** Declarations before the loop of a prefetching pass: row i's registers, holding the lane's first piece. */
export function q8RowPrefetchInit(i: number): string {
  const [a, b, d] = q8RowWords(i, Q8_FIRST_PIECE);
  return `var nxa${i} = ${a}; var nxb${i} = ${b}; var nxd${i} = ${d};`;
}

/** The integer dot product of code operands `c{id}_0..7` with row i's piece u (words from {@link q8RowLoads}). */
export function q8Dots(id: string, i: number, u: number): string {
  return unroll(
    8,
    (k) => `dot4I8Packed(c${id}_${k}, ${k < 4 ? "xa" : "xb"}${i}_${u}.${"xyzw"[k & 3]})`,
    " + ",
  );
}

/**
 * The main pass. Bindings: 0 params, 1 xq, then per matrix m: 2 + 3m codes, 3 + 3m scaleZero, 4 + 3m y.
 * Params: rows, nPieces, nGroups, xBase (first xq row of the dispatch), y strides and offsets as the
 * other affine shaders; outDim1/2 and wgStart1/2 for the further matrices.
 */
export function q8mmWgsl(b: Q8mmBuild): string {
  const { bits, ks, no, rl } = b;
  const wg = rowLanesWorkgroupSize(b);
  const store = bits === 4 ? "vec4<u32>" : bits === 3 ? "u32" : "vec2<u32>"; // 3-bit: three words a piece
  const ops = operandElements(bits);
  const prefetch = b.prefetch !== undefined;
  const prefetchRows = b.prefetch === "all";
  if (prefetch && b.unroll !== 1) {
    throw new Error(`Cannot build the batched q8 matmul: prefetch needs unroll 1`);
  }
  // piece q's code words and scale word of output j
  const codesAt = (j: number, q: string) => `loadCodes(m, orow${j} * params.nPieces + ${q})`;
  const scaleAt = (j: number, q: string) => `loadScaleZero(m, orow${j} * params.nGroups + groupOf(${q}))`;
  const piece = (u: number) => {
    const lines = q8PieceHead(u, ks);
    if (prefetch) lines.push(q8NextPiece(ks));
    for (let j = 0; j < no; j++) {
      const id = `${j}_${u}`;
      lines.push(
        ...(prefetch
          ? [
            `let cw${id} = nc${j};`,
            `let sz${id} = unpack2x16float(ns${j});`,
            `nc${j} = ${codesAt(j, "pn")};`,
            `ns${j} = ${scaleAt(j, "pn")};`,
          ]
          : [
            `let cw${id} = ${codesAt(j, `p${u}`)};`,
            `let sz${id} = unpack2x16float(${scaleAt(j, `p${u}`)});`,
          ]),
        `let sx${id} = select(0.0, sz${id}.x, ok${u});`,
      );
      ops.forEach(([t, s], k) =>
        lines.push(`let c${id}_${k} = ${codeOperand(bits, t, s, (w) => `cw${id}.${"xyzw"[w]}`)};`)
      );
    }
    for (let i = 0; i < rl; i++) {
      lines.push(...q8RowLoads(i, u, prefetchRows));
      for (let j = 0; j < no; j++) {
        const id = `${j}_${u}`;
        lines.push(
          `a${j}_${i} = fma(sx${id}, fma(xd${i}_${u}.x, f32(${
            q8Dots(id, i, u)
          }), -(sz${id}.y * xd${i}_${u}.y)), ` +
            `a${j}_${i});`,
        );
      }
    }
    return lines.join("\n    ");
  };
  return PARAMS_WGSL + STORE_WGSL + SPREAD3_WGSL + /* wgsl */ `
@group(0) @binding(1) var<storage, read> xq: array<vec4u>;        // (rows, nPieces) × 3, the prep pass's
@group(0) @binding(2) var<storage, read> codes: array<${store}>;   // (outDim, nPieces) pieces
@group(0) @binding(3) var<storage, read> scaleZero: array<u32>; // (outDim, nGroups) f16 scale | f16 zero << 16
${matricesWgsl(bits, b.mats, 2)}
${rowLanesDecl(b)}

// A warp's lanes share outputs (row_lanes_wgsl.ts), so their code loads are the same few addresses.
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  ${matrixOfWorkgroup(b.mats)}
  let o0 = (flat - first) * ${rowLanesOutputsPerWorkgroup(b)}u;
  if (o0 >= od) { return; }  // uniform per workgroup
  ${rowLanesSetup(b, "od", (i, row) => `let xr${i} = (params.xBase + ${row}) * params.nPieces;`)}
  ${
    prefetch
      ? unroll(no, (j) =>
        `var nc${j} = ${codesAt(j, Q8_FIRST_PIECE)}; var ns${j} = ${scaleAt(j, Q8_FIRST_PIECE)};`)
      : ""
  }
  ${prefetchRows ? unroll(rl, q8RowPrefetchInit) : ""}
  for (var p = s; p < params.nPieces; p += ${ks * b.unroll}u) {
    ${unroll(b.unroll, piece, "\n    ")}
  }
  ${rowLanesReduce(b, "od", (r, o, v) => `storeTo(m, ${r}, ${o}, ${v})`)}
}
`;
}
