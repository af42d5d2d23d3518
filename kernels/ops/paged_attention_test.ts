import assert from "node:assert/strict";
import { createPagedAttention, pagedMaxSplits } from "./paged_attention.ts";
import { createPagedFlashAttention } from "./paged_flash_attention.ts";
import { createDispatchBuffer, MAX_ROW_SPLITS } from "./batch_rows.ts";
import type { KvType } from "./paged_kv.ts";
import { attentionRef } from "../core/reference.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import {
  createStorage,
  f16BitsToF32,
  f32ToF16Bits,
  readF32,
  runPass,
  uploadStorage,
  writeBuffer,
} from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

const NONE = 0xffffffff;

interface Case {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  blockSize: number;
  /** per slot: its length (positions filled) */
  lens: number[];
  /** rows: [slot, pos] (slot −1 = padding) */
  rows: [number, number][];
  /** positions per split (batch_rows.ts's splitSpan) */
  span: number;
  window?: number;
  softcap?: number;
}

/** A prefill chunk of slot 1 (positions 30..37), decode rows of three other slots, and a padding row. */
const MIXED: [number, number][] = [
  [0, 4],
  ...Array.from({ length: 8 }, (_, i) => [1, 30 + i] as [number, number]),
  [
    2,
    99,
  ],
  [-1, 0],
  [3, 0],
];

/**
 * A prefill forward: pieces of three prompts (70, 90 and 3 rows) and padding, so the tiled kernel's blocks of
 * rows (64 or 128) hold rows of two or three sequences.
 */
const PIECES: [number, number][] = [
  ...Array.from({ length: 70 }, (_, i) => [0, i] as [number, number]),
  ...Array.from({ length: 90 }, (_, i) => [1, 30 + i] as [number, number]),
  ...Array.from({ length: 3 }, (_, i) => [2, 97 + i] as [number, number]),
  [-1, 0],
  [-1, 0],
];

const CASES: Case[] = [
  { nHeads: 8, nKvHeads: 4, headDim: 8, blockSize: 16, lens: [5, 38, 100, 1], rows: MIXED, span: 1024 },
  { nHeads: 8, nKvHeads: 2, headDim: 32, blockSize: 16, lens: [70, 120, 100], rows: PIECES, span: 1024 },
  { nHeads: 8, nKvHeads: 2, headDim: 32, blockSize: 16, lens: [70, 120, 100], rows: PIECES, span: 40 },
  {
    nHeads: 32,
    nKvHeads: 8,
    headDim: 128,
    blockSize: 16,
    lens: [70, 120, 100],
    rows: PIECES,
    span: 48,
    window: 37,
    softcap: 3,
  },
  { nHeads: 8, nKvHeads: 4, headDim: 64, blockSize: 16, lens: [5, 38, 100, 1], rows: MIXED, span: 32 },
  { nHeads: 32, nKvHeads: 8, headDim: 128, blockSize: 16, lens: [5, 38, 300, 1], rows: MIXED, span: 64 },
  { nHeads: 4, nKvHeads: 4, headDim: 16, blockSize: 4, lens: [200, 38, 100, 1], rows: MIXED, span: 3 },
];

/** Each kernel, and builds of it whose rows must come out with the same bits (the tiled kernel's block sizes). */
const KERNELS = [
  // staged keys: f16 pools only (f32 ones take the plain build, so the check holds trivially there)
  {
    name: "per-row",
    create: createPagedAttention,
    builds: [(gpu: Gpu) => createPagedAttention(gpu, { stageKeys: true })],
  },
  {
    name: "tiled",
    create: (gpu: Gpu) => createPagedFlashAttention(gpu, { build: "rows" }),
    builds: [32, 64, 128].map((WG) => (gpu: Gpu) => createPagedFlashAttention(gpu, { WG, build: "rows" })),
  },
  {
    name: "tiled, register-blocked",
    create: (gpu: Gpu) => createPagedFlashAttention(gpu, { build: "blocked" }),
    builds: [16, 32].map((BR) => (gpu: Gpu) => createPagedFlashAttention(gpu, { build: "blocked", BR })),
  },
  {
    name: "tiled, two rows per invocation",
    create: (gpu: Gpu) => createPagedFlashAttention(gpu, { R: 2, build: "rows" }),
    builds: [32, 64, 128].map((WG) => (gpu: Gpu) =>
      createPagedFlashAttention(gpu, { WG, R: 2, build: "rows" })
    ),
  },
];

