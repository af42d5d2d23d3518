/**
 * WGSL for the int8 batched path of kernels/matmul_lut.ts ("q8mm"): LUT weights applied to many activation
 * rows with `dot4I8Packed`, as the affine kernel's batched q8 path (matmul_affine_q8mm_wgsl.ts) does.
 *
 * Why: the f32 batched LUT kernel (matmul_lut_rows_wgsl.ts) does one table lookup and one FMA per weight and
 * row; at 64 rows of an 8B layer it took 4.1–4.4 ms against 0.63 for affine weights on int8 dot products
 * (H100, BENCHMARKS.md "Serving under load"), and LUT streams under load ran at a third of affine's rate.
 *
 * Numerics: the activations are quantized per 32 columns by the affine path's prep pass (d = max|x| / 127,
 * round half to even), in natural column order. Each output row's table (2^bits f16 values) is quantized to
 * int8 with its own scale s = max|t| / 127 (round half to even), in the workgroup, from the f16 table: nothing
 * is stored besides the weight. A weight then moves by at most s / 2 (a 4-bit table of 16 levels over the
 * same range has steps of ~range / 15, so the added error is ~1/17 of a step at most); llama.cpp's
 * non-uniform IQ4_NL format multiplies int8 levels with int8 activations the same way.
 *   y[r, o] = s_o · Σ_p d[r, p] · Σ_{k in piece p} l8[o, code[o, k]] · q[r, k]
 *
 * Decoding: the workgroup keeps, per output, a chunk table (one entry per value of two codes, four at 2
 * bits, holding their int8 levels side by side), so one dot4 operand (4 consecutive columns) is two lookups
 * (one at 2 bits); where that does not fit workgroup memory, four copies of the int8 table, copy j shifted
 * to byte j of a u32, so an operand is four lookups OR-ed together. Both give the same bits. Lanes as
 * row_lanes_wgsl.ts: K split over a fixed number of lanes, rows over lanes, every sum an explicit fma in an
 * order that depends on KS alone, so a row's result never depends on its batch.
 */
import { unroll } from "../core/mod.ts";
import { lutParamsWgsl } from "./matmul_lut_wgsl.ts";
import {
  type RowLanes,
  rowLanesDecl,
  rowLanesOutputsPerWorkgroup,
  rowLanesReduce,
  rowLanesReduceBytes,
  rowLanesSetup,
  rowLanesWorkgroupSize,
} from "./row_lanes_wgsl.ts";
import { lutCodeOf, streamBits } from "./matmul_lut_rows_wgsl.ts";
import {
  Q8_FIRST_PIECE,
  q8Dots,
  q8NextPiece,
  q8PieceHead,
  type Q8Prefetch,
  q8RowLoads,
  q8RowPrefetchInit,
} from "./matmul_affine_q8mm_wgsl.ts";

/** Shape of one build: the lanes, the code width, pieces per loop iteration, the tables' kind. */
export interface LutQ8mmBuild extends RowLanes {
  bits: 2 | 3 | 4;
  unroll: number;
  /**
   * Chunk tables instead of byte-shifted copies: one entry per value of a chunk of codes (two codes at 3 and
   * 4 bits, four at 2), holding their int8 levels side by side, so an operand is two lookups (one at 2 bits)
   * instead of four; 2^(chunk bits) entries per output (256 at 2 and 4 bits). The default where it fits
   * (matmul_lut_plan.ts `planLutQ8mm`): 0.77 against 1.03 ms per 64-row 8B layer on the H100.
   */
  chunks?: boolean;
  /** What to load a piece ahead (matmul_affine_q8mm_wgsl.ts `Q8Prefetch`; code words `nc{j}_{i}`; unroll 1). */
  prefetch?: Q8Prefetch;
}

/** Bits of one chunk table index ({@link LutQ8mmBuild.chunks}). */
function chunkBits(bits: number): number {
  return bits === 2 ? 8 : 2 * bits;
}

/** `tq` words per output: a chunk table's entries, or four byte-shifted copies of the 2^bits levels. */
export function lutQ8TableWords(bits: number, chunks: boolean): number {
  return chunks ? 1 << chunkBits(bits) : 4 << bits;
}

/** Workgroup memory of the int8 tables of `outputs` outputs ({@link lutQ8TablesDecl}), in bytes. */
export function lutQ8TablesBytes(bits: number, chunks: boolean, outputs: number): number {
  return 4 * outputs * (lutQ8TableWords(bits, chunks) + (chunks ? 1 << bits : 0) + 1);
}

