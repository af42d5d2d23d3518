/**
 * Bit packing of the quantized file formats (inference/quant_format.ts), pure and host-side.
 *
 * Every packing here is one rule: an LSB-first bitstream of `bits`-wide values in little-endian 32-bit words
 * (value k occupies bits k·bits .. k·bits + bits − 1 of the stream). AutoGPTQ's `QuantLinear.pack` is exactly
 * this rule: at 2/4/8 bits, 32/bits values per word with value k at bits k·bits; at 3 bits its hand-written
 * 10 + (2|1) + 10 + (1|2) + 10 scheme spans words and equals the same stream (tests check its word layout).
 * AutoGPTQ needs the packed dimension to be a multiple of 32; we pad the stream with zero bits instead to
 * ceil(n·bits/32) words, which changes nothing when it is a multiple of 32.
 *
 * AutoGPTQ (v1, "gptq" checkpoint_format) layout of one linear (R = out_features, C = in_features, G groups):
 *   qweight int32 [ceil(C·b/32), R]  column r is the stream of codes[r, 0..C)   (packed along the input dim)
 *   qzeros  int32 [G, ceil(R·b/32)]  row g is the stream of (zero[r, g] − 1) mod 2^b over r (output dim)
 *   scales  f16   [G, R]
 *   g_idx   int32 [C]                group of each input column
 * A zero-point of 0 cannot be stored minus 1 in v1: it wraps to 2^b − 1, which our reader maps back (the
 * stored value + 1, mod 2^b) but which AutoGPTQ's kernels would read as 2^b. `packZeros` counts them.
 */

/**
 * Packs values into an LSB-first bitstream.
 * @param values each in [0, 2^bits)
 * @param bits 1..8
 * @param out optional destination of at least ceil(n·bits/32) words (zeroed by the caller)
 * @returns the words
 */
export function packBits(values: ArrayLike<number>, bits: number, out?: Uint32Array): Uint32Array {
  const words = out ?? new Uint32Array(Math.ceil((values.length * bits) / 32));
  const mask = (1 << bits) - 1;
  for (let k = 0; k < values.length; k++) {
    const v = values[k] & mask;
    const bit = k * bits;
    const w = bit >>> 5;
    const shift = bit & 31;
    words[w] |= v << shift;
    if (shift + bits > 32) words[w + 1] |= v >>> (32 - shift);
  }
  return words;
}

/**
 * Reads `count` values back from an LSB-first bitstream.
 * @param words the stream
 * @param bits 1..8
 * @param count values to read
 * @param out optional destination
 * @returns the values
 */
export function unpackBits(words: Uint32Array, bits: number, count: number, out?: Uint8Array): Uint8Array {
  const values = out ?? new Uint8Array(count);
  const mask = (1 << bits) - 1;
  for (let k = 0; k < count; k++) {
    const bit = k * bits;
    const w = bit >>> 5;
    const shift = bit & 31;
    let v = words[w] >>> shift;
    if (shift + bits > 32) v |= words[w + 1] << (32 - shift);
    values[k] = v & mask;
  }
  return values;
}

/** Words of a packed stream of n values. */
export function packedWords(n: number, bits: number): number {
  return Math.ceil((n * bits) / 32);
}

/**
 * AutoGPTQ `qweight`: codes (rows, cols) → [ceil(cols·bits/32), rows], packed along the input dimension.
 * @param codes (rows, cols) row-major codes
 * @returns int32 words, row-major [words, rows]
 */
export function packQweight(codes: Uint8Array, rows: number, cols: number, bits: number): Int32Array {
  const words = packedWords(cols, bits);
  const out = new Int32Array(words * rows);
  const stream = new Uint32Array(words);
  for (let r = 0; r < rows; r++) {
    stream.fill(0);
    packBits(codes.subarray(r * cols, (r + 1) * cols), bits, stream);
    for (let w = 0; w < words; w++) out[w * rows + r] = stream[w];
  }
  return out;
}

/**
 * Inverse of {@link packQweight}.
 * @param qweight [ceil(cols·bits/32), rows] int32
 * @returns (rows, cols) codes
 */
