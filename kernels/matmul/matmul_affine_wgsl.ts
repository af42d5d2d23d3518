/**
 * WGSL for kernels/matmul_affine.ts: the decode GEMV, the prefill GEMM and the activation prep pass.
 * Layout and math are documented there; this file only builds shader text.
 *
 * Decode trick (GEMV): a b-bit code c is moved into the top mantissa bits of 1.0, giving the f32
 * 1 + c·2^-b exactly with one shift and one and-or, no int→float conversion (I2F runs at a fraction of
 * the FMA rate on NVIDIA, which would cap a 4-bit GEMV below the read ceiling). Then either
 * - factored (few activation rows): per 32-column piece D = Σ x·(1 + c·2^-b) and X = Σ x, so the piece
 *   contributes Σ x·s·(c − z) = s·2^b·D − s·(2^b + z)·X, one FMA per code and activation row; or
 * - per code (many rows, fewer registers): w = s·2^b·(1 + c·2^-b) − s·(2^b + z) = s·(c − z), one more FMA
 *   per code, then one FMA per activation row.
 * Both lose at most a few f32 ulps to the cancellation (tests hold NMSE ≤ 1e-10 against f64).
 */
import { unroll } from "../core/mod.ts";
import { F16_ENABLE, type GemmBuild, gemmCoreWgsl } from "./gemm_core_wgsl.ts";

/** The uniform block every shader of the kernel shares, packed in this order by matmul_affine.ts. */
export const AFFINE_PARAMS_FIELDS = [
  "rows",
  "inDim",
  "outDim",
  "xRowOffset",
  "yStride",
  "yColOffset",
  "rowWords", // u32 words per row of codes
  "nGroups", // groups per row (row stride of scaleZero)
  "nPieces", // ceil(inDim / 32)
  "xBase", // GEMV: element offset of activation row 0 (x, or the prep scratch)
  "xStride", // GEMV: activation row stride in elements (a multiple of 32)
  "tilesN", // GEMM: output tiles along outDim
  "normEps", // q8 GEMV with a fused RMSNorm: epsilon (the one f32 field)
  "outDim1", // q8 GEMV over several matrices: rows of matrix 1 and 2 (0 when absent)
  "outDim2",
  "wgStart1", // first workgroup of matrix 1 and 2
  "wgStart2",
  "yRowOffset", // rows of y (and of the further matrices' y) before row 0 of this dispatch
] as const;

/** The uniform block and group lookup every affine shader starts with. */
export const PARAMS_WGSL = /* wgsl */ `
override ACC: bool = false;          // y += x·Qᵀ instead of y = x·Qᵀ
override GROUP_PIECES: u32 = 4u;     // 32-column pieces per group; 0 = one group per row

struct Params { ${AFFINE_PARAMS_FIELDS.map((f) => `${f}: ${f === "normEps" ? "f32" : "u32"}`).join(", ")} }
@group(0) @binding(0) var<uniform> params: Params;

fn groupOf(piece: u32) -> u32 {
  if (GROUP_PIECES == 0u) { return 0u; }
  return piece / GROUP_PIECES;
}
`;

/** The y binding and its store (overwrite or accumulate), shared by the affine shaders. */
export const STORE_WGSL = /* wgsl */ `
@group(0) @binding(4) var<storage, read_write> y: array<f32>;  // (rows, yStride) f32
fn store(r: u32, o: u32, v: f32) {
  let i = (r + params.yRowOffset) * params.yStride + params.yColOffset + o;
  if (ACC) { y[i] += v; } else { y[i] = v; }
}
`;

/**
 * WGSL expression placing code k (0..31) of a piece into mantissa bits [23 − b, 23), from the piece's
 * words `w(i)`; a 3-bit code may straddle two words (funnel shift).
 */
function codeBits(bits: number, k: number, w: (i: number) => string): string {
  const t = 23 - bits;
  const p = bits * k;
  const i = p >> 5;
  const s = p & 31;
  let e = s <= t ? `(${w(i)} << ${t - s}u)` : `(${w(i)} >> ${s - t}u)`;
  if (s + bits > 32) e += ` | (${w(i + 1)} << ${32 - s + t}u)`;
  return e;
}

