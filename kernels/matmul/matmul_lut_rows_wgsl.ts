/**
 * WGSL for the batched decode path of kernels/matmul_lut.ts ("rows"): LUT weights applied to many activation
 * rows, each code read once per dispatch, with the lane layout of the affine kernel's batched q8 path
 * (matmul_affine_q8mm_wgsl.ts) and the dense one (matmul_rows_wgsl.ts).
 *
 * Why: the row-per-lane LUT GEMV holds a partial sum per activation row and serves at most 8 rows per
 * dispatch, so a 64-row decode step read the codes eight times; and its one-row build differs from its
 * many-row build, so a row's sums depended on its batch.
 *
 * Layout: KS lanes split K for one output (lane s takes 32-column pieces s, s + KS, …), ⌈rows / RL⌉ lanes
 * split the rows (RL each), NO outputs per lane. The workgroup's tables sit in workgroup memory as f32
 * ([output][code]: a warp's lanes share an output, so equal codes broadcast and different ones hit
 * different banks). Each lane looks a piece's 32 codes up once and applies them to its rows with explicit
 * FMAs in column order; the KS partial sums of an (output, row) are added in lane order. The order of every
 * sum depends on KS alone, so a row's result never depends on its batch. Needs inDim % 4 = 0 (16-byte
 * activation loads; a partial last piece reads zeros past the row); other shapes keep the GEMV.
 */
import { unroll } from "../core/mod.ts";
import { LUT_X4_DECL, lutParamsWgsl } from "./matmul_lut_wgsl.ts";
import {
  type RowLanes,
  rowLanesDecl,
  rowLanesOutputsPerWorkgroup,
  rowLanesReduce,
  rowLanesReduceBytes,
  rowLanesSetup,
  rowLanesWorkgroupSize,
} from "./row_lanes_wgsl.ts";

/** Shape of one build: the lanes (row_lanes_wgsl.ts) and the code width. */
export interface LutRowsBuild extends RowLanes {
  bits: 2 | 3 | 4;
}

/** Workgroup memory of a build: the tables and the reduction. */
export function lutRowsWorkgroupBytes(b: LutRowsBuild): number {
  return 4 * rowLanesOutputsPerWorkgroup(b) * (1 << b.bits) + rowLanesReduceBytes(b);
}

/** WGSL expression of code k (0..31) of a piece whose words are `w(i)` (3-bit codes may straddle words). */
export function lutCodeOf(bits: number, k: number, w: (i: number) => string): string {
  return streamBits(bits * k, bits, w);
}

/** WGSL expression of bits [p, p + width) (width < 32) of a piece's bit stream, words `w(i)`, LSB first. */
export function streamBits(p: number, width: number, w: (i: number) => string): string {
  const [i, s] = [p >> 5, p & 31];
  let e = s === 0 ? w(i) : `(${w(i)} >> ${s}u)`;
  if (s + width > 32) e = `(${e} | (${w(i + 1)} << ${32 - s}u))`;
  return s + width === 32 ? e : `(${e} & ${(1 << width) - 1}u)`;
}

/**
 * The shader. Bindings as the other LUT shaders: 0 params, 1 x (f32 rows, as vec4), 2 codes, 3 lut, 4 y.
 */
export function lutRowsWgsl(b: LutRowsBuild): string {
  const { bits, ks, rl, no } = b;
  const wg = rowLanesWorkgroupSize(b);
  const perWorkgroup = rowLanesOutputsPerWorkgroup(b);
  const groups = perWorkgroup / no;
  const size = 1 << bits;
  const word = (j: number) => (i: number) => `cw${j}_${i}`;
  // Codes in groups of 8 columns: look 8 up per output, then apply them to every row (2 vec4 loads each).
  const group = (q: number) => {
    const lines: string[] = [];
    for (let j = 0; j < no; j++) {
      for (let k = 0; k < 8; k++) {
        const c = 8 * q + k;
        lines.push(`let w${j}_${k} = tab[t${j} + ${lutCodeOf(bits, c, word(j))}];`);
      }
    }
    for (let i = 0; i < rl; i++) {
      lines.push(
        `let xa${i} = select(vec4f(), x4[xr${i} + min(p * 8u + ${2 * q}u, last)], p * 8u + ${
          2 * q
        }u <= last);`,
        `let xb${i} = select(vec4f(), x4[xr${i} + min(p * 8u + ${2 * q + 1}u, last)], p * 8u + ${
          2 * q + 1
        }u <= last);`,
      );
      for (let j = 0; j < no; j++) {
        const acc = `a${j}_${i}`;
        lines.push(
          unroll(
            8,
            (k) => `${acc} = fma(w${j}_${k}, ${k < 4 ? `xa${i}` : `xb${i}`}.${"xyzw"[k & 3]}, ${acc});`,
            " ",
          ),
        );
      }
    }
    return `{\n      ${lines.join("\n      ")}\n    }`;
  };
  return /* wgsl */ `
${lutParamsWgsl(LUT_X4_DECL)}
@group(0) @binding(2) var<storage, read> codes: array<u32>;  // (outDim, nPieces, BITS) u32

var<workgroup> tab: array<f32, ${perWorkgroup * size}>;  // [output of the workgroup][code]
${rowLanesDecl(b)}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o0 = (wid.x + wid.y * nwg.x) * ${perWorkgroup}u;
  if (o0 >= params.outDim) { return; }  // uniform per workgroup
  for (var e = lid; e < ${(perWorkgroup * size) / 2}u; e += ${wg}u) {
    let o = min(o0 + e / ${size / 2}u, params.outDim - 1u);
    let v = unpack2x16float(lut[o * ${size / 2}u + e % ${size / 2}u]);
    tab[2u * e] = v.x;
    tab[2u * e + 1u] = v.y;
  }
  workgroupBarrier();
  ${
    rowLanesSetup(b, "params.outDim", (i, row) =>
      `let xr${i} = (params.xRowOffset + ${row}) * (params.inDim / 4u);`)
  }
  ${unroll(no, (j) => `let t${j} = (${j * groups}u + g) * ${size}u;`)}
  let last = params.inDim / 4u - 1u;  // the row's last vec4: a K tail reads zeros past it
  for (var p = s; p < params.nPieces; p += ${ks}u) {
    ${
    unroll(no, (j) =>
      unroll(bits, (i) =>
        `let cw${j}_${i} = codes[(orow${j} * params.nPieces + p) * ${bits}u + ${i}u];`, " "))
  }
    ${unroll(4, group, "\n    ")}
  }
  ${rowLanesReduce(b, "params.outDim", (r, o, v) => `store(${r}, ${o}, ${v})`)}
}
`;
}
