import assert from "node:assert/strict";
import { type LutParts, packLut, packLutTensors, unpackLut } from "./pack_lut.ts";
import { lutCodeWords } from "../kernels/matmul/matmul_lut.ts";
import { f16BitsToF32, f32ToF16Bits } from "../kernels/core/buffers.ts";
import { linearTensors } from "../inference/model/quant_format.ts";
import { seededRandom } from "../tests/_gpu.ts";

function randomParts(bits: 2 | 3 | 4, rows: number, cols: number, seed: number): LutParts {
  const rand = seededRandom(seed);
  const levels = 1 << bits;
  return {
    rows,
    cols,
    bits,
    codes: Uint8Array.from({ length: rows * cols }, () => Math.floor(rand() * levels)),
    lut: Float32Array.from({ length: rows * levels }, () => f16BitsToF32(f32ToF16Bits(rand() * 4 - 2))),
  };
}

/** The on-disk tensors quant_format.ts writes for a leanquant-nu result, as typed views. */
function diskTensors(p: LutParts) {
  const [lut, qcodes] = linearTensors("m", { ...p, method: "leanquant-nu", loss: 0, dampUsed: 0 }).tensors;
  assert.deepEqual([lut.name, qcodes.name], ["m.lut", "m.qcodes"]);
  return {
    lut: new Uint16Array(lut.data.slice().buffer),
    qcodes: new Int32Array(qcodes.data.slice().buffer),
  };
}

const SHAPES: [2 | 3 | 4, number, number][] = [
  [2, 1, 1],
  [2, 5, 33],
  [2, 3, 130],
  [3, 1, 7],
  [3, 4, 65],
  [3, 7, 100],
  [4, 2, 63],
  [4, 3, 64],
  [4, 5, 97],
];

Deno.test("packLut() round-trips codes and f16 LUTs through unpackLut()", () => {
  for (const [bits, rows, cols] of SHAPES) {
    const p = randomParts(bits, rows, cols, bits * 100 + rows * 10 + cols);
    const packed = packLut(p);
    assert.equal(packed.codes.length, Math.ceil(cols / 32) * rows * bits, "b words per 32-column piece");
    assert.equal(packed.lut.length, rows * (1 << bits) / 2);
    assert.deepEqual(unpackLut(packed), p, `${bits}-bit ${rows}×${cols}`);
  }
});

Deno.test("packLut() stores rows one after another, pieces of b words, codes LSB first", () => {
  // 4-bit, 2 rows × 40 columns: row o has code (c + o) % 16 at column c.
  const codes = Uint8Array.from({ length: 80 }, (_, i) => (i % 40 + Math.floor(i / 40)) % 16);
  const packed = packLut({ rows: 2, cols: 40, bits: 4, codes, lut: new Float32Array(32) });
  // row 0: piece 0 (columns 0..31) in words 0..3 → 0x76543210 …; piece 1 (columns 32..39, zero-padded)
  // in words 4..7; row 1 starts at word 8
  assert.equal(packed.codes[0], 0x76543210);
  assert.equal(packed.codes[3], 0xfedcba98);
  assert.equal(packed.codes[4], 0x76543210);
  assert.equal(packed.codes[5], 0);
  assert.equal(packed.codes[8], 0x87654321);
  assert.equal(packed.codes[12], 0x87654321);

  // 3-bit: column 10 straddles words 0 and 1 of its piece, column 21 words 1 and 2.
  const one = (col: number) => {
    const c = new Uint8Array(32);
    c[col] = 7;
    return Array.from(packLut({ rows: 1, cols: 32, bits: 3, codes: c, lut: new Float32Array(8) }).codes);
  };
  assert.deepEqual(one(10), [0xc0000000, 0x1, 0]);
  assert.deepEqual(one(21), [0, 0x80000000, 0x3]);
  assert.deepEqual(one(31), [0, 0, 0xe0000000]);

  // LUT: entries 2i, 2i + 1 as the low and high f16 of word i
  const lut = Float32Array.from([1, -2, 0.5, 65504]);
  const l = packLut({ rows: 1, cols: 1, bits: 2, codes: new Uint8Array(1), lut }).lut;
  assert.deepEqual(Array.from(l), [(0xc000 << 16 | 0x3c00) >>> 0, (0x7bff << 16 | 0x3800) >>> 0]);
});

Deno.test("packLutTensors() gives the same words as packLut() from what quant_format.ts writes", () => {
  for (const [bits, rows, cols] of SHAPES) {
    const p = randomParts(bits, rows, cols, bits * 7 + rows * 3 + cols);
    const t = diskTensors(p);
    assert.deepEqual(
      packLutTensors(t, { bits, outDim: rows, inDim: cols }),
      packLut(p),
      `${bits}-bit ${rows}×${cols}`,
    );
  }
});

Deno.test("packLutTensors() ignores the padding bits of each row stream", () => {
  const p = randomParts(3, 3, 45, 9);
  const t = diskTensors(p);
  const rowWords = Math.ceil(45 * 3 / 32); // 135 bits: the last word holds 7 code bits
  for (let o = 0; o < 3; o++) t.qcodes[o * rowWords + rowWords - 1] |= ~0x7f;
  const packed = packLutTensors(t, { bits: 3, outDim: 3, inDim: 45 });
  assert.deepEqual(packed, packLut(p));
  assert.equal(packed.codes.length, lutCodeWords(3, 3, 45));
});

Deno.test("packLut() and packLutTensors() reject malformed input with the offending value", () => {
  const p = randomParts(4, 2, 10, 1);
  assert.throws(() => packLut({ ...p, bits: 5 }), /bits must be 2, 3 or 4, got 5/);
  assert.throws(() => packLut({ ...p, bits: 2 }), /expected 2×4 LUT entries, got 32|exceeds 2 bits/);
  const noLut: Partial<LutParts> = { ...p };
  delete noLut.lut;
  assert.throws(() => packLut(noLut as LutParts), /has no LUT/);
  assert.throws(() => packLut({ ...p, codes: p.codes.subarray(1) }), /expected 20 codes, got 19/);
  const bad = { ...p, codes: p.codes.slice() };
  bad.codes[13] = 16;
  assert.throws(() => packLut(bad), /code 16 at row 1, column 3 exceeds 4 bits/);
  const t = diskTensors(p);
  assert.throws(
    () => packLutTensors(t, { bits: 4, outDim: 2, inDim: 20 }),
    /qcodes must hold \[2, 3\] words, got 4/,
  );
  assert.throws(
    () => packLutTensors({ ...t, lut: t.lut.subarray(2) }, { bits: 4, outDim: 2, inDim: 10 }),
    /lut must hold \[2, 16\] entries, got 30/,
  );
});
