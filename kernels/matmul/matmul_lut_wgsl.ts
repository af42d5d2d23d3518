/**
 * WGSL for kernels/matmul_lut.ts: the decode GEMV and the prefill GEMM. Layout and math are documented
 * there; this file only builds shader text.
 *
 * Both shaders keep the tile's LUTs in workgroup memory as f32 in [code][row] order: lanes of a warp
 * own consecutive rows, so a lookup lutS[code · RT + row] lands in bank row % 32 whatever the codes
 * are, and never conflicts (a [row][code] table would, whenever two lanes' codes differ in one bank).
 */
import { unroll } from "../core/mod.ts";
import { siluMulFn } from "../ops/mod.ts";
import {
  F16_ENABLE,
  GEMM_PIPE_LOAD_X,
  GEMM_PIPE_LOAD_X_SCALAR,
  type GemmBuild,
  gemmCoreWgsl,
} from "./gemm_core_wgsl.ts";

/** The uniform block both shaders share, packed in this order by matmul_lut.ts. */
export const LUT_PARAMS_FIELDS = [
  "rows", // activation rows of this dispatch
  "inDim",
  "outDim",
  "xRowOffset", // first row of x this dispatch reads
  "yStride",
  "yOffset", // element of y that output (0, 0) of this dispatch lands on
  "nPieces", // ceil(inDim / 32)
  "tilesN", // GEMM: output tiles along outDim
  "normEps", // GEMV with a fused RMSNorm: epsilon (the one f32 field)
] as const;

/**
 * The uniform block, activation/lut/y bindings and store every LUT shader starts with (each declares its
 * codes at binding 2). `x` is binding 1's declaration: f32 activations by default, `x4` vec4s for 16-byte
 * loads, or the int8 path's prepared rows.
 */
export function lutParamsWgsl(
  x = "var<storage, read> x: array<f32>;     // (xRowOffset + rows, inDim) f32",
): string {
  return /* wgsl */ `
override ACC: bool = false;  // y += x·Qᵀ instead of y = x·Qᵀ

struct Params { ${LUT_PARAMS_FIELDS.map((f) => `${f}: ${f === "normEps" ? "f32" : "u32"}`).join(", ")} }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) ${x}
@group(0) @binding(3) var<storage, read> lut: array<u32>;   // (outDim, 2^BITS / 2) f16 pairs
@group(0) @binding(4) var<storage, read_write> y: array<f32>;  // (rows, yStride) f32

fn store(r: u32, o: u32, v: f32) {
  let i = params.yOffset + r * params.yStride + o;
  if (ACC) { y[i] += v; } else { y[i] = v; }
}
`;
}

/** {@link lutParamsWgsl} with f32 activations. */
export const LUT_PARAMS_WGSL = lutParamsWgsl();

/** Binding 1 as 16-byte activation loads. */
export const LUT_X4_DECL = "var<storage, read> x4: array<vec4f>;   // (xRowOffset + rows, inDim) f32";

/** What a one- or two-row GEMV does to x first (see matmul_lut.ts MatmulLutArgs.norm / siluMulUp). */
export type LutPrologue = "none" | "norm" | "siluMul";

/** Workgroup memory the prologue adds, in bytes. */
export function lutPrologueBytes(prologue: LutPrologue, rows: number, wg: number): number {
  return prologue === "norm" ? (wg + 32 + rows) * 4 : 0;
}

/**
 * WGSL for reading activation (row r, column k) through the prologue: `xIn(r, k)`; with "norm", also
 * `computeNorm(lid)`, which every invocation must call (it has barriers) before the first `xIn`. The norm is
 * RMSNorm over the whole row, as kernels/rms_norm.ts computes it; the extra input sits at binding 5.
 */
