import assert from "node:assert/strict";
import { createGptqBlock } from "./gptq_block.ts";
import { rowPanel } from "./gptq_update.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readBuffer, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { affineCode, minMaxParams, nearestCode } from "../../quant/reference/reference_grid.ts";
import { prepareLayer } from "../../quant/reference/reference_hessian.ts";
import { randomSpd } from "../../quant/reference/_reference_cases.ts";

interface BlockCase {
  rows: number;
  cols: number;
  i1: number;
  count: number;
  blockSize: number;
  bits: number;
  lut: boolean;
  groupSize: number;
  feedback: boolean;
}

/** The reference's inner loop (quant/reference.ts gptqReference, one block) in f64. */
function blockRef(c: BlockCase, W: Float32Array, U: Float64Array, grid: Float32Array, nGroups: number) {
  const { rows, cols, i1, count, bits } = c;
  const K = 2 ** bits;
  const codes = new Uint8Array(rows * count);
  const Q = new Float64Array(rows * count);
  const err = new Float64Array(count * rows);
  const loss = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const W1 = Float64Array.from({ length: count }, (_, i) => W[r * cols + i1 + i]);
    for (let i = 0; i < count; i++) {
      const k = i1 + i;
      let code: number, q: number;
      if (c.lut) {
        code = nearestCode(grid.subarray(r * K, (r + 1) * K), W1[i]);
        q = grid[r * K + code];
      } else {
        const at = 2 * (r * nGroups + (c.groupSize > 0 ? Math.floor(k / c.groupSize) : 0));
        const p = { scale: grid[at], zero: grid[at + 1] };
        code = affineCode(W1[i], p, K - 1);
        q = p.scale * (code - p.zero);
      }
      const e = (W1[i] - q) / U[k * cols + k];
      [codes[r * count + i], Q[r * count + i], err[i * rows + r]] = [code, q, e];
      loss[r] += e * e / 2;
      if (c.feedback) { for (let j = i + 1; j < count; j++) W1[j] -= e * U[k * cols + i1 + j]; }
    }
  }
  return { codes, Q, err, loss };
}

/** Seeded grid: min-max params per row/group of W, or a sorted random LUT spanning each row. */
function makeGrid(c: BlockCase, W: Float32Array): { grid: Float32Array; nGroups: number } {
  const { rows, cols, bits, groupSize: g } = c;
  const K = 2 ** bits;
  if (c.lut) {
    const rand = seededRandom(rows + cols);
    const grid = new Float32Array(rows * K);
    for (let r = 0; r < rows; r++) {
      const row = Array.from({ length: K }, () => (rand() * 2 - 1) * 1.5).sort((a, b) => a - b);
      grid.set(row, r * K);
    }
    return { grid, nGroups: 1 };
  }
  const nGroups = g > 0 ? Math.ceil(cols / g) : 1;
  const width = g > 0 ? g : cols;
  const grid = new Float32Array(rows * nGroups * 2);
  for (let r = 0; r < rows; r++) {
    for (let gi = 0; gi < nGroups; gi++) {
      const p = minMaxParams(W.subarray(r * cols + gi * width, r * cols + Math.min((gi + 1) * width, cols)), {
        bits,
      });
      grid.set([p.scale, p.zero], 2 * (r * nGroups + gi));
    }
  }
  return { grid, nGroups };
}

