/**
 * WGSL for the decode GEMV of kernels/matmul_affine.ts with int8 activations ("q8" path, 2-, 3- and 4-bit
 * codes, 1–8 activation rows), built by TypeScript like matmul_affine_wgsl.ts.
 *
 * Why: the f32 GEMV spends three instructions per code (shift, mask, FMA) and tops out near half the
 * read ceiling on the H100. Here each invocation quantizes its own 32-column pieces of x once to int8
 * (per-piece scale d = max|x|/127, round half to even, as llama.cpp's q8 activations), then every
 * code word costs two mask ops and two `dot4I8Packed` (native 4-way int8 dot products, one
 * instruction each) per 8 codes:
 *   Σ_c x_c · s·(code_c − z) ≈ s · d · (Σ_c code_c·q_c − z · Σ_c q_c),  exact integer sums.
 * The only rounding beyond f32 is the activations' int8 quantization (relative error ≲ 1/254 of the
 * piece's largest |x|), the trade llama.cpp's quantized matvecs make.
 *
 * Work split ("x-stationary"): a workgroup owns RB consecutive output rows; lane l owns pieces
 * l, l + WG, … (P of them) for the whole K range, keeps their int8 activations in registers, and walks
 * the RB rows U at a time, loading the next U rows' code words before doing this chunk's math. A warp's
 * code loads are 32 consecutive pieces of one row (contiguous), and x is read once per workgroup.
 * Partial sums meet in workgroup memory, LPR = WG / RB lanes per row.
 *
 * Byte order: `(w >> b·s) & mask` keeps codes s, s + 8/b, … of a word in its four bytes, so the
 * activation word for (word t, shift s) packs elements (32/b)·t + (8/b)·i + s, i = 0..3. 3-bit pieces
 * (three words, codes straddling them) take codes 4t..4t+3 as one 12-bit group spread into bytes: ~9
 * instructions per 4 codes instead of 2 per 8, still fewer than the f32 GEMV's 3 per code.
 *
 * The format's part (scales and zeros here) is a {@link Q8GemvFormat}: the LUT one-row int8 GEMV
 * (matmul_lut_q8_wgsl.ts) is this kernel with table lookups for the code operands.
 */
import { PARAMS_WGSL, STORE_WGSL } from "./matmul_affine_wgsl.ts";
import { unroll } from "../core/mod.ts";
import { siluMulFn } from "../ops/mod.ts";

/** Segments of a row's final reduction (fixed, so the sum order does not depend on RB). */
const SEGS = 8;

/** Shape of one q8 GEMV build. */
export interface Q8GemvBuild {
  bits: 2 | 3 | 4;
  /** activation rows, 1..8 */
  rows: number;
  /** invocations per workgroup; P = ceil(nPieces / WG) pieces per invocation */
  wg: number;
  /** 32-column pieces per invocation */
  pieces: number;
  /** output rows per workgroup (a divisor of wg) */
  rb: number;
  /** output rows per unrolled chunk (a divisor of rb) */
  unroll: number;
  /** activations read through `perm` or with bounds checks (act-order, or inDim % 32 ≠ 0) */
  gather: boolean;
  /**
   * What the GEMV does to x first: "norm" = RMSNorm (weight at binding 6, epsilon in params), the decoder's
   * norm fused in; "siluMul" = x is the gate and binding 6 the up projection, x ← silu(gate)·up.
   */
  prologue: "none" | "norm" | "siluMul";
  /**
   * Matrices sharing x (and the prologue) in one dispatch, e.g. q, k and v: 1–3. Matrix m > 0 reads codes and
   * scales at bindings 4 + 3m, 5 + 3m and writes its own y at 6 + 3m (row stride = its outDim); workgroups
   * [wgStart_m, wgStart_m+1) are its.
   */
  mats: number;
}

/** Four 3-bit codes (a 12-bit group) → one per byte, for {@link codeOperand}. */
export const SPREAD3_WGSL = /* wgsl */ `
// Four 3-bit codes (a 12-bit group) → one per byte: bits 3i..3i+2 go to byte i.
fn spread3(g: u32) -> u32 {
  return (g & 7u) | ((g & 0x38u) << 5u) | ((g & 0x1c0u) << 10u) | ((g & 0xe00u) << 15u);
}
`;