export function lutPrologueWgsl(prologue: LutPrologue, rows: number, wg: number): string {
  const at = "(params.xRowOffset + r) * params.inDim + k";
  if (prologue === "none") return `fn xIn(r: u32, k: u32) -> f32 { return x[${at}]; }`;
  if (prologue === "siluMul") {
    return /* wgsl */ `
@group(0) @binding(5) var<storage, read> up: array<f32>;  // like x: the up projection
${siluMulFn("f32")}
fn xIn(r: u32, k: u32) -> f32 { return siluMul(x[${at}], up[${at}]); }`;
  }
  return /* wgsl */ `
@group(0) @binding(5) var<storage, read> normWeight: array<f32>;  // (inDim) f32
var<workgroup> normRed: array<f32, ${wg + 32}>;  // per invocation, then 32 partial sums
var<workgroup> normInv: array<f32, ${rows}>;
fn computeNorm(lid: u32) {
  for (var r = 0u; r < ${rows}u; r++) {
    var ss = 0.0;
    for (var k = lid; k < params.inDim; k += ${wg}u) { let v = x[${at}]; ss = fma(v, v, ss); }
    normRed[lid] = ss;
    workgroupBarrier();
    if (lid < 32u) {
      var t = 0.0;
      for (var j = lid; j < ${wg}u; j += 32u) { t += normRed[j]; }
      normRed[${wg}u + lid] = t;
    }
    workgroupBarrier();
    if (lid == 0u) {
      var total = 0.0;
      for (var j = 0u; j < 32u; j++) { total += normRed[${wg}u + j]; }
      normInv[r] = inverseSqrt(total / f32(params.inDim) + params.normEps);
    }
    workgroupBarrier();
  }
}
fn xIn(r: u32, k: u32) -> f32 { return x[${at}] * normInv[r] * normWeight[k]; }`;
}

/** Shape of one GEMV build (all of it is unrolled or sized by TypeScript, so it is the cache key). */
export interface LutGemvBuild {
  bits: 2 | 3 | 4;
  /** activation rows, 1..8 */
  rows: number;
  /** output rows per lane (register blocking): 1, 2 or 4 */
  nr: number;
  /** warps of 32 lanes across rows; the row tile is RT = 32 · rw · nr ≤ 128 rows */
  rw: number;
  /** K slices: warps that split the pieces of the same rows */
  ks: number;
  /** pieces (32 columns) per lane per window */
  pieces: number;
  /** RMSNorm or SiLU·mul applied to x as it is staged (1–2 rows) */
  prologue: LutPrologue;
}

/** Rows per workgroup of a GEMV build. */
export function gemvRowTile(b: Pick<LutGemvBuild, "nr" | "rw">): number {
  return 32 * b.rw * b.nr;
}

/** Workgroup memory a GEMV build declares, in bytes. */
export function gemvWorkgroupBytes(b: LutGemvBuild): number {
  const wg = 32 * b.rw * b.ks;
  const red = Math.min(b.nr * b.rows, b.ks);
  return 4 * ((1 << b.bits) * gemvRowTile(b) + 2 * b.rows * b.ks * b.pieces * 32 + wg * red) +
    lutPrologueBytes(b.prologue, b.rows, wg);
}

/**
 * WGSL expression for (code k of a piece) << L | rl: the code's LUT index for a lane's row, from the
 * piece's words `w(i)`; a 3-bit code may straddle two words (funnel shift).
 */
function lutIndex(bits: number, k: number, L: number, w: (i: number) => string, rl: string): string {
  const p = bits * k;
  const i = p >> 5;
  const s = p & 31;
  let e = s >= L ? `(${w(i)} >> ${s - L}u)` : `(${w(i)} << ${L - s}u)`;
  if (s + bits > 32) e = `(${e} | (${w(i + 1)} << ${32 - s + L}u))`;
  return `lutS[(${e} & ${(((1 << bits) - 1) << L) >>> 0}u) | ${rl}]`;
}

/** Loads the words of piece `pc` for register row n into `${to}${n}` (3-bit: `${to}${n}_0..2`). */
function loadPiece(bits: number, decl: string, to: string, pc: string, n: number): string {
  if (bits !== 3) return `${decl}${to}_${n} = codes[o${n} * params.nPieces + ${pc}];`;
  return unroll(
    3,
    (i) => `${decl}${to}_${n}_${i} = codes[(o${n} * params.nPieces + ${pc}) * 3u + ${i}u];`,
    " ",
  );
}