async function runCase(gpu: Gpu, c: BlockCase) {
  const { rows, cols, i1, count } = c;
  const W = randomF32(rows * cols, rows * 7 + cols, 1);
  const U = prepareLayer(W, randomSpd(cols, cols, { outlier: 1 }), { factor: "reversal" }).Hinv;
  const { grid, nGroups } = makeGrid(c, W);
  const want = blockRef(c, W, U, grid, nGroups);
  const codeStride = Math.ceil(cols / 4);
  const Wbuf = uploadStorage(gpu, W, "W");
  const codes = createStorage(gpu, rows * codeStride * 4, "codes");
  const err = createStorage(gpu, c.blockSize * rows * 4, "err");
  const loss = createStorage(gpu, rows * 4, "loss");
  const kernel = createGptqBlock(gpu, { blockSize: c.blockSize, lut: c.lut, bits: c.bits });
  await checkPipelines(gpu);
  const bound = kernel.bind({
    ...c,
    W: Wbuf,
    U: uploadStorage(gpu, Float32Array.from(U), "U"),
    grid: uploadStorage(gpu, grid, "grid"),
    codes,
    err,
    loss,
    nGroups,
  });
  runPass(gpu, (pass) => bound.encode(pass));
  const gotW = await readF32(gpu, Wbuf, rows * cols);
  const gotCodes = new Uint8Array(await readBuffer(gpu, codes, rows * codeStride * 4));
  const gotErr = await readF32(gpu, err, count * rows);
  const gotLoss = await readF32(gpu, loss, rows);
  let same = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const got = gotW[r * cols + j];
      if (j < i1 || j >= i1 + count) {
        assert.equal(got, W[r * cols + j], `column ${j} outside the block changed`);
        continue;
      }
      const i = j - i1;
      const code = gotCodes[r * codeStride * 4 + j];
      assert.ok(code < 2 ** c.bits, `code ${code} out of range`);
      if (code !== want.codes[r * count + i]) continue;
      same++;
      assert.ok(
        Math.abs(got - want.Q[r * count + i]) <= 1e-5,
        `Q(${r}, ${j}) ${got} vs ${want.Q[r * count + i]}`,
      );
    }
  }
  const frac = same / (rows * count);
  console.log(`  identical codes: ${(100 * frac).toFixed(2)}%`);
  assert.ok(frac >= 0.99, `only ${(100 * frac).toFixed(2)}% identical codes`);
  if (frac === 1) {
    for (let t = 0; t < count * rows; t++) {
      assert.ok(Math.abs(gotErr[t] - want.err[t]) <= 1e-3 * (1 + Math.abs(want.err[t])), `err[${t}]`);
    }
  }
  const [lg, lw] = [gotLoss.reduce((s, v) => s + v, 0), want.loss.reduce((s, v) => s + v, 0)];
  assert.ok(Math.abs(lg - lw) <= 1e-3 * lw + 1e-9, `loss ${lg} vs ${lw}`);
}

Deno.test("gptqBlock() matches the reference's inner loop on one block", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const base = { lut: false, groupSize: 0, feedback: true };
  const cases: BlockCase[] = [
    { ...base, rows: 7, cols: 64, i1: 0, count: 64, blockSize: 64, bits: 4 },
    { ...base, rows: 33, cols: 130, i1: 128, count: 2, blockSize: 128, bits: 3, groupSize: 32 },
    { ...base, rows: 64, cols: 256, i1: 128, count: 128, blockSize: 128, bits: 4, groupSize: 64 },
    { ...base, rows: 9, cols: 100, i1: 0, count: 100, blockSize: 128, bits: 3, lut: true },
    { ...base, rows: 1, cols: 7, i1: 0, count: 7, blockSize: 8, bits: 2, lut: true, feedback: false },
    { ...base, rows: 5, cols: 7, i1: 4, count: 3, blockSize: 4, bits: 2 },
    { ...base, rows: 12, cols: 65, i1: 0, count: 65, blockSize: 128, bits: 2, feedback: false },
    // 16 groups in one block: more than the 8 staged in workgroup memory, so the grid is read from storage.
    { ...base, rows: 9, cols: 130, i1: 0, count: 128, blockSize: 128, bits: 3, groupSize: 8 },
  ];
  for (const c of cases) {
    const name = `rows ${c.rows}, cols ${c.cols}, block [${c.i1}, ${c.i1 + c.count}) of ${c.blockSize}, ` +
      `${c.bits}-bit ${c.lut ? "LUT" : `affine g${c.groupSize}`}${c.feedback ? "" : ", no feedback"}`;
    await t.step(name, () => runCase(gpu, c));
  }
  gpu.device.destroy();
});

Deno.test("gptqBlock() rejects bad shapes and binds U panels at aligned offsets", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  assert.throws(() => createGptqBlock(gpu, { blockSize: 6, lut: false, bits: 4 }), /positive multiple of 4/);
  assert.throws(() => createGptqBlock(gpu, { blockSize: 8, lut: true, bits: 5 }), /bits 5 is outside 1..4/);
  const kernel = createGptqBlock(gpu, { blockSize: 8, lut: false, bits: 4 });
  const buf = createStorage(gpu, 4096, "buf");
  const args = {
    W: buf,
    U: buf,
    grid: buf,
    codes: buf,
    err: buf,
    loss: buf,
    rows: 2,
    cols: 16,
    groupSize: 0,
    nGroups: 1,
    feedback: true,
  };
  assert.throws(() => kernel.bind({ ...args, i1: 2, count: 4 }), /i1 2 is not a multiple of 4/);
  assert.throws(() => kernel.bind({ ...args, i1: 8, count: 9 }), /count 9 at i1 8/);
  const align = Number(gpu.device.limits.minStorageBufferOffsetAlignment);
  const panel = rowPanel(gpu, buf, { rowLen: 7, r0: 5, nRows: 3 });
  assert.equal(panel.binding.offset % align, 0);
  assert.equal(panel.binding.offset + panel.base * 4, 5 * 7 * 4);
  assert.throws(() => rowPanel(gpu, buf, { rowLen: 100, r0: 9, nRows: 2 }), /holds 4096 bytes/);
  gpu.device.destroy();
});