/**
 * The matrices one q8 dispatch serves (q/k/v or gate/up sharing x): matrix m > 0 reads its codes and scales
 * (`table`: "scaleZero", or "lut" for LUT weights) at bindings `base + 3m` and `base + 1 + 3m` and writes its
 * own y at `base + 2 + 3m` (row stride its outDim); `loadCodes(m, i)`, `loadScaleZero(m, i)` (`loadLut`) and
 * `storeTo(m, r, o, v)` pick matrix m (uniform per workgroup, so the branches cost nothing).
 */
export function matricesWgsl(bits: 2 | 3 | 4, mats: number, base: number, table = "scaleZero"): string {
  const cw = bits === 4 ? "vec4<u32>" : bits === 3 ? "vec3<u32>" : "vec2<u32>";
  const store = bits === 3 ? "u32" : cw; // 3-bit pieces are three consecutive words
  const more = Array.from({ length: mats - 1 }, (_, k) => k + 1);
  // Element i of an array: piece i of the codes (3-bit: three words), group i of the scales.
  const at = (arr: string, ty: string) =>
    ty === "vec3<u32>" ? `vec3u(${arr}[3u * i], ${arr}[3u * i + 1u], ${arr}[3u * i + 2u])` : `${arr}[i]`;
  const pick = (name: string, ty: string) =>
    `fn load${name[0].toUpperCase()}${name.slice(1)}(m: u32, i: u32) -> ${ty} {
  ${more.map((m) => `if (m == ${m}u) { return ${at(name + m, ty)}; }`).join("\n  ")}
  return ${at(name, ty)};
}`;
  return `${
    more.map((m) => `
@group(0) @binding(${base + 3 * m}) var<storage, read> codes${m}: array<${store}>;
@group(0) @binding(${base + 1 + 3 * m}) var<storage, read> ${table}${m}: array<u32>;
@group(0) @binding(${base + 2 + 3 * m}) var<storage, read_write> y${m}: array<f32>;  // (rows, outDim${m})`)
      .join("")
  }
${pick("codes", cw)}
${pick(table, "u32")}
fn storeTo(m: u32, r: u32, o: u32, v: f32) {
  ${
    more.map((m) =>
      `if (m == ${m}u) {
    let i = (r + params.yRowOffset) * params.outDim${m} + o;
    if (ACC) { y${m}[i] += v; } else { y${m}[i] = v; }
    return;
  }`
    ).join("\n  ")
  }
  store(r, o, v);
}`;
}

/** WGSL at the top of `main`: the workgroup's matrix `m`, its first workgroup `first` and its outputs `od`. */
export function matrixOfWorkgroup(mats: number): string {
  const more = Array.from({ length: mats - 1 }, (_, k) => k + 1);
  return `let flat = wid.x + wid.y * nwg.x;
  var m = 0u;
  var first = 0u;
  ${
    more.reverse().map((k) =>
      `if (m == 0u && flat >= params.wgStart${k}) { m = ${k}u; first = params.wgStart${k}; }`
    )
      .join("\n  ")
  }
  let od = ${
    mats > 1
      ? `select(select(params.outDim, params.outDim1, m == 1u), params.outDim2, m == 2u)`
      : "params.outDim"
  };`;
}

/**
 * WGSL `fn <name>(r: u32, j: u32) -> f32`: kernel column j of row r of `arr` (rows at xBase + r·xStride;
 * with `rowed` false, of the one vector `arr`, r unused), read through `perm` when PERM, zero past inDim.
 */
export function gatherReadFn(name: string, arr: string, rowed: boolean): string {
  return /* wgsl */ `
