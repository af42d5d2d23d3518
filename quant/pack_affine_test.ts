import assert from "node:assert/strict";
import {
  type AffineParts,
  fromAutoGptq,
  packAffine,
  packAutoGptq,
  toAutoGptq,
  unpackAffine,
} from "./pack_affine.ts";
import { seededRandom } from "../tests/_gpu.ts";

/** Random parts with f16-exact scales and integer zeros in [1, 2^bits] (valid for AutoGPTQ v1 too). */
function randomParts(
  { bits, rows, cols, groupSize, actOrder }: {
    bits: 2 | 3 | 4;
    rows: number;
    cols: number;
    groupSize: number;
    actOrder: boolean;
  },
  seed: number,
): AffineParts {
  const rand = seededRandom(seed);
  const nGroups = groupSize ? Math.ceil(cols / groupSize) : 1;
  const levels = 1 << bits;
  const parts: AffineParts = {
    rows,
    cols,
    bits,
    codes: Uint8Array.from({ length: rows * cols }, () => Math.floor(rand() * levels)),
    scale: Float32Array.from({ length: rows * nGroups }, () => Math.floor(1 + rand() * 1000) / 1024),
    zero: Float32Array.from({ length: rows * nGroups }, () => 1 + Math.floor(rand() * levels)),
  };
  if (actOrder) {
    const rank = Int32Array.from({ length: cols }, (_, i) => i);
    for (let i = cols - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [rank[i], rank[j]] = [rank[j], rank[i]];
    }
    parts.gIdx = rank.map((r) => groupSize ? Math.floor(r / groupSize) : 0);
  }
  return parts;
}

function assertSameParts(got: AffineParts, want: AffineParts, groupSize: number, what: string) {
  assert.deepEqual(got.codes, want.codes, `${what}: codes`);
  assert.deepEqual(got.scale, want.scale, `${what}: scale`);
  assert.deepEqual(got.zero, want.zero, `${what}: zero`);
  const gIdx = want.gIdx ??
    Int32Array.from({ length: want.cols }, (_, c) => groupSize ? Math.floor(c / groupSize) : 0);
  assert.deepEqual(Int32Array.from(got.gIdx ?? []), Int32Array.from(gIdx), `${what}: g_idx`);
}

const SHAPES = [
  { rows: 3, cols: 100 },
  { rows: 5, cols: 129 },
  { rows: 2, cols: 4097 },
];

Deno.test("packAffine() round-trips through unpackAffine for every bits, group and order", () => {
  for (const bits of [2, 3, 4] as const) {
    for (const groupSize of [0, 32, 64, 128]) {
      for (const actOrder of [false, true]) {
        for (const { rows, cols } of SHAPES) {
          const what = `${bits}-bit g${groupSize} ${actOrder ? "act-order" : "static"} ${rows}×${cols}`;
          const q = randomParts({ bits, rows, cols, groupSize, actOrder }, bits * 100 + groupSize + cols);
          const p = packAffine(q, { groupSize });
          assert.equal(p.codes.length, rows * Math.ceil(cols / 32) * bits, `${what}: dense code words`);
          assert.equal(
            p.perm !== undefined,
            actOrder && groupSize > 0 && cols > groupSize,
            `${what}: perm only when groups move`,
          );
          if (p.perm) {
            // Kernel order makes every group contiguous.
            for (let j = 0; j < cols; j++) assert.equal(q.gIdx![p.perm[j]], Math.floor(j / groupSize));
          }
          assertSameParts(unpackAffine(p), q, groupSize, what);
        }
      }
    }
  }
});

Deno.test("packAffine() writes little-endian bit streams (known answers)", () => {
  const one = (bits: 2 | 3 | 4, codes: number[]) =>
    packAffine({
      rows: 1,
      cols: codes.length,
      bits,
      codes: Uint8Array.from(codes),
      scale: Float32Array.of(0.5),
      zero: Float32Array.of(3),
    }, { groupSize: 0 });
  // 4-bit: code k at bits 4k; padded to 32 columns with zero codes.
  assert.deepEqual([...one(4, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).codes], [0x76543210, 0x98, 0, 0]);
  // 2-bit: 16 codes per word.
  assert.deepEqual([...one(2, [3, 0, 1, 2]).codes], [0b10_01_00_11, 0]);
  // 3-bit: code 10 straddles words 0 and 1 (bits 30..32), code 21 words 1 and 2 (bits 63..65).
  const c3 = new Array(32).fill(0);
  c3[10] = 0b101;
  c3[21] = 0b011;
  assert.deepEqual([...one(3, c3).codes], [0x40000000, 0x80000001, 0x00000001]);
  // f16 scale 0.5 = 0x3800 low, zero 3 = 0x4200 high.
  assert.equal(one(4, [1]).scaleZero[0], 0x42003800);
});