/** Chained FMAs: acc + Σ a[i]·b[i] over the four components. */
function dot4(a: string, b: string, acc: string): string {
  return `fma(${a}.w, ${b}.w, fma(${a}.z, ${b}.z, fma(${a}.y, ${b}.y, fma(${a}.x, ${b}.x, ${acc}))))`;
}

/** Lane piece j of the window: 32 codes for each of NR rows against ROWS broadcast activation rows. */
function gemvPiece(b: LutGemvBuild, j: number): string {
  const { bits, rows, nr } = b;
  const L = Math.log2(gemvRowTile(b));
  const word = (n: number) => (i: number) => bits === 3 ? `cw${j}_${n}_${i}` : `cw${j}_${n}[${i}]`;
  const lines = [`let xb = ((buf * ROWS) * WIN + ks * P + ${j}u) * 8u;`];
  for (let q = 0; q < 8; q++) {
    for (let r = 0; r < rows; r++) lines.push(`let x${q}_${r} = xw[xb + ${r * b.ks * b.pieces * 8 + q}u];`);
    for (let n = 0; n < nr; n++) {
      const l = `l${q}_${n}`;
      const idx = (c: number) => lutIndex(bits, 4 * q + c, L, word(n), `rl${n}`);
      lines.push(`let ${l} = vec4f(${unroll(4, idx, ", ")});`);
      for (let r = 0; r < rows; r++) {
        const a = `acc[${n * rows + r}]`;
        lines.push(`${a} = ${dot4(l, `x${q}_${r}`, a)};`);
      }
    }
  }
  return `if (s0 + ks * P + ${j}u < params.nPieces) {\n    ${lines.join("\n    ")}\n  }`;
}

/**
 * GEMV (rows ≤ 8), one lane per output row. A workgroup owns RT = 32·RW·NR rows and runs RW·KS warps:
 * warp (rw, ks) takes rows rw·32 + lane + n·32·RW (n < NR) and every KS-th group of P pieces. Per
 * window of KS·P pieces all warps read their code words (one coalesced vec4 / vec2 / 3 words per row
 * and piece: a warp's rows are adjacent in memory), look each code up in the workgroup LUT and multiply
 * it with activations that every lane of the warp reads from the same workgroup address (a broadcast:
 * the activation traffic per code byte is 1/32 of a lanes-along-K GEMV's, docs/webgpu.md §6). The next
 * window's codes and activations are loaded into registers before the current window's math, so one
 * barrier per window suffices and the loads are in flight during the math. Partial sums of the KS
 * slices meet in a workgroup reduction of RED partials per round.
 */