fn ${name}(r: u32, j: u32) -> f32 {
  if (j >= params.inDim) { return 0.0; }
  var col = j;
  if (PERM) { col = perm[j]; }
  return ${arr}[${rowed ? "params.xBase + r * params.xStride + " : ""}col];
}`;
}

/** Loads activation row r's piece i into registers v{r}_{i}_{0..7} (zero past inDim). */
function loadPiece(b: Q8GemvBuild, r: number, i: number): string {
  const load = (k: number, at: string, vec: string) =>
    b.gather
      ? `vec4f(${unroll(4, (j) => `${at}(${r}u, p${i} * 32u + ${4 * k + j}u)`, ", ")})`
      : `select(vec4f(), ${vec}[(params.xBase + ${r}u * params.xStride) / 4u + pc${i} * 8u + ${k}u], p${i} < params.nPieces)`;
  if (b.prologue === "siluMul") {
    return unroll(
      8,
      (k) => `var v${r}_${i}_${k} = siluMul(${load(k, "xAt", "x4")}, ${load(k, "upAt", "up4")});`,
    );
  }
  return unroll(8, (k) => `var v${r}_${i}_${k} = ${load(k, "xAt", "x4")};`);
}

/**
 * The fused RMSNorm: Σx² of each activation row over the whole workgroup (its lanes hold all of K), then
 * x ← x · inverseSqrt(mean + eps) · weight[column], as kernels/rms_norm.ts computes it.
 */
function normPieces(b: Q8GemvBuild): string {
  const { rows, pieces } = b;
  const w = (i: number, k: number) =>
    b.gather
      ? `vec4f(${unroll(4, (j) => `normWeightAt(0u, p${i} * 32u + ${4 * k + j}u)`, ", ")})`
      : `nw4[pc${i} * 8u + ${k}u]`;
  return `
  ${
    unroll(rows, (r) =>
      `red[${r}u * STRIDE + lid] = ${
        Array.from({ length: pieces * 8 }, (_, e) =>
          `dot(v${r}_${e >> 3}_${e & 7}, v${r}_${e >> 3}_${e & 7})`)
          .join(" + ")
      };`)
  }
  workgroupBarrier();
  if (lid < 32u) {
    ${
    unroll(rows, (r) =>
      `var t${r} = 0.0;
    for (var j = lid; j < ${b.wg}u; j += 32u) { t${r} += red[${r}u * STRIDE + j]; }
    normSum[${r}u * 32u + lid] = t${r};`, "\n    ")
  }
  }
  workgroupBarrier();
  ${
    unroll(rows, (r) =>
      `var ss${r} = 0.0;
  for (var j = 0u; j < 32u; j++) { ss${r} += normSum[${r}u * 32u + j]; }
  let inv${r} = inverseSqrt(ss${r} / f32(params.inDim) + params.normEps);
  ${unroll(pieces, (i) => unroll(8, (k) => `v${r}_${i}_${k} = v${r}_${i}_${k} * inv${r} * ${w(i, k)};`))}`)
  }
  workgroupBarrier();  // the partial sums below reuse red`;
}

/** Quantizes activation row r's piece i into registers xq{r}_{i}_{t}_{s}, d{r}_{i} and (f.dz) dz{r}_{i}. */
function quantizePiece(f: Q8GemvFormat, r: number, i: number): string {
  const id = `${r}_${i}`;
  const el = (e: number) => `v${id}_${e >> 2}.${"xyzw"[e & 3]}`;
  const words: string[] = [];
  for (const [t, s, es] of operandElements(f.order)) {
    const vals = unroll(4, (i2) => el(es[i2]), ", ");
    words.push(`let xq${id}_${t}_${s} = pack4xI8(vec4i(round(vec4f(${vals}) * inv${id})));`);
  }
  const sum = operandElements(f.order).map(([t, s]) => `dot4I8Packed(xq${id}_${t}_${s}, 0x01010101u)`)
    .join(" + ");
  return `  var m${id} = abs(v${id}_0);
  ${unroll(7, (k) => `m${id} = max(m${id}, abs(v${id}_${k + 1}));`)}
  let am${id} = max(max(m${id}.x, m${id}.y), max(m${id}.z, m${id}.w));
  let d${id} = am${id} / 127.0;
  let inv${id} = select(0.0, 127.0 / am${id}, am${id} > 0.0);
  ${words.join("\n  ")}${f.dz ? `\n  let dz${id} = d${id} * f32(${sum});` : ""}`;
}

