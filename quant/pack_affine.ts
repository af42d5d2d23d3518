/**
 * Packs affine-quantized weights into the layout kernels/matmul_affine.ts reads ({@link AffinePacked}),
 * from our quantizer's {@link QuantizedLinear} or from an AutoGPTQ checkpoint, and unpacks it for tests.
 *
 * AutoGPTQ "gptq" v1 tensors (docs/quantization.md §3.3), R = outDim, C = inDim, b = bits:
 *   qweight int32 [C·b/32, R]   each output column's codes along the input dim as one little-endian bit
 *                                stream (word row i holds bits 32i..32i+31; 3-bit codes straddle words)
 *   qzeros  int32 [nGroups, R·b/32]  zero-points, the same bit stream along the output dim, stored − 1
 *   scales  f16   [nGroups, R]
 *   g_idx   int32 [C]           group of each input column (optional)
 * v1 kernels add the 1 back without masking, so a stored all-ones field means zero = 2^b; we do the same.
 * GPTQModel's v2 ("gptq_v2") stores the zero as is: pass `zeroOffset: 0`.
 * {@link toAutoGptq} writes v1 tensors with AutoGPTQ's own packing loops (not our bit-stream reader), so
 * the round trip through {@link fromAutoGptq} checks one against the other.
 */
import { type AffinePacked, affineRowWords } from "../kernels/matmul/mod.ts";
import { f16BitsToF32, f32ToF16Bits } from "../kernels/core/mod.ts";
import type { QuantizedLinear } from "./types.ts";

/** The fields of a quantized linear the packer reads; a {@link QuantizedLinear} has them all. */
export type AffineParts = Pick<QuantizedLinear, "rows" | "cols" | "bits" | "codes" | "gIdx"> & {
  /** (rows, nGroups) */
  scale: Float32Array;
  /** (rows, nGroups) */
  zero: Float32Array;
};

/** Reads a `bits`-wide field at bit offset `off` of a little-endian bit stream of words w[base + i·stride]. */
function readBits(w: ArrayLike<number>, base: number, stride: number, off: number, bits: number): number {
  const i = off >>> 5;
  const s = off & 31;
  let v = w[base + i * stride] >>> s;
  if (s + bits > 32) v |= w[base + (i + 1) * stride] << (32 - s);
  return v & ((1 << bits) - 1);
}

/** Kernel column order for a g_idx: identity (undefined) or a stable sort by group, checked contiguous. */
function columnOrder(cols: number, groupSize: number, gIdx: ArrayLike<number> | undefined) {
  if (!gIdx) return undefined;
  const want = (c: number) => groupSize ? Math.floor(c / groupSize) : 0;
  let identity = true;
  for (let c = 0; c < cols && identity; c++) identity = gIdx[c] === want(c);
  if (identity) return undefined;
  const perm = Uint32Array.from({ length: cols }, (_, c) => c).sort((a, b) => gIdx[a] - gIdx[b] || a - b);
  for (let j = 0; j < cols; j++) {
    if (gIdx[perm[j]] !== want(j)) {
      throw new Error(
        `Cannot pack g_idx: groups must hold ${
          groupSize || cols
        } columns each (act-order ranks // groupSize), ` +
          `but sorted column ${j} (original ${perm[j]}) is in group ${gIdx[perm[j]]}, expected ${want(j)}`,
      );
    }
  }
  return perm;
}

/**
 * Packs a quantized linear into the kernel layout, permuting columns so groups are contiguous when
 * `gIdx` is not the plain c // groupSize. Scale and zero are rounded to f16.
 * @param q codes (rows, cols) in [0, 2^bits) in original column order, scale/zero (rows, nGroups), gIdx (cols)
 * @param options groupSize: columns per group, a multiple of 32, or 0 for one group per row
 * @returns the packed weight
 */
