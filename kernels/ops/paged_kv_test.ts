import assert from "node:assert/strict";
import { createPagedRopeAppend, type KvType, poolBytesPerPosition } from "./paged_kv.ts";
import { ropeFreqRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { f16BitsToF32, f32ToF16Bits, readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

const NONE = 0xffffffff;

function invFreqF32(headDim: number, theta: number): Float32Array {
  const f = Math.fround;
  return Float32Array.from({ length: headDim / 2 }, (_, i) => f(1 / f(f(theta) ** f((2 * i) / headDim))));
}

Deno.test("pagedRopeAppend() rotates q and k per row and writes k, v into their sequences' blocks", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createPagedRopeAppend(gpu);
  for (const kvType of ["f16", "f32", "int8"] as KvType[]) {
    for (const [nHeads, nKvHeads, headDim] of [[8, 4, 8], [4, 2, 64], [32, 8, 128]]) {
      await t.step(`${kvType} nHeads ${nHeads} nKvHeads ${nKvHeads} headDim ${headDim}`, async () => {
        const blockSize = 4;
        const maxBlocks = 6;
        const numBlocks = 20;
        const kvDim = nKvHeads * headDim;
        // Two slots with scattered blocks; slot 1's block 2 is unmapped; row 5 is padding, row 6 is past
        // the table (position 24 = maxBlocks · blockSize).
        const table = new Uint32Array(3 * maxBlocks).fill(NONE);
        table.set([7, 3, 12, 0, 19, 5], 0);
        table.set([1, 2, NONE, 9], 1 * maxBlocks);
        const rowSlot = [0, 0, 0, 1, 1, NONE, 0, 1];
        const rowPos = [0, 5, 23, 7, 9, 0, 24, 3];
        const rows = rowSlot.length;
        const q = randomF32(rows * nHeads * headDim, 3 + headDim);
        const k = randomF32(rows * kvDim, 5 + headDim);
        const v = randomF32(rows * kvDim, 7 + headDim);
        const invFreq = invFreqF32(headDim, 10000);
        const poolElems = numBlocks * blockSize * kvDim;
        const poolWords = numBlocks * blockSize * poolBytesPerPosition(kvType, nKvHeads, headDim) / 4;
        const sentinel = kvType === "f32"
          ? new Float32Array(poolElems).fill(-777)
          : new Uint32Array(poolWords).fill(0x55555555);
        const qBuf = uploadStorage(gpu, q, "q");
        const kPool = uploadStorage(gpu, sentinel, "kPool");
        const vPool = uploadStorage(gpu, sentinel, "vPool");
        const bound = kernel.bind({
          q: qBuf,
          k: uploadStorage(gpu, k, "k"),
          v: uploadStorage(gpu, v, "v"),
          invFreq: uploadStorage(gpu, invFreq, "invFreq"),
          rowPos: uploadStorage(gpu, Uint32Array.from(rowPos), "rowPos"),
          rowSlot: uploadStorage(gpu, Uint32Array.from(rowSlot), "rowSlot"),
          blockTable: uploadStorage(gpu, table, "table"),
          kPool,
          vPool,
          layout: { blockSize, maxBlocks, kvType },
          rows,
          nHeads,
          nKvHeads,
          headDim,
        });
        await checkPipelines(gpu);
        runPass(gpu, (pass) => bound.encode(pass));
        const gotQ = await readF32(gpu, qBuf, q.length);
        // int8: each (row, KV head) is headDim/4 words of codes (element 4w in the low byte), then its f32 scale
        const int8Elems = (words: Uint32Array) => {
          const out = new Float32Array(poolElems);
          const codes = new Int8Array(words.buffer);
          const scales = new Float32Array(words.buffer);
          const per = headDim / 4 + 1;
          for (let h = 0; h < poolElems / headDim; h++) {
            for (let c = 0; c < headDim; c++) {
              out[h * headDim + c] = codes[h * per * 4 + c] * scales[h * per + per - 1];
            }
          }
          return Array.from(out);
        };
        const readPool = async (b: GPUBuffer) =>
          kvType === "f16"
            ? Array.from(new Uint16Array((await readU32(gpu, b, poolElems / 2)).buffer), f16BitsToF32)
            : kvType === "int8"
            ? int8Elems(await readU32(gpu, b, poolWords))
            : Array.from(await readF32(gpu, b, poolElems));
        const gotK = await readPool(kPool);
        const gotV = await readPool(vPool);
        // f16 and f32 round each element; int8 is within half a code step of it (max |x| of its head row / 254)
        const round = (x: number) => kvType === "f16" ? f16BitsToF32(f32ToF16Bits(x)) : Math.fround(x);
        const halfStep = (xs: ArrayLike<number>, c: number) => {
          const h = Math.floor(c / headDim) * headDim;
          return Math.max(...Array.from({ length: headDim }, (_, e) => Math.abs(xs[h + e]))) / 254;
        };
        const untouched = int8Elems(new Uint32Array(poolWords).fill(0x55555555))[0];
        const untouchedAt = kvType === "f16" ? f16BitsToF32(0x5555) : kvType === "int8" ? untouched : -777;
        const written = new Set<number>();
        for (let r = 0; r < rows; r++) {
          const pos0 = rowPos[r];
          const wantQ = ropeFreqRef(q.subarray(r * nHeads * headDim, (r + 1) * nHeads * headDim), invFreq, {
            rows: 1,
            nHeads,
            headDim,
            pos0,
          });
          const err = maxAbsDiff(gotQ.subarray(r * nHeads * headDim, (r + 1) * nHeads * headDim), wantQ);
          assert.ok(err <= 2e-6, `row ${r} q: max |diff| ${err}`);
          const slot = rowSlot[r];
          const b = slot === NONE
            ? NONE
            : Math.floor(pos0 / blockSize) < maxBlocks
            ? table[slot * maxBlocks + Math.floor(pos0 / blockSize)]
            : NONE;
          if (b === NONE) continue;
          const phys = b * blockSize + pos0 % blockSize;
          written.add(phys);
          const wantK = ropeFreqRef(k.subarray(r * kvDim, (r + 1) * kvDim), invFreq, {
            rows: 1,
            nHeads: nKvHeads,
            headDim,
            pos0,
          });
          const vRow = v.subarray(r * kvDim, (r + 1) * kvDim);
          for (let c = 0; c < kvDim; c++) {
            const gk = gotK[phys * kvDim + c];
            const gv = gotV[phys * kvDim + c];
            if (kvType === "int8") {
              const tk = halfStep(wantK, c) * 1.001 + 4e-6;
              assert.ok(Math.abs(gk - wantK[c]) <= tk, `row ${r} k[${c}]: ${gk} vs ${wantK[c]}`);
              assert.ok(Math.abs(gv - vRow[c]) <= halfStep(vRow, c) * 1.001 + 1e-6, `row ${r} v[${c}]`);
              continue;
            }
            assert.ok(Math.abs(gk - round(wantK[c])) <= (kvType === "f16" ? 2e-3 : 2e-6), `row ${r} k[${c}]`);
            assert.equal(gv, round(vRow[c]), `row ${r} v[${c}]`);
          }
        }
        assert.equal(
          written.size,
          5,
          "rows 0–3 and 7 are written; 4 (unmapped block), 5 (padding), 6 (past the table) are not",
        );
        for (let p = 0; p < numBlocks * blockSize; p++) {
          if (written.has(p)) continue;
          assert.equal(gotK[p * kvDim], untouchedAt, `pool row ${p} untouched`);
          assert.equal(gotV[p * kvDim + kvDim - 1], untouchedAt, `pool row ${p} untouched`);
        }
      });
    }
  }
  gpu.device.destroy();
});