/**
 * The {@link operandElements} order that is the natural column order (operand t holds columns 4t .. 4t + 3):
 * 3-bit codes' order, which int8 kernels whose operands are not read from packed codes (the LUT one) ask of
 * the prep pass.
 */
export const NATURAL_OPERAND_ORDER = 3;

/**
 * The dot4 operands of a piece as (t, s, elements): for 2/4 bits, `(word t >> b·s) & mask` holds codes
 * (32/b)·t + (8/b)·i + s in its bytes; for 3 bits, operand t is codes 4t..4t+3 (12 bits at bit 12t of the
 * piece's 96-bit stream, spread into bytes), s = 0.
 */
export function operandElements(bits: number): [number, number, number[]][] {
  if (bits === 3) {
    return Array.from({ length: 8 }, (_, t) => [t, 0, [4 * t, 4 * t + 1, 4 * t + 2, 4 * t + 3]]);
  }
  const cpp = 32 / bits;
  const spw = 8 / bits;
  return Array.from({ length: bits * spw }, (_, w) => {
    const [t, s] = [Math.floor(w / spw), w % spw];
    return [t, s, [0, 1, 2, 3].map((i2) => cpp * t + spw * i2 + s)];
  });
}

/** WGSL expression for dot4 operand (t, s) of a piece whose words are `comp(0..bits-1)`. */
export function codeOperand(bits: number, t: number, s: number, comp: (w: number) => string): string {
  if (bits !== 3) {
    const mask = ((((1 << bits) - 1) * 0x01010101) >>> 0) + "u";
    return `${s === 0 ? comp(t) : `(${comp(t)} >> ${bits * s}u)`} & ${mask}`;
  }
  const off = 12 * t;
  const [wi, sh] = [off >> 5, off & 31];
  let g = sh === 0 ? comp(wi) : `(${comp(wi)} >> ${sh}u)`;
  if (sh + 12 > 32) g = `(${g} | (${comp(wi + 1)} << ${32 - sh}u))`;
  return `spread3(${g})`;
}

/**
 * What the weights' format puts into the q8 GEMV ({@link q8GemvWgsl}): affine scales and zeros
 * ({@link affineQ8Format}) or int8 tables (matmul_lut_q8_wgsl.ts). The activations, code loads, loop and
 * reduction are the kernel's.
 */
export interface Q8GemvFormat {
  /** binding 3's array of u32 (matrix m > 0: `<table>m`, read through `load<Table>(m, i)`; matricesWgsl) */
  table: string;
  /** binding 3's declaration and the format's workgroup memory */
  decl: string;
  /** the activation operands' element order ({@link operandElements}) */
  order: number;
  /** the math reads dz{r}_{i} = d · Σq of each piece (zero points) */
  dz: boolean;
  /** WGSL of a u32 loaded beside piece i's code words of chunk row `row` (into csz{u}_{i}), or null */
  side: ((row: string, i: number) => string) | null;
  /** WGSL every invocation runs once the first chunk's code words are loading (e.g. filling tables) */
  setup: string;
  /** chunk row u's contribution of piece i for every activation row, into part{u}_{r} (words cw{u}_{i}) */
  math: (u: number, i: number) => string;
  /** WGSL of output row `ru`'s value from its sum `t` */
  result: (t: string, ru: string) => string;
}

/** The affine format: scale/zero per group at binding 3, s·d·(Σ code·q − z·Σq) per piece. */
export function affineQ8Format(b: Q8GemvBuild): Q8GemvFormat {
  return {
    table: "scaleZero",
    decl: `${SPREAD3_WGSL}@group(0) @binding(3) var<storage, read> scaleZero: array<u32>; ` +
      `// (outDim, nGroups) f16 scale | f16 zero << 16`,
    order: b.bits,
    dz: true,
    side: (row, i) => `loadScaleZero(m, ${row} * params.nGroups + groupOf(pc${i}))`,
    setup: "",
    math: (u, i) => pieceMath(b, u, i),
    result: (t) => t,
  };
}

