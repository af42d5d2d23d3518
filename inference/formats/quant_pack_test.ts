import assert from "node:assert/strict";
import {
  packBits,
  packQweight,
  packRowCodes,
  packZeros,
  unpackBits,
  unpackQweight,
  unpackRowCodes,
  unpackZeros,
} from "./quant_pack.ts";
import { seededRandom } from "../../tests/_gpu.ts";

function randomCodes(n: number, bits: number, seed: number): Uint8Array {
  const rand = seededRandom(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rand() * 2 ** bits));
}

/**
 * A line-by-line port of AutoGPTQ `QuantLinear.pack` (qlinear_cuda_old.py) for the qweight words of one
 * output column: `intweight` is the column's codes along the input dimension (length a multiple of 32).
 */
function autoGptqPackColumn(intweight: Uint8Array, bits: number): Uint32Array {
  const q = new Uint32Array((intweight.length / 32) * bits);
  let i = 0;
  let row = 0;
  while (row < q.length) {
    if (bits === 2 || bits === 4 || bits === 8) {
      for (let j = i; j < i + 32 / bits; j++) q[row] |= intweight[j] << (bits * (j - i));
      i += 32 / bits;
      row += 1;
    } else {
      for (let j = i; j < i + 10; j++) q[row] |= intweight[j] << (3 * (j - i));
      i += 10;
      q[row] |= intweight[i] << 30;
      row += 1;
      q[row] |= (intweight[i] >> 2) & 1;
      i += 1;
      for (let j = i; j < i + 10; j++) q[row] |= intweight[j] << (3 * (j - i) + 1);
      i += 10;
      q[row] |= intweight[i] << 31;
      row += 1;
      q[row] |= (intweight[i] >> 1) & 0x3;
      i += 1;
      for (let j = i; j < i + 10; j++) q[row] |= intweight[j] << (3 * (j - i) + 2);
      i += 10;
      row += 1;
    }
  }
  return q;
}

Deno.test("packQweight() equals AutoGPTQ's pack at 2, 3, 4 and 8 bits", () => {
  const rows = 5, cols = 96;
  for (const bits of [2, 3, 4, 8]) {
    const codes = randomCodes(rows * cols, bits, bits);
    const q = packQweight(codes, rows, cols, bits);
    assert.equal(q.length, (cols / 32) * bits * rows, "shape [C/32·bits, R]");
    for (let r = 0; r < rows; r++) {
      const want = autoGptqPackColumn(codes.subarray(r * cols, (r + 1) * cols), bits);
      const got = Uint32Array.from({ length: want.length }, (_, w) => q[w * rows + r]);
      assert.deepEqual(got, want, `bits ${bits}, column ${r}`);
    }
    assert.deepEqual(unpackQweight(q, rows, cols, bits), codes, `round trip at ${bits} bits`);
  }
});

Deno.test("packQweight() at 4 bits puts input column k of a word at bits 4k..4k+3", () => {
  const codes = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 15]); // one row, 9 columns → 2 words
  const q = packQweight(codes, 1, 9, 4);
  assert.deepEqual([...new Uint32Array(q.buffer)], [0x87654321, 0xf]);
});

Deno.test("packBits()/unpackBits() round-trip awkward lengths at every width", () => {
  for (const bits of [1, 2, 3, 4, 5, 7, 8]) {
    for (const n of [1, 10, 11, 31, 33, 172]) {
      const v = randomCodes(n, bits, n * 10 + bits);
      const words = packBits(v, bits);
      assert.equal(words.length, Math.ceil((n * bits) / 32));
      assert.deepEqual(unpackBits(words, bits, n), v, `bits ${bits}, n ${n}`);
    }
  }
});

Deno.test("packZeros() stores zero − 1 along the output dimension and wraps a zero of 0", () => {
  const rows = 8, groups = 2, bits = 4;
  // zero[r, g] = r + 1 + g (row-major (rows, groups)), except zero[3, 1] = 0.
  const zero = Float32Array.from(
    { length: rows * groups },
    (_, i) => (i % groups) + Math.floor(i / groups) + 1,
  );
  zero[3 * groups + 1] = 0;
  const { qzeros, wrapped } = packZeros(zero, rows, groups, bits);
  assert.equal(wrapped, 1);
  assert.equal(qzeros.length, groups * 1, "[G, R·bits/32]");
  // group 0 stores r = 0..7 → zero − 1 = r: nibbles 0..7
  assert.equal(qzeros[0] >>> 0, 0x76543210);
  // group 1 stores r + 1, except row 3 wrapped to 15
  assert.equal(qzeros[1] >>> 0, 0x8765f321);
  assert.deepEqual(unpackZeros(qzeros, rows, groups, bits), zero, "the reader maps the wrap back");
  assert.throws(() => packZeros(Float32Array.of(16), 1, 1, 4), /zero-point 16/);
  assert.throws(() => packZeros(Float32Array.of(1.5), 1, 1, 4), /zero-point 1.5/);
});

Deno.test("packZeros()/unpackZeros() round-trip 3-bit zeros over rows not a multiple of 32", () => {
  const rows = 172, groups = 3, bits = 3;
  const zero = Float32Array.from(randomCodes(rows * groups, bits, 3));
  const { qzeros } = packZeros(zero, rows, groups, bits);
  assert.equal(qzeros.length, groups * Math.ceil((rows * 3) / 32));
  assert.deepEqual(unpackZeros(qzeros, rows, groups, bits), zero);
  const v2 = unpackZeros(qzeros, rows, groups, bits, { minusOne: false });
  assert.ok(v2.every((z, i) => z === (zero[i] + 7) % 8), "v2 reading skips the + 1");
});

Deno.test("packRowCodes() gives each output row its own dense stream", () => {
  const rows = 3, cols = 172;
  for (const bits of [2, 3, 4]) {
    const codes = randomCodes(rows * cols, bits, bits + 40);
    const q = packRowCodes(codes, rows, cols, bits);
    const words = Math.ceil((cols * bits) / 32);
    assert.equal(q.length, rows * words);
    const row1 = new Uint32Array(q.buffer, words * 4, words);
    assert.deepEqual(unpackBits(row1, bits, cols), codes.subarray(cols, 2 * cols));
    assert.deepEqual(unpackRowCodes(q, rows, cols, bits), codes);
  }
  assert.throws(() => unpackRowCodes(new Int32Array(5), 3, 172, 3), /expected \[3, 17\] words/);
});