export function gemvWgsl(b: LutGemvBuild): string {
  const { bits, rows, nr, rw, ks, pieces } = b;
  const wg = 32 * rw * ks;
  const parts = rows * nr;
  const red = Math.min(parts, ks);
  const per = Math.ceil((rows * ks * pieces * 32) / wg);
  const cw = bits === 4 ? "vec4<u32>" : bits === 2 ? "vec2<u32>" : "u32";
  const pcs = (f: (j: number) => string, sep = "\n  ") => unroll(pieces, f, sep);
  const rounds = Array.from({ length: Math.ceil(parts / red) }, (_, k) => k * red).map((j0) => `
  ${unroll(Math.min(red, parts - j0), (jj) => `red[(${jj}u * KS + ks) * RL + rr] = acc[${j0 + jj}];`)}
  workgroupBarrier();
  finish(lid, tile, ${j0}u);
  workgroupBarrier();`);
  const move = (j: number) => (n: number) =>
    bits === 3 ? unroll(3, (i) => `cw${j}_${n}_${i} = nw${j}_${n}_${i};`, " ") : `cw${j}_${n} = nw${j}_${n};`;
  return LUT_PARAMS_WGSL + /* wgsl */ `
const BITS = ${bits}u;
const ROWS = ${rows}u;  // activation rows
const NR = ${nr}u;      // output rows per lane
const RW = ${rw}u;      // row warps
const KS = ${ks}u;      // K slices
const P = ${pieces}u;   // pieces per lane per window
const RL = 32u * RW;    // lanes across rows
const RT = RL * NR;     // rows per workgroup
const WG = RL * KS;
const WIN = KS * P;     // pieces per window
const RED = ${red}u;    // partial sums reduced per round

@group(0) @binding(2) var<storage, read> codes: array<${cw}>;  // (outDim, nPieces, BITS) u32

var<workgroup> lutS: array<f32, (1u << BITS) * RT>;  // [code][row in tile]
var<workgroup> xw: array<vec4f, 2u * ROWS * WIN * 8u>;  // [buffer][activation row][piece][8 vec4]
var<workgroup> red: array<f32, WG * RED>;  // [partial][slice][row lane]
${lutPrologueWgsl(b.prologue, rows, wg)}

// Activation e of the window starting at piece s0 (row e / (WIN·32)); zero past inDim.
fn stageLoad(e: u32, s0: u32) -> f32 {
  let k = s0 * 32u + e % (WIN * 32u);
  if (e >= ROWS * WIN * 32u || k >= params.inDim) { return 0.0; }
  return xIn(e / (WIN * 32u), k);
}
fn stageStore(e: u32, buf: u32, v: f32) {
  if (e >= ROWS * WIN * 32u) { return; }
  let i = buf * ROWS * WIN * 32u + e;
  xw[i / 4u][i % 4u] = v;
}

// Output j0 + t / RL (register row n, activation row r) of row lane t % RL: the sum over the K slices.
fn finish(lid: u32, tile: u32, j0: u32) {
  let jj = lid / RL;
  let j = j0 + jj;
  let rr = lid % RL;
  let o = tile * RT + (j / ROWS) * RL + rr;
  if (jj >= RED || j >= NR * ROWS || o >= params.outDim) { return; }
  var s = 0.0;
  for (var k = 0u; k < KS; k++) { s += red[(jj * KS + k) * RL + rr]; }
  store(j % ROWS, o, s);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile * RT >= params.outDim) { return; }
  let rr = lid % RL;
  let ks = lid / RL;
  // Rows past outDim re-read the last row (in bounds, cached) and are never stored.
  ${
    unroll(nr, (n) =>
      `let rl${n} = ${n}u * RL + rr;\n  let o${n} = min(tile * RT + rl${n}, params.outDim - 1u);`)
  }
  for (var e = lid; e < RT * (1u << BITS) / 2u; e += WG) {
    let row = e / ((1u << BITS) / 2u);
    let pair = e % ((1u << BITS) / 2u);
    let v = unpack2x16float(lut[min(tile * RT + row, params.outDim - 1u) * ((1u << BITS) / 2u) + pair]);
    lutS[2u * pair * RT + row] = v.x;
    lutS[(2u * pair + 1u) * RT + row] = v.y;
  }
  ${b.prologue === "norm" ? "computeNorm(lid);" : ""}
  ${pcs((j) => `let c${j} = min(ks * P + ${j}u, params.nPieces - 1u);`)}
  ${pcs((j) => unroll(nr, (n) => loadPiece(bits, "var ", `cw${j}`, `c${j}`, n)))}
  ${unroll(per, (i) => `stageStore(lid + ${i}u * WG, 0u, stageLoad(lid + ${i}u * WG, 0u));`)}
  workgroupBarrier();
  var acc: array<f32, ${parts}>;  // [NR][ROWS]
  var buf = 0u;
  for (var s0 = 0u; s0 < params.nPieces; s0 += WIN) {
    ${pcs((j) => `let n${j} = min(s0 + WIN + ks * P + ${j}u, params.nPieces - 1u);`, "\n    ")}
    ${pcs((j) => unroll(nr, (n) => loadPiece(bits, "let ", `nw${j}`, `n${j}`, n), "\n    "), "\n    ")}
    ${unroll(per, (i) => `let xr${i} = stageLoad(lid + ${i}u * WG, s0 + WIN);`, "\n    ")}
    ${pcs((j) => gemvPiece(b, j), "\n    ")}
    ${unroll(per, (i) => `stageStore(lid + ${i}u * WG, 1u - buf, xr${i});`, "\n    ")}
    workgroupBarrier();
    buf = 1u - buf;
    ${pcs((j) => unroll(nr, move(j), "\n    "), "\n    ")}
  }
  ${rounds.join("")}
}
`;
}