Deno.test("packAffine() rejects what the kernel cannot run", () => {
  const q = randomParts({ bits: 4, rows: 2, cols: 64, groupSize: 32, actOrder: false }, 1);
  assert.throws(() => packAffine(q, { groupSize: 48 }), /groupSize must be 0 or a multiple of 32, got 48/);
  assert.throws(() => packAffine(q, { groupSize: 64 }), /expected 2×1 scales and zeros, got 4 and 4/);
  assert.throws(() => packAffine({ ...q, bits: 3 }, { groupSize: 32 }), /code \d+ at row 0 exceeds 3 bits/);
  // g_idx whose groups are not all groupSize wide (here group 0 holds 33 columns).
  const uneven = Int32Array.from({ length: 64 }, (_, c) => c <= 32 ? 0 : 1);
  assert.throws(() => packAffine({ ...q, gIdx: uneven }, { groupSize: 32 }), /groups must hold 32 columns/);
  // A per-row g_idx of zeros, or c // groupSize, needs no permutation.
  const perRow = randomParts({ bits: 4, rows: 2, cols: 64, groupSize: 0, actOrder: false }, 2);
  assert.equal(packAffine({ ...perRow, gIdx: new Int32Array(64) }, { groupSize: 0 }).perm, undefined);
  const plain = Int32Array.from({ length: 64 }, (_, c) => c >> 5);
  assert.equal(packAffine({ ...q, gIdx: plain }, { groupSize: 32 }).perm, undefined);
});

Deno.test("fromAutoGptq() inverts AutoGPTQ's own packing loops", () => {
  for (const bits of [2, 3, 4] as const) {
    for (const [groupSize, actOrder] of [[0, false], [32, false], [128, true], [32, true]] as const) {
      const what = `${bits}-bit g${groupSize} ${actOrder ? "act-order" : "static"}`;
      const q = randomParts({ bits, rows: 64, cols: 256, groupSize, actOrder }, bits + groupSize);
      const t = toAutoGptq(q, { groupSize });
      assert.equal(t.qweight.length, (256 * bits / 32) * 64, `${what}: qweight [C·b/32, R]`);
      assert.equal(t.qzeros.length, (groupSize ? 256 / groupSize : 1) * (64 * bits / 32), `${what}: qzeros`);
      const opts = { bits, outDim: 64, inDim: 256, groupSize: groupSize || -1 };
      assertSameParts(fromAutoGptq(t, opts), q, groupSize, what);
      assertSameParts(unpackAffine(packAutoGptq(t, opts)), q, groupSize, `${what} via kernel layout`);
    }
  }
});

Deno.test("fromAutoGptq() reads hand-packed v1 and v2 tensors", () => {
  // R = 8 output columns, C = 8 input columns, 4-bit, one group: column r's codes are r + c (mod 16).
  const qweight = Int32Array.from({ length: 8 }, (_, r) => {
    let w = 0;
    for (let c = 0; c < 8; c++) w |= ((r + c) & 15) << (4 * c);
    return w;
  });
  const qzeros = Int32Array.of(0x76543210); // stored zero − 1 of output column r is r
  const scales = Uint16Array.from({ length: 8 }, () => 0x3c00); // 1.0
  const opts = { bits: 4, outDim: 8, inDim: 8, groupSize: 128 } as const;
  const v1 = fromAutoGptq({ qweight, qzeros, scales }, opts);
  assert.deepEqual([...v1.codes.subarray(8, 16)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...v1.zero], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...v1.scale], new Array(8).fill(1));
  const v2 = fromAutoGptq({ qweight, qzeros, scales }, { ...opts, zeroOffset: 0 });
  assert.deepEqual([...v2.zero], [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.throws(
    () => fromAutoGptq({ qweight, qzeros, scales }, { ...opts, inDim: 16 }),
    /Cannot read AutoGPTQ "qweight": expected 16 elements, got 8/,
  );
});