for (const { name, create, builds } of KERNELS) {
  Deno.test(`pagedAttention() ${name} matches the f64 reference per row for mixed prefill and decode rows`, async (t) => {
    const gpu = await testGpu();
    if (!gpu) return;
    const kernel = create(gpu);
    for (const kvType of ["f16", "f32", "int8"] as KvType[]) {
      for (const c of CASES) {
        await t.step(`${kvType} ${JSON.stringify({ ...c, rows: c.rows.length })}`, async () => {
          const { nHeads, nKvHeads, headDim, blockSize, lens } = c;
          const kvDim = nKvHeads * headDim;
          const maxBlocks = Math.ceil(Math.max(...lens) / blockSize) + 1;
          const numBlocks = lens.reduce((n, l) => n + Math.ceil(l / blockSize), 0) + 3;
          // Blocks handed out in a shuffled order, so neighbours in a sequence are far apart in the pool.
          const rand = seededRandom(numBlocks);
          const free = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rand() - 0.5);
          const table = new Uint32Array(lens.length * maxBlocks).fill(NONE);
          const round = (x: number) => kvType === "f16" ? f16BitsToF32(f32ToF16Bits(x)) : Math.fround(x);
          const kPool = new Float32Array(numBlocks * blockSize * kvDim).fill(NaN);
          const vPool = new Float32Array(numBlocks * blockSize * kvDim).fill(NaN);
          // int8 pools: each (row, KV head) as its codes and scale (a NaN scale where nothing was written)
          const kInt8 = new Int8Rows(numBlocks * blockSize, nKvHeads, headDim);
          const vInt8 = new Int8Rows(numBlocks * blockSize, nKvHeads, headDim);
          const seqK: Float32Array[] = [];
          const seqV: Float32Array[] = [];
          lens.forEach((len, s) => {
            const kq = int8Rows(randomF32(len * kvDim, 10 + s), headDim);
            const vq = int8Rows(randomF32(len * kvDim, 20 + s), headDim);
            const k = kvType === "int8" ? kq.values : randomF32(len * kvDim, 10 + s).map(round);
            const v = kvType === "int8" ? vq.values : randomF32(len * kvDim, 20 + s).map(round);
            seqK.push(k);
            seqV.push(v);
            for (let b = 0; b < Math.ceil(len / blockSize); b++) table[s * maxBlocks + b] = free.pop()!;
            for (let p = 0; p < len; p++) {
              const phys = table[s * maxBlocks + Math.floor(p / blockSize)] * blockSize + p % blockSize;
              kPool.set(k.subarray(p * kvDim, (p + 1) * kvDim), phys * kvDim);
              vPool.set(v.subarray(p * kvDim, (p + 1) * kvDim), phys * kvDim);
              kInt8.set(phys, kq, p);
              vInt8.set(phys, vq, p);
            }
          });
          const upload = (x: Float32Array, label: string) =>
            kvType === "f32"
              ? uploadStorage(gpu, x, label)
              : kvType === "int8"
              ? uploadStorage(gpu, (x === kPool ? kInt8 : vInt8).words(), label)
              : uploadStorage(gpu, new Uint16Array(Array.from(x, (e) => f32ToF16Bits(e))), label);
          const rows = c.rows.length;
          const qDim = nHeads * headDim;
          const q = randomF32(rows * qDim, rows + qDim, 3);
          const out = createStorage(gpu, rows * qDim * 4, "out");
          // What batch_rows.ts's prepare writes: each row's split count and the grid over the largest.
          const splits = c.rows.map(([s, p]) =>
            Math.max(1, Math.min(MAX_ROW_SPLITS, Math.ceil((s < 0 ? 1 : p + 1) / c.span)))
          );
          const cap = Math.max(...splits);
          const dispatch = createDispatchBuffer(gpu, "dispatch");
          writeBuffer(gpu, dispatch, Uint32Array.of(rows * nKvHeads * cap, 1, 1, cap));
          const args = {
            q: uploadStorage(gpu, q, "q"),
            kPool: upload(kPool, "kPool"),
            vPool: upload(vPool, "vPool"),
            rowPos: uploadStorage(gpu, Uint32Array.from(c.rows, ([, p]) => p), "rowPos"),
            rowSlot: uploadStorage(gpu, Uint32Array.from(c.rows, ([s]) => s < 0 ? NONE : s), "rowSlot"),
            blockTable: uploadStorage(gpu, table, "table"),
            out,
            layout: { blockSize, maxBlocks, kvType },
            rows,
            nHeads,
            nKvHeads,
            headDim,
            rowSplits: uploadStorage(gpu, Uint32Array.from(splits), "rowSplits"),
            dispatch,
            maxSplits: pagedMaxSplits(Math.max(...lens), c.span),
            window: c.window ?? null,
            softcap: c.softcap ?? null,
          };
          const bound = kernel.bind(args);
          await checkPipelines(gpu);
          runPass(gpu, (pass) => bound.encode(pass));
          const got = await readF32(gpu, out, rows * qDim);
          for (const build of builds) {
            const other = createStorage(gpu, rows * qDim * 4, "out");
            const b = build(gpu).bind({ ...args, out: other });
            await checkPipelines(gpu);
            runPass(gpu, (pass) => b.encode(pass));
            assert.deepEqual(await readF32(gpu, other, rows * qDim), got, "the same bits in another build");
          }
          c.rows.forEach(([s, pos], r) => {
            const row = got.subarray(r * qDim, (r + 1) * qDim);
            if (s < 0) {
              assert.equal(maxAbsDiff(row, new Float32Array(qDim)), 0, "padding row outputs zeros");
              return;
            }
            const want = attentionRef(q.subarray(r * qDim, (r + 1) * qDim), seqK[s], seqV[s], {
              rows: 1,
              nHeads,
              nKvHeads,
              headDim,
              pos0: pos,
              window: c.window ?? 0,
              softcap: c.softcap ?? 0,
            });
            const err = maxAbsDiff(row, want);
            assert.ok(err <= 3e-6, `row ${r} (slot ${s}, pos ${pos}): max |diff| ${err}`);
          });
        });
      }
    }
    await t.step("a row's result does not depend on the other rows of the batch", async () => {
      // Row 0 (slot 0 at position 99) alone, then with 9 other rows: its output bits must not change.
      const { nHeads, nKvHeads, headDim } = { nHeads: 8, nKvHeads: 4, headDim: 64 };
      const kvDim = nKvHeads * headDim;
      const blockSize = 16;
      const maxBlocks = 8;
      const table = Uint32Array.from({ length: 2 * maxBlocks }, (_, i) => i);
      const pool = (seed: number) =>
        uploadStorage(gpu, randomF32(2 * maxBlocks * blockSize * kvDim, seed), "pool");
      const kPool = pool(1);
      const vPool = pool(2);
      const q = randomF32(10 * nHeads * headDim, 3, 3);
      const run = async (rows: number) => {
        const pos = Array.from({ length: rows }, (_, r) => r === 0 ? 99 : 20 + r * 9);
        const splits = pos.map((p) => Math.ceil((p + 1) / 16));
        const dispatch = createDispatchBuffer(gpu, "dispatch");
        writeBuffer(
          gpu,
          dispatch,
          Uint32Array.of(rows * nKvHeads * Math.max(...splits), 1, 1, Math.max(...splits)),
        );
        const out = createStorage(gpu, rows * nHeads * headDim * 4, "out");
        const bound = kernel.bind({
          q: uploadStorage(gpu, q.subarray(0, rows * nHeads * headDim), "q"),
          kPool,
          vPool,
          rowPos: uploadStorage(gpu, Uint32Array.from(pos), "rowPos"),
          rowSlot: uploadStorage(gpu, Uint32Array.from(pos, (_, r) => r % 2), "rowSlot"),
          blockTable: uploadStorage(gpu, table, "table"),
          out,
          layout: { blockSize, maxBlocks, kvType: "f32" },
          rows,
          nHeads,
          nKvHeads,
          headDim,
          rowSplits: uploadStorage(gpu, Uint32Array.from(splits), "rowSplits"),
          dispatch,
          maxSplits: 8,
        });
        runPass(gpu, (pass) => bound.encode(pass));
        return await readF32(gpu, out, nHeads * headDim);
      };
      assert.deepEqual(await run(10), await run(1));
    });
    gpu.device.destroy();
  });
}