/** Shape of one GEMV build. */
export interface GemvBuild {
  bits: 2 | 3 | 4;
  /** activation rows, 1..8 */
  rows: number;
  /** output rows per invocation (register blocking) */
  nr: number;
  /** invocations per workgroup */
  wg: number;
  /** invocations splitting K for one group of NR output rows */
  tpr: number;
  /** pieces per loop iteration (direct build only) */
  unrollK: number;
  /** Stage each K step's activations in workgroup memory (coalesced) instead of reading them per lane. */
  staged: boolean;
  /** Dequantize every code (one more FMA per code) instead of the per-piece factoring; fewer registers. */
  perCode: boolean;
}

/** Chained FMAs: acc + Σ a[i]·b[i] over the four components. */
function dot4(a: string, b: string, acc: string): string {
  return `fma(${a}.w, ${b}.w, fma(${a}.z, ${b}.z, fma(${a}.y, ${b}.y, fma(${a}.x, ${b}.x, ${acc}))))`;
}

/** The code words of piece `c` for output row n, declared as `${to}${n}` (3-bit: `${to}${n}_0..2`). */
function loadWords(bits: number, to: string, decl: string, c: string, n: number): string {
  return bits === 3
    ? unroll(3, (i) => `${decl}${to}${n}_${i} = codes[cb${n} + 3u * ${c} + ${i}u];`, "\n    ")
    : `${decl}${to}${n} = codes[cb${n} + ${c}];`;
}

/** One 32-column piece for NR output rows and ROWS activation rows, accumulated into acc[n·ROWS + r]. */
function gemvPiece({ bits, rows, nr, staged, perCode }: GemvBuild, c: string): string {
  const levels = 1 << bits;
  const src = staged ? "cur" : "v";
  const word = (n: number) => (i: number) => bits === 3 ? `${src}${n}_${i}` : `${src}${n}[${i}]`;
  const xAt = (q: number, r: number) =>
    staged ? `xt[xb + ${r * 9}u * TPR + ${q}u]` : `x[xe + ${r}u * xs4 + ${q}u]`;
  const lines: string[] = [`let c = ${c};`];
  if (!staged) {
    lines.push(`let xe = params.xBase / 4u + c * 8u;`, `let g = groupOf(c);`);
    for (let n = 0; n < nr; n++) lines.push(loadWords(bits, "v", "let ", "c", n));
  }
  for (let n = 0; n < nr; n++) {
    lines.push(
      `let sz${n} = unpack2x16float(${staged ? `csz${n}` : `scaleZero[gb${n} + g]`});`,
      `let s1_${n} = sz${n}.x * ${levels}.0;`,
      `let s2_${n} = sz${n}.x * (${levels}.0 + sz${n}.y);`,
    );
  }
  if (!perCode) {
    for (let n = 0; n < nr; n++) lines.push(unroll(rows, (r) => `var d${n}_${r} = 0.0;`, " "));
    lines.push(unroll(rows, (r) => `var sx${r} = 0.0;`, " "));
  }
  for (let q = 0; q < 8; q++) {
    for (let r = 0; r < rows; r++) {
      const x = `x${q}_${r}`;
      lines.push(`let ${x} = ${xAt(q, r)};`);
      if (!perCode) lines.push(`sx${r} += (${x}.x + ${x}.y) + (${x}.z + ${x}.w);`);
    }
    for (let n = 0; n < nr; n++) {
      const v = `q${q}_${n}`;
      lines.push(`let ${v} = dq(vec4u(${unroll(4, (j) => codeBits(bits, 4 * q + j, word(n)), ", ")}));`);
      if (perCode) {
        // s·(c − z) = s·2^b·(1 + c·2^-b) − s·(2^b + z), one FMA per code
        lines.push(`let w${q}_${n} = fma(${v}, vec4f(s1_${n}), vec4f(-s2_${n}));`);
        for (let r = 0; r < rows; r++) {
          const a = `acc[${n * rows + r}]`;
          lines.push(`${a} = ${dot4(`w${q}_${n}`, `x${q}_${r}`, a)};`);
        }
      } else {
        for (let r = 0; r < rows; r++) lines.push(`d${n}_${r} = ${dot4(v, `x${q}_${r}`, `d${n}_${r}`)};`);
      }
    }
  }
  if (!perCode) {
    for (let n = 0; n < nr; n++) {
      for (let r = 0; r < rows; r++) {
        lines.push(`acc[${n * rows + r}] += s1_${n} * d${n}_${r} - s2_${n} * sx${r};`);
      }
    }
  }
  return `{\n    ${lines.join("\n    ")}\n  }`;
}

