/**
 * WGSL for the one-row decode GEMV of kernels/matmul_lut.ts with int8 activations ("q8gemv"): the affine q8
 * GEMV (matmul_affine_q8_wgsl.ts `q8GemvWgsl`) with its code operands swapped for lookups in int8 tables.
 *
 * Why: with `activations: "q8"` the engine's single-stream decode (one row, no pinned path) still ran the
 * exact f32 LUT GEMV, 7.52 ms per 8B decode step on the H100 against 4.48 ms for affine weights on their
 * one-row int8 GEMV; the int8 batched LUT path (matmul_lut_q8mm_wgsl.ts) is slower still at one row (8.25 ms),
 * as it is weight-stationary over rows. Opt-in (`LutTune.q8Gemv`): on the H100
 * it is no faster than the f32 GEMV for one row (0.19 against 0.14 ms a Llama-3-8B layer, BENCHMARKS.md).
 *
 * Numerics: those of the int8 batched path, exactly. Activations are quantized per 32 columns as the affine
 * q8 GEMV and the prep pass do (d = max|x| / 127, round half to even), in natural column order
 * (NATURAL_OPERAND_ORDER: operand k holds columns 4k .. 4k + 3); each output row's f16 table is rounded to int8
 * with s = max|t| / 127 by the batched path's own WGSL (matmul_lut_q8mm_wgsl.ts `lutQ8TablesFill`). So
 *   y[o] = s_o · Σ_p d_p · Σ_{k in piece p} l8[o, code[o, k]] · q_k
 * with the same exact integer sums per piece as the batched path; only the f32 combination of the pieces
 * differs (per lane, then the kernel's fixed reduction), and with a fused RMSNorm the order of its Σx² (the
 * affine q8 GEMV's, not the prep pass's), which can move an activation to the next int8 value. The cost in
 * precision is the two int8 roundings: an activation moves by at most d/2 (1/254 of its piece's largest |x|),
 * a weight by at most s/2 (about 1/17 of a 4-bit table's step); for uniform random tables and activations,
 * an NMSE of 2–3e-5 against the exact product at 2–4 bits, about half of it from the activations alone (what
 * the affine q8 GEMV costs).
 *
 * Work split (the affine kernel's, "x-stationary"): a workgroup owns RB consecutive output rows; lane l owns
 * pieces l, l + WG, … of x, quantizes them once into registers, and walks the RB rows U at a time, loading
 * the next U rows' code words before this chunk's math; partial sums meet in workgroup memory in a fixed
 * order. The RB rows' int8 tables are filled once per workgroup in workgroup memory while the first rows'
 * code words load: chunk tables (one word per value of two codes, four at 2 bits, holding their int8 levels
 * side by side: an operand is two lookups, one at 2 bits) where they fit, else four byte-shifted copies (four
 * lookups OR-ed together); both give the same bits. The 32 lanes of a warp share a row, so their lookups go
 * to one table: a byte-shifted copy's 2^b words lie in distinct banks (its lookups never conflict), a chunk
 * table's 64 or 256 words do not (random codes make 2–4-way conflicts). Filling costs each lane
 * RB · 2^(chunk bits) / WG table words per workgroup against RB · P · 8 operands (4-bit, K = 4096: 32 words
 * against 128 operands), the price of storing nothing besides the weight. Binds with the affine kernels'
 * params block (matmul_affine_wgsl.ts), as the LUT prep pass does.
 */
import {
  NATURAL_OPERAND_ORDER,
  type Q8GemvBuild,
  type Q8GemvFormat,
  q8GemvWgsl,
} from "./matmul_affine_q8_wgsl.ts";
import {
  lutQ8Operand,
  lutQ8TablesBytes,
  lutQ8TablesDecl,
  lutQ8TablesFill,
  lutQ8TableWords,
} from "./matmul_lut_q8mm_wgsl.ts";
import { unroll } from "../core/mod.ts";

/**
 * Shape of one build: the affine q8 GEMV's (`gather` when inDim % 32 ≠ 0; LUT codes are never permuted),
 * plus the kind of tables.
 */
export interface LutQ8GemvBuild extends Q8GemvBuild {
  /** chunk tables (true) or byte-shifted copies (false): the same bits, see the header */
  chunks: boolean;
}

/** Workgroup memory of a build in bytes: partial sums, tables and the fused norm's sums. */
export function lutQ8GemvWorkgroupBytes(b: LutQ8GemvBuild): number {
  const red = b.rb * b.rows * (b.wg + b.wg / b.rb);
  const norm = b.prologue === "norm" ? 32 * b.rows : 0;
  return 4 * (red + norm) + lutQ8TablesBytes(b.bits, b.chunks, b.rb);
}

/** The LUT format of the q8 GEMV: tables at binding 3, int8 levels from workgroup memory. */
function lutQ8Format(b: LutQ8GemvBuild): Q8GemvFormat {
  const { bits, chunks, rb, rows } = b;
  const words = lutQ8TableWords(bits, chunks);
  const math = (u: number, i: number) => {
    const id = `${u}_${i}`;
    const w = (k: number) => `cw${id}.${"xyzw"[k]}`;
    const lines = [`let tb${id} = (rr + ${u}u) * ${words}u;`];
    for (let k = 0; k < 8; k++) {
      lines.push(`let c${id}_${k} = ${lutQ8Operand(bits, chunks, k, w, `tb${id}`)};`);
    }
    for (let r = 0; r < rows; r++) {
      const dots = unroll(8, (k) => `dot4I8Packed(c${id}_${k}, xq${r}_${i}_${k}_0)`, " + ");
      lines.push(`part${u}_${r} = fma(d${r}_${i}, f32(${dots}), part${u}_${r});`);
    }
    return lines.join("\n      ");
  };
  return {
    table: "lut",
    decl: `@group(0) @binding(3) var<storage, read> lut: array<u32>;  // (outDim, 2^BITS / 2) f16 pairs
${lutQ8TablesDecl(bits, chunks, rb)}`,
    order: NATURAL_OPERAND_ORDER,
    dz: false,
    side: null,
    setup: lutQ8TablesFill({
      bits,
      chunks,
      outputs: rb,
      wg: b.wg,
      row: "min(r0 + e, od - 1u)",
      word: (at) => `loadLut(m, ${at})`,
    }),
    math,
    result: (t, ru) => `${t} * sc[${ru}]`,
  };
}

/**
 * The shader. Bindings as the affine q8 GEMV's: 0 params (matmul_affine_wgsl.ts), 1 x (f32), 2 codes
 * ((outDim, nPieces) pieces of `bits` words), 3 lut, 4 y; 5 a dummy perm word when `gather` or with a
 * prologue; 6 the norm weight or the up projection; matrix m > 0 of `mats` at 4 + 3m (codes), 5 + 3m (lut),
 * 6 + 3m (y).
 */
export function lutQ8GemvWgsl(b: LutQ8GemvBuild): string {
  return q8GemvWgsl(b, lutQ8Format(b));
}