/** Workgroup memory of a build: the tables, the scales and the reduction. */
export function lutQ8mmWorkgroupBytes(b: LutQ8mmBuild): number {
  return lutQ8TablesBytes(b.bits, b.chunks ?? false, rowLanesOutputsPerWorkgroup(b)) + rowLanesReduceBytes(b);
}

/**
 * The int8 tables of a workgroup's `outputs` outputs, in workgroup memory: `tq` (chunk tables or byte-shifted
 * copies, read by {@link lutQ8Operand}), `l8` (the chunk tables' source levels) and `sc` (each output's scale),
 * filled by {@link lutQ8TablesFill}.
 */
export function lutQ8TablesDecl(bits: number, chunks: boolean, outputs: number): string {
  const entries = lutQ8TableWords(bits, chunks);
  return chunks
    ? `// [output of the workgroup][chunk]: the int8 levels of a chunk's codes in its low bytes
var<workgroup> tq: array<u32, ${outputs * entries}>;
var<workgroup> l8: array<u32, ${outputs << bits}>;  // [output][code]: the int8 level, a byte
var<workgroup> sc: array<f32, ${outputs}>;  // s = max|table| / 127 of each output`
    : `// [output of the workgroup][byte j][code]: the int8 level of the code, shifted to byte j
var<workgroup> tq: array<u32, ${outputs * entries}>;
var<workgroup> sc: array<f32, ${outputs}>;  // s = max|table| / 127 of each output`;
}

/** Where {@link lutQ8TablesFill} reads a workgroup's tables from. */
export interface LutQ8Fill {
  bits: number;
  chunks: boolean;
  /** outputs of the workgroup, and its invocations (each with its `lid`) */
  outputs: number;
  wg: number;
  /** WGSL: the weight row of output `e` of the workgroup, clamped to the matrix */
  row: string;
  /** WGSL: word `at` (f16 pair) of the (outDim, 2^bits / 2) tables */
  word: (at: string) => string;
}

/**
 * WGSL statements, run by every invocation of the workgroup (they end on a barrier), that fill
 * {@link lutQ8TablesDecl}: each output's f16 table quantized to int8 with s = max|t| / 127, round half to even
 * (the one definition of the int8 tables: the batched path and the one-row GEMV, matmul_lut_q8_wgsl.ts), then
 * the chunk tables from those levels.
 */
export function lutQ8TablesFill(f: LutQ8Fill): string {
  const { bits, chunks, outputs, wg } = f;
  const size = 1 << bits;
  const entries = lutQ8TableWords(bits, chunks);
  const perChunk = chunkBits(bits) / bits;
  return `for (var e = lid; e < ${outputs}u; e += ${wg}u) {
    let base = ${f.row} * ${size / 2}u;
    var am = 0.0;
    for (var i = 0u; i < ${size / 2}u; i++) {
      let v = abs(unpack2x16float(${f.word("base + i")}));
      am = max(am, max(v.x, v.y));
    }
    sc[e] = am / 127.0;
    let q = select(0.0, 127.0 / am, am > 0.0);
    for (var i = 0u; i < ${size / 2}u; i++) {
      let l = bitcast<vec2u>(vec2i(round(unpack2x16float(${f.word("base + i")}) * q))) & vec2u(255u);
      ${
    chunks
      ? `l8[e * ${size}u + 2u * i] = l.x;
      l8[e * ${size}u + 2u * i + 1u] = l.y;`
      : `for (var j = 0u; j < 4u; j++) {
        tq[(e * 4u + j) * ${size}u + 2u * i] = l.x << (8u * j);
        tq[(e * 4u + j) * ${size}u + 2u * i + 1u] = l.y << (8u * j);
      }`
  }
    }
  }
  workgroupBarrier();
  ${
    chunks
      ? `for (var e = lid; e < ${outputs * entries}u; e += ${wg}u) {
    let at = (e / ${entries}u) * ${size}u;
    let i = e % ${entries}u;
    tq[e] = ${unroll(perChunk, (c) => `(l8[at + ((i >> ${bits * c}u) & ${size - 1}u)] << ${8 * c}u)`, " | ")};
  }
  workgroupBarrier();`
      : ""
  }`;
}

/**
 * WGSL expression of dot4 operand k (columns 4k .. 4k + 3 of a piece, natural order) from the piece's code
 * words `w(i)` and one output's tables at word `t` of `tq`: chunk lookups side by side (two, one at 2 bits), or
 * four byte-shifted levels OR-ed together.
 */