/** The K loop: lanes stride over pieces reading activations in place, or step through staged tiles. */
function gemvLoop(b: GemvBuild): string {
  const { bits, nr, unrollK } = b;
  if (!b.staged) {
    const main = unrollK > 1
      ? `for (; c0 + ${unrollK - 1}u * TPR < params.nPieces; c0 += ${unrollK}u * TPR) {
    ${unroll(unrollK, (u) => gemvPiece(b, `c0 + ${u}u * TPR`))}
  }\n  `
      : "";
    return `var c0 = lid % TPR;\n  ${main}for (; c0 < params.nPieces; c0 += TPR) ${gemvPiece(b, "c0")}`;
  }
  // Double-buffered tiles, one barrier per step: the next step's codes, scales and activations are
  // loaded into registers before this step's math and stored into the other tile after it.
  const per = Math.ceil((b.rows * b.tpr * 8) / b.wg);
  const move = (n: number) =>
    bits === 3 ? unroll(3, (i) => `cur${n}_${i} = nxt${n}_${i};`, " ") : `cur${n} = nxt${n};`;
  return `
  let lane = lid % TPR;
  let c1 = min(lane, params.nPieces - 1u);
  ${unroll(nr, (n) => loadWords(bits, "cur", "var ", "c1", n))}
  ${unroll(nr, (n) => `var csz${n} = scaleZero[gb${n} + groupOf(c1)];`)}
  ${unroll(per, (i) => `stageStore(lid + ${i}u * WG, 0u, stageLoad(lid + ${i}u * WG, 0u, xs4));`)}
  workgroupBarrier();
  var buf = 0u;
  for (var s0 = 0u; s0 < params.nPieces; s0 += TPR) {
    let cn = min(s0 + TPR + lane, params.nPieces - 1u);
    ${unroll(nr, (n) => loadWords(bits, "nxt", "let ", "cn", n), "\n    ")}
    ${unroll(nr, (n) => `let nsz${n} = scaleZero[gb${n} + groupOf(cn)];`, "\n    ")}
    ${unroll(per, (i) => `let xr${i} = stageLoad(lid + ${i}u * WG, s0 + TPR, xs4);`, "\n    ")}
    let xb = buf * TILE + lane * 9u;
    if (s0 + lane < params.nPieces) ${gemvPiece(b, "s0 + lane")}
    ${unroll(per, (i) => `stageStore(lid + ${i}u * WG, 1u - buf, xr${i});`, "\n    ")}
    workgroupBarrier();
    buf = 1u - buf;
    ${unroll(nr, move, "\n    ")}
    ${unroll(nr, (n) => `csz${n} = nsz${n};`, " ")}
  }`;
}

const RED_WGSL = /* wgsl */ `
var<workgroup> red: array<f32, WG * (RED + 1u)>;  // [invocation][RED], padded against bank conflicts
fn redSet(i: u32, v: f32) { red[i] = v; }
fn redGet(i: u32) -> f32 { return red[i]; }
`;

const STAGE_WGSL = /* wgsl */ `
const TILE = ROWS * TPR * 9u;  // one K step: [row][lane][8 vec4 + 1 pad against bank conflicts]
// Two tiles; after the K loop the same memory holds the reduction's partial sums.
var<workgroup> xt: array<vec4f, max(2u * TILE, (WG * (RED + 1u) + 3u) / 4u)>;
fn redSet(i: u32, v: f32) { xt[i / 4u][i % 4u] = v; }
fn redGet(i: u32) -> f32 { return xt[i / 4u][i % 4u]; }

// Staging element e (a vec4 of activations) of the K step starting at piece s0; zero past the row.
fn stageLoad(e: u32, s0: u32, xs4: u32) -> vec4f {
  let v = e % (TPR * 8u);
  if (e >= ROWS * TPR * 8u || s0 + v / 8u >= params.nPieces) { return vec4f(); }
  return x[params.xBase / 4u + (e / (TPR * 8u)) * xs4 + s0 * 8u + v];
}

fn stageStore(e: u32, buf: u32, val: vec4f) {
  if (e >= ROWS * TPR * 8u) { return; }
  let v = e % (TPR * 8u);
  xt[buf * TILE + (e / (TPR * 8u)) * TPR * 9u + (v / 8u) * 9u + v % 8u] = val;
}
`;