export function packAffine(q: AffineParts, { groupSize }: { groupSize: number }): AffinePacked {
  const { rows, cols, bits, codes } = q;
  const fail = (msg: string): never => {
    throw new Error(`Cannot pack ${rows}×${cols} ${bits}-bit weight: ${msg}`);
  };
  if (bits !== 2 && bits !== 3 && bits !== 4) return fail(`bits must be 2, 3 or 4`);
  if (groupSize < 0 || groupSize % 32 !== 0) {
    fail(`groupSize must be 0 or a multiple of 32, got ${groupSize}`);
  }
  const nGroups = groupSize ? Math.ceil(cols / groupSize) : 1;
  if (codes.length !== rows * cols) fail(`expected ${rows * cols} codes, got ${codes.length}`);
  if (q.scale.length !== rows * nGroups || q.zero.length !== rows * nGroups) {
    fail(`expected ${rows}×${nGroups} scales and zeros, got ${q.scale.length} and ${q.zero.length}`);
  }
  if (q.gIdx && q.gIdx.length !== cols) fail(`expected ${cols} g_idx entries, got ${q.gIdx.length}`);
  const perm = columnOrder(cols, groupSize, q.gIdx);
  const rowWords = affineRowWords(bits, cols);
  const words = new Uint32Array(rows * rowWords);
  for (let o = 0; o < rows; o++) {
    for (let j = 0; j < cols; j++) {
      const code = codes[o * cols + (perm ? perm[j] : j)];
      if (code >= 1 << bits) fail(`code ${code} at row ${o} exceeds ${bits} bits`);
      const off = j * bits;
      const i = o * rowWords + (off >>> 5);
      words[i] |= code << (off & 31);
      if ((off & 31) + bits > 32) words[i + 1] |= code >>> (32 - (off & 31));
    }
  }
  const scaleZero = new Uint32Array(rows * nGroups);
  for (let i = 0; i < scaleZero.length; i++) {
    scaleZero[i] = (f32ToF16Bits(q.scale[i]) | (f32ToF16Bits(q.zero[i]) << 16)) >>> 0;
  }
  const packed: AffinePacked = {
    bits,
    outDim: rows,
    inDim: cols,
    groupSize,
    nGroups,
    codes: words,
    scaleZero,
  };
  if (perm) packed.perm = perm;
  return packed;
}

/**
 * Inverse of {@link packAffine}, for tests: codes back in original column order, f16 scale/zero as f32,
 * and the group of every original column.
 */
export function unpackAffine(p: AffinePacked): AffineParts & { gIdx: Int32Array } {
  const { bits, outDim: rows, inDim: cols, groupSize, nGroups } = p;
  const rowWords = affineRowWords(bits, cols);
  const codes = new Uint8Array(rows * cols);
  const gIdx = new Int32Array(cols);
  for (let j = 0; j < cols; j++) gIdx[p.perm ? p.perm[j] : j] = groupSize ? Math.floor(j / groupSize) : 0;
  for (let o = 0; o < rows; o++) {
    for (let j = 0; j < cols; j++) {
      codes[o * cols + (p.perm ? p.perm[j] : j)] = readBits(p.codes, o * rowWords, 1, j * bits, bits);
    }
  }
  const scale = new Float32Array(rows * nGroups);
  const zero = new Float32Array(rows * nGroups);
  p.scaleZero.forEach((v, i) => {
    scale[i] = f16BitsToF32(v & 0xffff);
    zero[i] = f16BitsToF32(v >>> 16);
  });
  return { rows, cols, bits, codes, scale, zero, gIdx };
}

/** AutoGPTQ tensors of one linear (shapes in the header comment). */
export interface AutoGptqTensors {
  qweight: Int32Array;
  qzeros: Int32Array;
  /** f16 bits */
  scales: Uint16Array;
  gIdx?: Int32Array;
}

/** What the tensors do not say: bits, shape and group size from quantize_config.json. */
export interface AutoGptqOptions {
  bits: 2 | 3 | 4;
  /** R */
  outDim: number;
  /** C */
  inDim: number;
  /** quantize_config.json group_size; −1 or 0 means one group per row */
  groupSize: number;
  /** Added to the stored zero: 1 for AutoGPTQ v1 (default), 0 for GPTQModel v2. */
  zeroOffset?: number;
}

/**
 * Decodes AutoGPTQ tensors into {@link AffineParts} (original column order).
 * @param t qweight, qzeros, scales and optional g_idx
 * @param options bits, shape, group size and zero convention
 */
