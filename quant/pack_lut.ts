/**
 * Packs LUT-quantized (LeanQuant nu) weights into the layout kernels/matmul_lut.ts reads
 * ({@link LutPacked}: each row's dense b-bit code stream cut into 32-column pieces of b words, and
 * f16-pair LUTs), from our quantizer's {@link QuantizedLinear} or from the on-disk tensors of format
 * leanserve-lut v1 (inference/quant_format.ts), and unpacks it for tests.
 *
 * leanserve-lut v1 tensors of one linear (R = outDim, C = inDim, b = bits):
 *   lut    f16   [R, 2^b]              row r's table: w[r, c] = lut[r, code[r, c]]
 *   qcodes int32 [R, ceil(C·b/32)]     row r = LSB-first stream of b-bit codes[r, 0..C), zero-padded
 * Piece p of a row is 32·b bits = exactly b words of that stream, starting at word p·b, so packing from
 * disk is a word gather (no bit shuffling), and the f16 LUT bytes become the kernel's u32 pairs as they are.
 */
import { lutCodeWords, type LutPacked, lutPieces } from "../kernels/matmul/mod.ts";
import { f16BitsToF32, f32ToF16Bits } from "../kernels/core/mod.ts";
import type { QuantizedLinear } from "./types.ts";

/** The fields of a quantized linear the packer reads; a leanquant-nu {@link QuantizedLinear} has them all. */
export type LutParts = Pick<QuantizedLinear, "rows" | "cols" | "bits" | "codes"> & {
  /** (rows, 2^bits) f32, each entry representable in f16 */
  lut: Float32Array;
};

/** The on-disk tensors of one leanserve-lut v1 linear, as typed views of the safetensors bytes. */
export interface LutTensors {
  /** f16 bits, [R, 2^b] */
  lut: ArrayLike<number>;
  /** int32 (or the same bits as uint32), [R, ceil(C·b/32)] */
  qcodes: ArrayLike<number>;
}

function checkBits(bits: number, fail: (msg: string) => never): asserts bits is 2 | 3 | 4 {
  if (bits !== 2 && bits !== 3 && bits !== 4) fail(`bits must be 2, 3 or 4, got ${bits}`);
}

/** f16 bit patterns (rows, 2^bits) → u32 pairs, entry 2i in the low half. */
function lutPairs(f16: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(f16.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = ((f16[2 * i] & 0xffff) | ((f16[2 * i + 1] & 0xffff) << 16)) >>> 0;
  }
  return out;
}

/**
 * Packs a quantized linear into the kernel layout. LUT entries are rounded to f16 (a no-op for
 * LeanQuant nu results, whose grids are f16-exact by contract; the file format rounds the same way).
 * @param q codes (rows, cols) in [0, 2^bits) in original column order and lut (rows, 2^bits)
 * @returns the packed weight
 * @example
 * ```ts ignore
 * const w = uploadLut(gpu, packLut(quantizeLinear(W, H, grid, opts)), "layers.0.mlp.up_proj");
 * ```
 */
export function packLut(q: Pick<QuantizedLinear, "rows" | "cols" | "bits" | "codes" | "lut">): LutPacked {
  const { rows, cols, bits, codes, lut } = q;
  const fail = (msg: string): never => {
    throw new Error(`Cannot pack ${rows}×${cols} ${bits}-bit LUT weight: ${msg}`);
  };
  checkBits(bits, fail);
  const levels = 1 << bits;
  if (!lut) return fail(`it has no LUT (method leanquant-nu)`);
  if (codes.length !== rows * cols) fail(`expected ${rows * cols} codes, got ${codes.length}`);
  if (lut.length !== rows * levels) fail(`expected ${rows}×${levels} LUT entries, got ${lut.length}`);
  const words = new Uint32Array(lutCodeWords(bits, rows, cols));
  const nPieces = lutPieces(cols);
  for (let o = 0; o < rows; o++) {
    for (let c = 0; c < cols; c++) {
      const code = codes[o * cols + c];
      if (code >= levels) fail(`code ${code} at row ${o}, column ${c} exceeds ${bits} bits`);
      const off = (c & 31) * bits;
      const i = (o * nPieces + (c >>> 5)) * bits + (off >>> 5);
      words[i] |= code << (off & 31);
      if ((off & 31) + bits > 32) words[i + 1] |= code >>> (32 - (off & 31));
    }
  }
  return { bits, outDim: rows, inDim: cols, codes: words, lut: lutPairs(Array.from(lut, f32ToF16Bits)) };
}

/**
 * Packs leanserve-lut v1 tensors straight into the kernel layout (stream padding bits are ignored).
 * @param t the `lut` and `qcodes` tensors of one linear
 * @param shape bits (quantization_config) and the linear's out/in features
 * @returns the packed weight
 */
export function packLutTensors(
  t: LutTensors,
  { bits, outDim, inDim }: { bits: number; outDim: number; inDim: number },
): LutPacked {
  const fail = (msg: string): never => {
    throw new Error(`Cannot pack ${outDim}×${inDim} ${bits}-bit leanserve-lut tensors: ${msg}`);
  };
  checkBits(bits, fail);
  const rowWords = Math.ceil((inDim * bits) / 32);
  if (t.qcodes.length !== outDim * rowWords) {
    fail(`qcodes must hold [${outDim}, ${rowWords}] words, got ${t.qcodes.length}`);
  }
  if (t.lut.length !== outDim * (1 << bits)) {
    fail(`lut must hold [${outDim}, ${1 << bits}] entries, got ${t.lut.length}`);
  }
  const streamBits = inDim * bits;
  const nPieces = lutPieces(inDim);
  const words = new Uint32Array(lutCodeWords(bits, outDim, inDim));
  for (let p = 0; p < nPieces; p++) {
    for (let i = 0; i < bits; i++) {
      const src = p * bits + i;
      if (src >= rowWords) continue;
      const valid = streamBits - 32 * src;
      const mask = valid >= 32 ? 0xffffffff : (1 << valid) - 1;
      for (let o = 0; o < outDim; o++) {
        words[(o * nPieces + p) * bits + i] = (t.qcodes[o * rowWords + src] & mask) >>> 0;
      }
    }
  }
  return { bits, outDim, inDim, codes: words, lut: lutPairs(t.lut) };
}

/**
 * Inverse of {@link packLut}, for tests: codes back as (rows, cols) and the LUT widened to f32.
 * @param p the packed weight
 * @returns codes and LUT in original column order
 */
export function unpackLut(p: LutPacked): LutParts {
  const { bits, outDim: rows, inDim: cols } = p;
  const codes = new Uint8Array(rows * cols);
  const mask = (1 << bits) - 1;
  const nPieces = lutPieces(cols);
  for (let o = 0; o < rows; o++) {
    for (let c = 0; c < cols; c++) {
      const off = (c & 31) * bits;
      const i = (o * nPieces + (c >>> 5)) * bits + (off >>> 5);
      let v = p.codes[i] >>> (off & 31);
      if ((off & 31) + bits > 32) v |= p.codes[i + 1] << (32 - (off & 31));
      codes[o * cols + c] = v & mask;
    }
  }
  const lut = new Float32Array(2 * p.lut.length);
  p.lut.forEach((v, i) => {
    lut[2 * i] = f16BitsToF32(v & 0xffff);
    lut[2 * i + 1] = f16BitsToF32(v >>> 16);
  });
  return { rows, cols, bits, codes, lut };
}