/** Chunk row u's contribution of piece i for every activation row, into part{u}_{r}. */
function pieceMath(b: Q8GemvBuild, u: number, i: number): string {
  const { bits, rows } = b;
  const comp = (t: number) => `cw${u}_${i}.${"xyzw"[t]}`;
  const lines = [`let sz${u}_${i} = unpack2x16float(csz${u}_${i});`];
  const bytes: string[] = [];
  for (const [t, s] of operandElements(bits)) {
    const name = `c${u}_${i}_${t}_${s}`;
    lines.push(`let ${name} = ${codeOperand(bits, t, s, comp)};`);
    bytes.push(name);
  }
  for (let r = 0; r < rows; r++) {
    const id = `${r}_${i}`;
    const dots = bytes.map((c) => `dot4I8Packed(${c}, xq${id}_${c.split("_").slice(-2).join("_")})`);
    lines.push(
      `part${u}_${r} += sz${u}_${i}.x * fma(d${id}, f32(${dots.join(" + ")}), -sz${u}_${i}.y * dz${id});`,
    );
  }
  return lines.join("\n      ");
}

/**
 * Loads (declares with `decl`) the code words of chunk rows [base, base + U) into `pre`, and the format's
 * side words into `szPre`.
 */
function chunkLoads(
  b: Q8GemvBuild,
  f: Q8GemvFormat,
  [pre, szPre]: [string, string],
  decl: string,
  base: string,
): string {
  return unroll(b.unroll, (u) =>
    unroll(b.pieces, (i) => {
      const row = `min(r0 + ${base} + ${u}u, od - 1u)`;
      return `${decl}${pre}${u}_${i} = loadCodes(m, ${row} * params.nPieces + pc${i});` +
        (f.side ? ` ${decl}${szPre}${u}_${i} = ${f.side(row, i)};` : "");
    }, "\n  "), "\n  ");
}

/**
 * The q8 GEMV shader for one build. Bindings as the other affine shaders: 0 params, 1 x (f32),
 * 2 codes, 3 scaleZero (or the format's table), 4 y, and 5 perm when `gather`.
 * @param f the weights' format (default affine; matmul_lut_q8_wgsl.ts passes the LUT one)
 */
export function q8GemvWgsl(b: Q8GemvBuild, f: Q8GemvFormat = affineQ8Format(b)): string {
  const { bits, rows, wg, pieces, rb } = b;
  const lpr = wg / rb;
  const upDecl = b.prologue !== "siluMul" ? "" : /* wgsl */ `
${siluMulFn("vec4<f32>")}
${
    b.gather
      ? `@group(0) @binding(6) var<storage, read> up: array<f32>;  // like x: the up projection${
        gatherReadFn("upAt", "up", true)
      }`
      : `@group(0) @binding(6) var<storage, read> up4: array<vec4f>;  // like x: the up projection`
  }`;
  const normDecl = b.prologue !== "norm" ? upDecl : b.gather
    ? /* wgsl */ `
@group(0) @binding(6) var<storage, read> normWeight: array<f32>;  // (inDim) f32, original column order
var<workgroup> normSum: array<f32, ${32 * rows}>;${gatherReadFn("normWeightAt", "normWeight", false)}`
    : /* wgsl */ `
