/**
 * WGSL for the one-row decode GEMV of kernels/matmul_lut.ts, "x-stationary" build (same math and layout
 * as the other LUT shaders, f32 throughout):
 * - a workgroup owns RB consecutive output rows and has one invocation per 32-column piece of K
 *   (WG = nPieces rounded up to 32), so each invocation loads its 32 activations once, keeps them in
 *   registers, and reuses them for all RB rows;
 * - it walks the rows U at a time, loading the next U rows' code words before this chunk's math, so
 *   every invocation keeps U pieces of codes in flight;
 * - the RB rows' tables sit in workgroup memory as f32; the 32 lanes of a warp work on the same row, so
 *   their lookups hit 2^b distinct words of one table (no bank conflicts) or broadcast;
 * - partial sums meet in workgroup memory, WG / RB lanes per row.
 * The planner in matmul_lut.ts picks it for 3-bit tables and small outDim (H100 figures there). It needs
 * nPieces ≤ the device's invocations per workgroup (K ≤ 32768 at 1024).
 */

import { type LutPrologue, lutPrologueBytes, lutPrologueWgsl } from "./matmul_lut_wgsl.ts";
import { unroll } from "../core/mod.ts";

/** Shape of one x-stationary build. */
export interface LutXsBuild {
  bits: 2 | 3 | 4;
  /** invocations per workgroup: nPieces rounded up to 32 */
  wg: number;
  /** output rows per workgroup (a divisor of wg) */
  rb: number;
  /** output rows per unrolled chunk (a divisor of rb) */
  unroll: number;
  /** RMSNorm or SiLU·mul applied to x as it is loaded */
  prologue: LutPrologue;
}

/** WGSL expression for code k (0..31) of a piece whose words are `w(i)`; 3-bit codes may straddle. */
function codeAt(bits: number, k: number, w: (i: number) => string): string {
  const p = bits * k;
  const i = p >> 5;
  const s = p & 31;
  let e = s === 0 ? w(i) : `(${w(i)} >> ${s}u)`;
  if (s + bits > 32) e = `(${e} | (${w(i + 1)} << ${32 - s}u))`;
  return `(${e} & ${(1 << bits) - 1}u)`;
}

/** Workgroup memory of a build in bytes: partial sums and the tables. */
export function lutXsWorkgroupBytes(b: LutXsBuild): number {
  return (b.rb * (b.wg + b.wg / b.rb) + (b.rb << b.bits)) * 4 + lutPrologueBytes(b.prologue, 1, b.wg);
}

/**
 * The shader (bindings as the other LUT shaders: 0 params, 1 x, 2 codes, 3 lut, 4 y).
 * @param params the shared uniform block and store function of matmul_lut_wgsl.ts
 */
export function lutXsWgsl(b: LutXsBuild, params: string): string {
  const { bits, wg, rb } = b;
  const lpr = wg / rb;
  const cw = bits === 4 ? "vec4<u32>" : bits === 2 ? "vec2<u32>" : "u32";
  // Piece p of row o starts at word (o·nPieces + p)·bits: a vector index for 2/4 bits, three words for 3.
  const load = (decl: string, name: string, row: string) =>
    bits === 3
      ? unroll(3, (i) => `${decl}${name}_${i} = codes[(${row} * params.nPieces + pc) * 3u + ${i}u];`, " ")
      : `${decl}${name} = codes[${row} * params.nPieces + pc];`;
  const word = (name: string) => (i: number) => bits === 3 ? `${name}_${i}` : `${name}[${i}]`;
  const rowOf = (base: string, u: number) => `min(r0 + ${base} + ${u}u, params.outDim - 1u)`;
  const move = (u: number) =>
    bits === 3 ? unroll(3, (i) => `cw${u}_${i} = nw${u}_${i};`, " ") : `cw${u} = nw${u};`;
  const math = (u: number) =>
    unroll(8, (q) => {
      const codes = unroll(4, (j) => `tab[lb + ${codeAt(bits, 4 * q + j, word(`cw${u}`))}]`, ", ");
      return `part += dot(vec4f(${codes}), v${q});`;
    }, "\n      ");
  return params + /* wgsl */ `
@group(0) @binding(2) var<storage, read> codes: array<${cw}>;  // (outDim, nPieces) pieces of bits words

const STRIDE = ${
    wg + lpr
  }u;  // row stride of the partial sums, padded so the reduction reads spread over banks
var<workgroup> red: array<f32, ${rb * (wg + lpr)}>;
var<workgroup> tab: array<f32, ${rb << bits}>;  // the RB rows' tables, f32
${lutPrologueWgsl(b.prologue, 1, wg)}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r0 = (wid.x + wid.y * nwg.x) * ${rb}u;
  if (r0 >= params.outDim) { return; }
  for (var e = lid; e < ${rb << (bits - 1)}u; e += ${wg}u) {
    let pair = unpack2x16float(lut[min(r0 + e / ${1 << (bits - 1)}u, params.outDim - 1u) * ${
    1 << (bits - 1)
  }u +
      e % ${1 << (bits - 1)}u]);
    tab[2u * e] = pair.x;
    tab[2u * e + 1u] = pair.y;
  }
  let pc = min(lid, params.nPieces - 1u);
  ${b.prologue === "norm" ? "computeNorm(lid);" : ""}
  ${
    unroll(8, (q) =>
      `let v${q} = vec4f(${
        unroll(4, (j) =>
          `select(0.0, xIn(0u, min(lid * 32u + ${4 * q + j}u, params.inDim - 1u)), lid * 32u + ${
            4 * q + j
          }u < params.inDim)`, ", ")
      });`)
  }
  ${unroll(b.unroll, (u) => load("var ", `cw${u}`, rowOf("0u", u)))}
  workgroupBarrier();
  for (var rr = 0u; rr < ${rb}u; rr += ${b.unroll}u) {
    // The next chunk's words load before this chunk's math (the last chunk re-reads its own rows: L1 hits).
    let nx = select(rr, rr + ${b.unroll}u, rr + ${b.unroll}u < ${rb}u);
    ${unroll(b.unroll, (u) => load("let ", `nw${u}`, rowOf("nx", u)), "\n    ")}
    ${
    unroll(b.unroll, (u) =>
      `{
      let lb = (rr + ${u}u) << ${bits}u;
      var part = 0.0;
      ${math(u)}
      red[(rr + ${u}u) * STRIDE + lid] = part;
    }`, "\n    ")
  }
    ${unroll(b.unroll, move, "\n    ")}
  }
  workgroupBarrier();
  // ${lpr} lanes per output row sum strided slices of its partials; one of them adds the ${lpr} results.
  let ru = lid / ${lpr}u;
  let seg = lid % ${lpr}u;
  var s = 0.0;
  for (var t = seg; t < ${wg}u; t += ${lpr}u) { s += red[ru * STRIDE + t]; }
  workgroupBarrier();
  red[ru * STRIDE + seg] = s;
  workgroupBarrier();
  if (seg == 0u && r0 + ru < params.outDim) {
    var total = 0.0;
    for (var t = 0u; t < ${lpr}u; t++) { total += red[ru * STRIDE + t]; }
    store(0u, r0 + ru, total);
  }
}
`;
}