export function fromAutoGptq(t: AutoGptqTensors, options: AutoGptqOptions): AffineParts {
  const { bits, outDim: R, inDim: C, zeroOffset = 1 } = options;
  const groupSize = Math.max(options.groupSize, 0);
  const nGroups = groupSize ? Math.ceil(C / groupSize) : 1;
  const check = (name: string, got: number, want: number) => {
    if (got !== want) {
      throw new Error(`Cannot read AutoGPTQ "${name}": expected ${want} elements, got ${got}`);
    }
  };
  check("qweight", t.qweight.length, (C * bits / 32) * R);
  check("qzeros", t.qzeros.length, nGroups * (R * bits / 32));
  check("scales", t.scales.length, nGroups * R);
  if (t.gIdx) check("g_idx", t.gIdx.length, C);
  if (!Number.isInteger(C * bits / 32) || !Number.isInteger(R * bits / 32)) {
    throw new Error(
      `Cannot read AutoGPTQ ${bits}-bit tensors: inDim ${C} and outDim ${R} must fill whole words`,
    );
  }
  const codes = new Uint8Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) codes[r * C + c] = readBits(t.qweight, r, R, c * bits, bits);
  }
  const zero = new Float32Array(R * nGroups);
  const scale = new Float32Array(R * nGroups);
  const zWords = R * bits / 32;
  for (let g = 0; g < nGroups; g++) {
    for (let r = 0; r < R; r++) {
      zero[r * nGroups + g] = readBits(t.qzeros, g * zWords, 1, r * bits, bits) + zeroOffset;
      scale[r * nGroups + g] = f16BitsToF32(t.scales[g * R + r]);
    }
  }
  const parts: AffineParts = { rows: R, cols: C, bits, codes, scale, zero };
  if (t.gIdx) parts.gIdx = t.gIdx;
  return parts;
}

/**
 * Packs AutoGPTQ tensors straight into the kernel layout.
 * @param t qweight, qzeros, scales and optional g_idx
 * @param options bits, shape, group size and zero convention
 */
export function packAutoGptq(t: AutoGptqTensors, options: AutoGptqOptions): AffinePacked {
  return packAffine(fromAutoGptq(t, options), { groupSize: Math.max(options.groupSize, 0) });
}

/**
 * AutoGPTQ's packing of one column of b-bit values into 32-bit words (`QuantLinear.pack`): 32/b per word
 * for 2 and 4 bits; for 3 bits 10 + 1 split + 10 + 1 split + 10 codes in every 3 words.
 */
function autoGptqPack(
  n: number,
  bits: number,
  value: (i: number) => number,
  put: (word: number, v: number) => void,
) {
  let i = 0;
  let row = 0;
  const or = (v: number) => put(row, v);
  while (i < n) {
    if (bits !== 3) {
      for (let j = i; j < i + 32 / bits; j++) or(value(j) << (bits * (j - i)));
      i += 32 / bits;
      row++;
      continue;
    }
    for (let j = i; j < i + 10; j++) or(value(j) << (3 * (j - i)));
    i += 10;
    or(value(i) << 30);
    row++;
    or((value(i) >> 2) & 1);
    i++;
    for (let j = i; j < i + 10; j++) or(value(j) << (3 * (j - i) + 1));
    i += 10;
    or(value(i) << 31);
    row++;
    or((value(i) >> 1) & 3);
    i++;
    for (let j = i; j < i + 10; j++) or(value(j) << (3 * (j - i) + 2));
    i += 10;
    row++;
  }
}

/**
 * Writes AutoGPTQ v1 tensors (an exporter, and the independent side of the round-trip tests).
 * @param q codes, scales, integer zeros in [1, 2^bits] and optional g_idx, original column order
 * @param options groupSize: columns per group, 0 for one group per row
 */
export function toAutoGptq(q: AffineParts, { groupSize }: { groupSize: number }): AutoGptqTensors {
  const { rows: R, cols: C, bits, codes } = q;
  const nGroups = groupSize ? Math.ceil(C / groupSize) : 1;
  const mask = (1 << bits) - 1;
  const qweight = new Int32Array((C * bits / 32) * R);
  for (let r = 0; r < R; r++) {
    autoGptqPack(C, bits, (c) => codes[r * C + c], (word, v) => qweight[word * R + r] |= v);
  }
  const zWords = R * bits / 32;
  const qzeros = new Int32Array(nGroups * zWords);
  const scales = new Uint16Array(nGroups * R);
  for (let g = 0; g < nGroups; g++) {
    for (let r = 0; r < R; r++) {
      const z = q.zero[r * nGroups + g];
      if (!Number.isInteger(z) || z < 1 || z > mask + 1) {
        throw new Error(
          `Cannot write AutoGPTQ v1 zero ${z} (row ${r}, group ${g}): v1 needs an integer in [1, ${
            mask + 1
          }]`,
        );
      }
      scales[g * R + r] = f32ToF16Bits(q.scale[r * nGroups + g]);
    }
    const stored = (r: number) => (q.zero[r * nGroups + g] - 1) & mask;
    autoGptqPack(R, bits, stored, (word, v) => qzeros[g * zWords + word] |= v);
  }
  const gIdx = q.gIdx ?? Int32Array.from({ length: C }, (_, c) => groupSize ? Math.floor(c / groupSize) : 0);
  return { qweight, qzeros, scales, gIdx };
}