/**
 * GEMV (rows ≤ 8). TPR invocations split K for NR output rows; each takes one 32-column piece per
 * step: NR·b code words (a vec4 / vec2 / 3 scalars for 4 / 2 / 3 bits, coalesced along the row) and
 * 8 vec4 of every activation row, reused for all NR output rows (register blocking, docs/webgpu.md §6).
 * Partial sums meet in a transposed workgroup reduction, as in matmul.ts.
 *
 * Activations: a lane's 8 vec4 are one 128-byte line, so when lanes read them from global memory each
 * warp-wide load touches 32 lines. The staged build instead copies each K step (TPR pieces of every row)
 * into workgroup memory with coalesced loads, padded to one spare vec4 per piece so the per-lane reads
 * are bank-conflict free. WG and TPR are TypeScript constants here because the per-invocation staging
 * registers need a fixed count.
 */
export function gemvWgsl(b: GemvBuild): string {
  const { bits, rows, nr } = b;
  const parts = rows * nr;
  const red = Math.min(parts, 8);
  const cw = bits === 4 ? "vec4<u32>" : bits === 2 ? "vec2<u32>" : "u32";
  const rounds = Array.from({ length: Math.ceil(parts / red) }, (_, q) => q * red).map((j0) => `
  ${unroll(Math.min(red, parts - j0), (j) => `redSet(lid * (RED + 1u) + ${j}u, acc[${j0 + j}]);`)}
  workgroupBarrier();
  finish(lid, o0, ${j0}u);
  workgroupBarrier();`);
  return PARAMS_WGSL + STORE_WGSL + /* wgsl */ `
const ROWS = ${rows}u;  // activation rows, 1..8
const NR = ${nr}u;      // output rows per invocation (register blocking)
const RED = ${red}u;    // partial sums reduced per round
const WG = ${b.wg}u;    // invocations per workgroup
const TPR = ${b.tpr}u;  // invocations splitting K for one group of NR output rows; RED ≤ TPR

@group(0) @binding(1) var<storage, read> x: array<vec4f>;      // rows at xBase + r·xStride, f32
@group(0) @binding(2) var<storage, read> codes: array<${cw}>;  // (outDim, rowWords) u32 bit streams
@group(0) @binding(3) var<storage, read> scaleZero: array<u32>; // (outDim, nGroups) f16 scale | f16 zero << 16

${b.staged ? STAGE_WGSL : RED_WGSL}
// 1 + c·2^-b from a code already shifted into mantissa bits [23 − b, 23)
fn dq(v: vec4u) -> vec4f {
  return bitcast<vec4f>((v & vec4u(${(((1 << bits) - 1) << (23 - bits)) >>> 0}u)) | vec4u(0x3f800000u));
}

// Transposed reduction: lane j of a group sums partial j0 + j over the group's TPR invocations.
fn finish(lid: u32, o0: u32, j0: u32) {
  let lane = lid % TPR;
  let j = j0 + lane;
  if (lane >= RED || j >= NR * ROWS || o0 + j / ROWS >= params.outDim) { return; }
  let first = (lid - lane) * (RED + 1u) + lane;
  var s = 0.0;
  for (var l = 0u; l < TPR; l++) { s += redGet(first + l * (RED + 1u)); }
  store(j % ROWS, o0 + j / ROWS, s);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let perWg = (WG / TPR) * NR;
  let tile = wid.x + wid.y * nwg.x;
  if (tile * perWg >= params.outDim) { return; }
  let o0 = tile * perWg + (lid / TPR) * NR;
  let xs4 = params.xStride / 4u;
  // Rows past outDim re-read the last row (in bounds, cached) and are never stored.
  ${
    unroll(nr, (n) =>
      `let r${n} = min(o0 + ${n}u, params.outDim - 1u);
  let cb${n} = r${n} * ${bits === 3 ? "params.rowWords" : "params.nPieces"};
  let gb${n} = r${n} * params.nGroups;`)
  }
  var acc: array<f32, ${parts}>;  // [NR][ROWS]
  ${gemvLoop(b)}
  ${rounds.join("")}
}
`;
}