export function lutQ8Operand(
  bits: number,
  chunks: boolean,
  k: number,
  w: (i: number) => string,
  t: string,
): string {
  const size = 1 << bits;
  const cb = chunkBits(bits);
  const perChunk = cb / bits;
  const look = chunks
    ? (c: number) => {
      const at = `tq[${t} + ${streamBits(bits * (4 * k + c * perChunk), cb, w)}]`;
      return c === 0 ? at : `(${at} << ${8 * perChunk * c}u)`;
    }
    : (e: number) => `tq[${t} + ${e * size}u + ${lutCodeOf(bits, 4 * k + e, w)}]`;
  return unroll(chunks ? 4 / perChunk : 4, look, " | ");
}

/**
 * The main pass. Bindings: 0 params (LUT params; xRowOffset is the first prep row of the dispatch), 1 xq
 * (the prep pass's rows, 3 vec4<u32> per piece), 2 codes, 3 lut, 4 y.
 */
export function lutQ8mmWgsl(b: LutQ8mmBuild): string {
  const { bits, ks, no, rl } = b;
  const wg = rowLanesWorkgroupSize(b);
  const perWorkgroup = rowLanesOutputsPerWorkgroup(b);
  const groups = perWorkgroup / no;
  const chunks = b.chunks ?? false;
  const entries = lutQ8TableWords(bits, chunks);
  const prefetch = b.prefetch !== undefined;
  const prefetchRows = b.prefetch === "all";
  if (prefetch && b.unroll !== 1) {
    throw new Error(`Cannot build the int8 LUT matmul: prefetch needs unroll 1`);
  }
  const codeAt = (j: number, q: string, i: number) =>
    `codes[(orow${j} * params.nPieces + ${q}) * ${bits}u + ${i}u]`;
  const piece = (u: number) => {
    const lines = q8PieceHead(u, ks);
    if (prefetch) lines.push(q8NextPiece(ks));
    for (let j = 0; j < no; j++) {
      const id = `${j}_${u}`;
      for (let i = 0; i < bits; i++) {
        lines.push(
          ...(prefetch
            ? [`let cw${id}_${i} = nc${j}_${i};`, `nc${j}_${i} = ${codeAt(j, "pn", i)};`]
            : [`let cw${id}_${i} = ${codeAt(j, `p${u}`, i)};`]),
        );
      }
      const w = (i: number) => `cw${id}_${i}`;
      for (let k = 0; k < 8; k++) {
        lines.push(`let c${id}_${k} = ${lutQ8Operand(bits, chunks, k, w, `t${j}`)};`);
      }
    }
    for (let i = 0; i < rl; i++) {
      // a piece past the row's end (clamped to the last) counts nothing
      lines.push(...q8RowLoads(i, u, prefetchRows), `let d${i}_${u} = select(0.0, xd${i}_${u}.x, ok${u});`);
      for (let j = 0; j < no; j++) {
        lines.push(`a${j}_${i} = fma(d${i}_${u}, f32(${q8Dots(`${j}_${u}`, i, u)}), a${j}_${i});`);
      }
    }
    return lines.join("\n    ");
  };
  return /* wgsl */ `
${lutParamsWgsl("var<storage, read> xq: array<vec4u>;   // (rows, nPieces) × 3, the prep pass's")}
@group(0) @binding(2) var<storage, read> codes: array<u32>;  // (outDim, nPieces, BITS) u32

${lutQ8TablesDecl(bits, chunks, perWorkgroup)}
${rowLanesDecl(b)}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o0 = (wid.x + wid.y * nwg.x) * ${perWorkgroup}u;
  if (o0 >= params.outDim) { return; }  // uniform per workgroup
  ${
    lutQ8TablesFill({
      bits,
      chunks,
      outputs: perWorkgroup,
      wg,
      row: "min(o0 + e, params.outDim - 1u)",
      word: (at) => `lut[${at}]`,
    })
  }
  ${
    rowLanesSetup(b, "params.outDim", (i, row) =>
      `let xr${i} = (params.xRowOffset + ${row}) * params.nPieces;`)
  }
  ${unroll(no, (j) => `let t${j} = (${j * groups}u + g) * ${entries}u;`)}
  ${
    prefetch
      ? unroll(no, (j) => unroll(bits, (i) => `var nc${j}_${i} = ${codeAt(j, Q8_FIRST_PIECE, i)};`, " "))
      : ""
  }
  ${prefetchRows ? unroll(rl, q8RowPrefetchInit) : ""}
  for (var p = s; p < params.nPieces; p += ${ks * b.unroll}u) {
    ${unroll(b.unroll, piece, "\n    ")}
  }
  ${rowLanesReduce(b, "params.outDim", (r, o, v) => `store(${r}, ${o}, ${v} * sc[${o} - o0])`)}
}
`;
}