@group(0) @binding(6) var<storage, read> nw4: array<vec4f>;  // (inDim) f32 norm weight
var<workgroup> normSum: array<f32, ${32 * rows}>;`;
  const cw = bits === 4 ? "vec4<u32>" : bits === 3 ? "vec3<u32>" : "vec2<u32>";
  const store = bits === 3 ? "u32" : cw; // 3-bit pieces are three consecutive words
  const xDecl = b.gather
    ? /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<f32>;      // (xRowOffset + rows, inDim) f32
@group(0) @binding(5) var<storage, read> perm: array<u32>;   // (inDim) u32, or a dummy word
override PERM: bool = false;${gatherReadFn("xAt", "x", true)}`
    : `@group(0) @binding(1) var<storage, read> x4: array<vec4f>;  // rows at xBase + r·xStride, f32`;
  const parts = (u: number) => unroll(rows, (r) => `var part${u}_${r} = 0.0;`, " ");
  return PARAMS_WGSL + STORE_WGSL + /* wgsl */ `
${xDecl}
@group(0) @binding(2) var<storage, read> codes: array<${store}>;   // (outDim, nPieces) pieces
${f.decl}

${normDecl}
${matricesWgsl(bits, b.mats, 4, f.table)}
const STRIDE = ${
    wg + lpr
  }u;  // row stride of the partial sums, padded so the reduction reads spread over banks
var<workgroup> red: array<f32, ${rb * rows * (wg + lpr)}>;  // [row·ROWS + r][lane]

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  ${matrixOfWorkgroup(b.mats)}
  let r0 = (flat - first) * ${rb}u;
  if (r0 >= od) { return; }
  ${unroll(pieces, (i) => `let p${i} = lid + ${i * wg}u;\n  let pc${i} = min(p${i}, params.nPieces - 1u);`)}
  ${unroll(rows, (r) => unroll(pieces, (i) => loadPiece(b, r, i)))}
  ${b.prologue === "norm" ? normPieces(b) : ""}
  ${unroll(rows, (r) => unroll(pieces, (i) => quantizePiece(f, r, i)))}
  ${chunkLoads(b, f, ["cw", "csz"], "var ", "0u")}${f.setup ? `\n  ${f.setup}` : ""}
  for (var rr = 0u; rr < ${rb}u; rr += ${b.unroll}u) {
    // The next chunk's words load before this chunk's math (the last chunk re-reads its own rows: L1 hits).
    let nx = select(rr, rr + ${b.unroll}u, rr + ${b.unroll}u < ${rb}u);
    ${chunkLoads(b, f, ["nw", "nsz"], "let ", "nx")}
    ${
    unroll(b.unroll, (u) =>
      `{
      ${parts(u)}
      ${unroll(pieces, (i) => f.math(u, i), "\n      ")}
      ${
        unroll(rows, (r) =>
          `red[((rr + ${u}u) * ${rows}u + ${r}u) * STRIDE + lid] = part${u}_${r};`, "\n      ")
      }
    }`, "\n    ")
  }
    ${
    unroll(b.unroll, (u) =>
      unroll(pieces, (i) =>
        `cw${u}_${i} = nw${u}_${i};${f.side ? ` csz${u}_${i} = nsz${u}_${i};` : ""}`, " "), "\n    ")
  }
  }
  workgroupBarrier();
  // Each output row's ${wg} partials are summed as ${SEGS} strided segments, then the segments in order: the
  // same order whatever RB (and so the row count) is, so a row's sum does not depend on the batch.
  for (var q = lid; q < ${rb * SEGS}u; q += ${wg}u) {
    let ru = q / ${SEGS}u;
    let seg = q % ${SEGS}u;
    ${unroll(rows, (r) => `var s${r} = 0.0;`, " ")}
    for (var t = seg; t < ${wg}u; t += ${SEGS}u) {
      ${unroll(rows, (r) => `s${r} += red[(ru * ${rows}u + ${r}u) * STRIDE + t];`, "\n      ")}
    }
    ${unroll(rows, (r) => `red[(ru * ${rows}u + ${r}u) * STRIDE + seg] = s${r};`)}
  }
  workgroupBarrier();
  for (var ru = lid; ru < ${rb}u; ru += ${wg}u) {
    if (r0 + ru < od) {
      ${
    unroll(rows, (r) =>
      `var t${r} = 0.0;
      for (var t = 0u; t < ${SEGS}u; t++) { t${r} += red[(ru * ${rows}u + ${r}u) * STRIDE + t]; }
      storeTo(m, ${r}u, r0 + ru, ${f.result(`t${r}`, "ru")});`, "\n      ")
  }
    }
  }
}
`;
}