/**
 * Tiled GEMM (rows past the GEMV) on the shared register-tiled core (gemm_core_wgsl.ts: 8×8 per
 * invocation; in f32, or in f16 with f32 sums every 16 k). The TN rows' LUTs are copied into workgroup
 * memory in the tiles' type at the first K step (or before the first load); each step then dequantizes the
 * weight tile by lookups (each code once per tile: one invocation per 8 codes of a row) and reads the
 * activation tile with 16-byte loads (`vec`: inDim % 4 = 0) or checked scalar ones. TK divides the 32-column
 * piece.
 */
export function gemmCoreLutWgsl(build: GemmBuild & { vec: boolean }): string {
  const params = build.vec ? lutParamsWgsl(LUT_X4_DECL) : LUT_PARAMS_WGSL;
  return (build.math === "f16" ? F16_ENABLE : "") + params + /* wgsl */ `
override BITS: u32 = 4u;
@group(0) @binding(2) var<storage, read> codes: array<u32>;  // (outDim, nPieces, BITS) u32
` + gemmCoreWgsl(
    lutDecode(build.vec ? GEMM_PIPE_LOAD_X : GEMM_PIPE_LOAD_X_SCALAR) +
      (build.pipe ? LUT_PIPE_STAGE : LUT_STAGE),
    build,
  );
}

// After the core's overrides in the text: naga panics on an override-sized array declared before them.
const lutDecode = (loadX: string) => /* wgsl */ `
var<workgroup> lutS: array<T, 16u * TN>;  // [code][row in tile]; TN a multiple of 32: conflict-free

// The TN rows' LUTs into lutS (every invocation calls it; a barrier must follow).
fn stageLut(lid: u32, n0: u32) {
  let hp = (1u << BITS) / 2u;  // f16 pairs per LUT row
  for (var e = lid; e < TN * hp; e += WG) {
    let n = e / hp;
    let pair = pairOf(lut[min(n0 + n, params.outDim - 1u) * hp + e % hp]);
    lutS[2u * (e % hp) * TN + n] = pair.x;
    lutS[(2u * (e % hp) + 1u) * TN + n] = pair.y;
  }
}

${loadX}
// Task (n, q): codes k0 + 8q .. +7 of row n0 + n, at most two words of its piece.
fn loadW(e: u32, n0: u32, k0: u32) -> u32 {
  let n = e % TN;
  let q = e / TN;
  let piece = k0 / 32u;
  if (n0 + n >= params.outDim || piece >= params.nPieces) { return 0u; }
  let off = (k0 % 32u + 8u * q) * BITS;
  let i = ((n0 + n) * params.nPieces + piece) * BITS + off / 32u;
  let sh = off % 32u;
  var word = codes[i] >> sh;
  if (sh + 8u * BITS > 32u) { word |= codes[i + 1u] << (32u - sh); }
  return word;
}

fn putW(base: u32, e: u32, word: u32) {
  let n = e % TN;
  let q = e / TN;
  ${
  unroll(8, (j) =>
    `ws[base + (8u * q + ${j}u) * WS + n / 4u][n % 4u] = lutS[((word >> (BITS * ${j}u)) & ((1u << BITS) - 1u)) * TN + n];`)
}
}
`;

/** The pipelined build (gemm_core_wgsl.ts GemmPipe): the LUTs first, then the shared loads and decodes. */
const LUT_PIPE_STAGE = /* wgsl */ `
fn pipeStart(lid: u32, n0: u32) { stageLut(lid, n0); }
`;

/** The plain build: the LUTs at the first K step, then each step's loads and decodes in turn. */
const LUT_STAGE = /* wgsl */ `
fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  if (k0 == 0u) {
    stageLut(lid, n0);
    workgroupBarrier();
  }
  for (var e = lid; e < TM * TK / 4u; e += WG) { putX(0u, e, loadX(e, m0, k0)); }
  for (var e = lid; e < TN * TK / 8u; e += WG) { putW(0u, e, loadW(e, n0, k0)); }
}
`;