/**
 * Rows quantized as the int8 pool holds them (paged_kv.ts): per head row of headDim, scale = max|x| / 127,
 * code = round(x / scale); `values` are code · scale in f32 (what the kernels decode).
 */
function int8Rows(
  x: Float32Array,
  headDim: number,
): { codes: Int8Array; scales: Float32Array; values: Float32Array } {
  const heads = x.length / headDim;
  const codes = new Int8Array(x.length);
  const scales = new Float32Array(heads);
  const values = new Float32Array(x.length);
  for (let h = 0; h < heads; h++) {
    const row = x.subarray(h * headDim, (h + 1) * headDim);
    const max = Math.max(...Array.from(row, Math.abs));
    scales[h] = max / 127;
    row.forEach((e, i) => {
      codes[h * headDim + i] = max > 0 ? Math.round((e * 127) / max) : 0;
      values[h * headDim + i] = Math.fround(codes[h * headDim + i] * scales[h]);
    });
  }
  return { codes, scales, values };
}

/** An int8 pool being filled: rows of already-quantized values, packed as the kernels read them. */
class Int8Rows {
  #codes: Int8Array;
  #scales: Float32Array;

  constructor(rows: number, readonly nKvHeads: number, readonly headDim: number) {
    this.#codes = new Int8Array(rows * nKvHeads * headDim);
    this.#scales = new Float32Array(rows * nKvHeads).fill(NaN);
  }

  /** Pool row `row` holds position `p` of what int8Rows quantized. */
  set(row: number, q: { codes: Int8Array; scales: Float32Array }, p: number): void {
    const kvDim = this.nKvHeads * this.headDim;
    this.#codes.set(q.codes.subarray(p * kvDim, (p + 1) * kvDim), row * kvDim);
    this.#scales.set(q.scales.subarray(p * this.nKvHeads, (p + 1) * this.nKvHeads), row * this.nKvHeads);
  }

  /** The pool's words: per (row, KV head) headDim / 4 words of codes, then the f32 scale. */
  words(): Uint32Array {
    const per = this.headDim / 4 + 1;
    const out = new Uint32Array(this.#scales.length * per);
    const bytes = new Int8Array(out.buffer);
    const floats = new Float32Array(out.buffer);
    for (let h = 0; h < this.#scales.length; h++) {
      bytes.set(this.#codes.subarray(h * this.headDim, (h + 1) * this.headDim), h * per * 4);
      floats[h * per + per - 1] = this.#scales[h];
    }
    return out;
  }
}