/**
 * Tiled GEMM (rows > 8): the shared register-tiled core (gemm_core_wgsl.ts) over affine staging. The
 * activation tile is read with 16-byte loads from x, or from the prep scratch when the columns are
 * permuted or inDim is not a multiple of 4 (xBase/xStride say which); the weight tile is dequantized once
 * into workgroup memory: one invocation per 8 codes of a row (at most two words of its bit stream), whose
 * group's scale and zero it reads once. TK divides the 32-column piece, so a K step never straddles a group.
 */
export function gemmWgsl(build: GemmBuild): string {
  return (build.math === "f16" ? F16_ENABLE : "") + PARAMS_WGSL + STORE_WGSL + GEMM_BINDINGS +
    gemmCoreWgsl(build.pipe ? GEMM_PIPE_STAGE : GEMM_STAGE, build);
}

/**
 * The staging's loads and decodes, one task each: a 16-byte activation load, and codes k0 + 8q .. +7 of row
 * n0 + n (at most two words of its bit stream) with the group's scale | zero. The pipelined build
 * (gemm_core_wgsl.ts GemmPipe) issues them a step ahead; the plain one in `stage`.
 */
const GEMM_LOADS = /* wgsl */ `
fn loadX(e: u32, m0: u32, k0: u32) -> vec4f {
  let m = e / (TK / 4u);
  let k = (e % (TK / 4u)) * 4u;
  if (m0 + m < params.rows && k0 + k < params.xStride) {
    return x4[(params.xBase + (m0 + m) * params.xStride + k0 + k) / 4u];
  }
  return vec4f();
}

fn loadW(e: u32, n0: u32, k0: u32) -> vec2u {
  let n = e % TN;
  let q = e / TN;
  if (n0 + n >= params.outDim || k0 + 8u * q >= params.nPieces * 32u) { return vec2u(); }
  let row = n0 + n;
  let off = (k0 + 8u * q) * BITS;
  let i = row * params.rowWords + off / 32u;
  let sh = off % 32u;
  var word = codes[i] >> sh;
  if (sh + 8u * BITS > 32u) { word |= codes[i + 1u] << (32u - sh); }
  return vec2u(word, scaleZero[row * params.nGroups + groupOf(k0 / 32u)]);
}

fn putW(base: u32, e: u32, v: vec2u) {
  let n = e % TN;
  let q = e / TN;
  let sz = unpack2x16float(v.y);
  ${
  unroll(8, (j) =>
    `ws[base + (8u * q + ${j}u) * WS + n / 4u][n % 4u] = T(sz.x * (f32((v.x >> (BITS * ${j}u)) & ((1u << BITS) - 1u)) - sz.y));`)
}
}
`;

const GEMM_PIPE_STAGE = /* wgsl */ `
fn pipeStart(lid: u32, n0: u32) {}
${GEMM_LOADS}`;

const GEMM_STAGE = /* wgsl */ `
${GEMM_LOADS}
fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  for (var e = lid; e < TM * TK / 4u; e += WG) { putX(0u, e, loadX(e, m0, k0)); }
  for (var e = lid; e < TN * TK / 8u; e += WG) { putW(0u, e, loadW(e, n0, k0)); }
}
`;

const GEMM_BINDINGS = /* wgsl */ `
override BITS: u32 = 4u;

@group(0) @binding(1) var<storage, read> x4: array<vec4f>;       // activations from xBase, row stride xStride
@group(0) @binding(2) var<storage, read> codes: array<u32>;      // (outDim, rowWords) u32 bit streams
@group(0) @binding(3) var<storage, read> scaleZero: array<u32>;  // (outDim, nGroups) f16 pairs
`;

/**
 * Prep pass for the GEMV when the activations cannot be read in place (permuted columns, or inDim not
 * a multiple of 32): xp[r, j] = x[xRowOffset + r, perm[j]] for j < inDim, 0 up to nPieces·32.
 */
export const PREP_WGSL = PARAMS_WGSL + /* wgsl */ `
override PERM: bool = false;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> perm: array<u32>;        // (inDim) u32, or a dummy word
@group(0) @binding(3) var<storage, read_write> xp: array<f32>;    // (rows, nPieces·32) f32

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  let pad = params.nPieces * 32u;
  if (i >= params.rows * pad) { return; }
  let j = i % pad;
  var v = 0.0;
  if (j < params.inDim) {
    var col = j;
    if (PERM) { col = perm[j]; }
    v = x[(params.xRowOffset + i / pad) * params.inDim + col];
  }
  xp[i] = v;
}
`;