export function unpackQweight(qweight: Int32Array, rows: number, cols: number, bits: number): Uint8Array {
  const words = packedWords(cols, bits);
  if (qweight.length !== words * rows) {
    throw new Error(`Cannot unpack qweight: expected [${words}, ${rows}] words, got ${qweight.length}`);
  }
  const codes = new Uint8Array(rows * cols);
  const stream = new Uint32Array(words);
  for (let r = 0; r < rows; r++) {
    for (let w = 0; w < words; w++) stream[w] = qweight[w * rows + r];
    unpackBits(stream, bits, cols, codes.subarray(r * cols, (r + 1) * cols));
  }
  return codes;
}

/**
 * AutoGPTQ `qzeros`: zero (rows, groups) → [groups, ceil(rows·bits/32)], stored minus 1 (v1 format).
 * @param zero (rows, groups) integer zero-points in [0, 2^bits)
 * @returns the words and how many zero-points were 0 (stored wrapped, see the header)
 */
export function packZeros(
  zero: Float32Array,
  rows: number,
  groups: number,
  bits: number,
): { qzeros: Int32Array; wrapped: number } {
  const words = packedWords(rows, bits);
  const qzeros = new Int32Array(groups * words);
  const K = 2 ** bits;
  const stored = new Uint8Array(rows);
  let wrapped = 0;
  for (let g = 0; g < groups; g++) {
    for (let r = 0; r < rows; r++) {
      const z = zero[r * groups + g];
      if (!Number.isInteger(z) || z < 0 || z >= K) {
        throw new Error(
          `Cannot pack zero-point ${z} of row ${r}, group ${g}: expected an integer in [0, ${K})`,
        );
      }
      if (z === 0) wrapped++;
      stored[r] = (z - 1 + K) % K;
    }
    const out = new Uint32Array(qzeros.buffer, g * words * 4, words);
    packBits(stored, bits, out);
  }
  return { qzeros, wrapped };
}

/**
 * Inverse of {@link packZeros}: adds the 1 back (mod 2^bits; `minusOne` false reads GPTQModel's v2 format).
 * @returns (rows, groups) zero-points
 */
export function unpackZeros(
  qzeros: Int32Array,
  rows: number,
  groups: number,
  bits: number,
  { minusOne = true }: { minusOne?: boolean } = {},
): Float32Array {
  const words = packedWords(rows, bits);
  if (qzeros.length !== groups * words) {
    throw new Error(`Cannot unpack qzeros: expected [${groups}, ${words}] words, got ${qzeros.length}`);
  }
  const K = 2 ** bits;
  const zero = new Float32Array(rows * groups);
  const stream = new Uint32Array(qzeros.buffer, qzeros.byteOffset, qzeros.length);
  for (let g = 0; g < groups; g++) {
    const vals = unpackBits(stream.subarray(g * words, (g + 1) * words), bits, rows);
    for (let r = 0; r < rows; r++) zero[r * groups + g] = minusOne ? (vals[r] + 1) % K : vals[r];
  }
  return zero;
}

/**
 * Our LUT format's `qcodes`: codes (rows, cols) → [rows, ceil(cols·bits/32)], each row its own stream (a
 * row-tiled GEMV reads one contiguous run per output row).
 * @returns int32 words, row-major
 */
export function packRowCodes(codes: Uint8Array, rows: number, cols: number, bits: number): Int32Array {
  const words = packedWords(cols, bits);
  const out = new Int32Array(rows * words);
  const u = new Uint32Array(out.buffer);
  for (let r = 0; r < rows; r++) {
    packBits(codes.subarray(r * cols, (r + 1) * cols), bits, u.subarray(r * words, (r + 1) * words));
  }
  return out;
}

/** Inverse of {@link packRowCodes}. */
export function unpackRowCodes(qcodes: Int32Array, rows: number, cols: number, bits: number): Uint8Array {
  const words = packedWords(cols, bits);
  if (qcodes.length !== rows * words) {
    throw new Error(`Cannot unpack qcodes: expected [${rows}, ${words}] words, got ${qcodes.length}`);
  }
  const u = new Uint32Array(qcodes.buffer, qcodes.byteOffset, qcodes.length);
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    unpackBits(u.subarray(r * words, (r + 1) * words), bits, cols, codes.subarray(r * cols, (r + 1) * cols));
  }
  return codes;
}
