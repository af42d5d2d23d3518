import assert from "node:assert/strict";
import { createMatmulLut, uploadLut } from "./matmul_lut.ts";
import { type LutTune, planMatmulLut } from "./matmul_lut_plan.ts";
import { ROW_LANES_MAX_ROWS } from "./row_lanes_wgsl.ts";
import { createStorage, uploadStorage } from "../core/buffers.ts";
import type { Gpu } from "../core/gpu.ts";
import { packLut, packLutTensors } from "../../quant/pack_lut.ts";
import { linearTensors } from "../../inference/model/quant_format.ts";
import { assertRowInvariance } from "../../tests/_row_invariance.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { type Case, caseName, GEMM, randomLut, runCase } from "../../tests/_lut_case.ts";

const CASES: Case[] = [
  // GEMV (rows ≤ 8): K tails (inDim % 32 ≠ 0), row-tile tails, one or many pieces per window
  { bits: 4, rows: 1, inDim: 1, outDim: 1 },
  { bits: 4, rows: 1, inDim: 64, outDim: 7 },
  { bits: 4, rows: 1, inDim: 4097, outDim: 65 },
  { bits: 4, rows: 3, inDim: 130, outDim: 130, accumulate: true },
  { bits: 4, rows: 4, inDim: 200, outDim: 40 },
  { bits: 4, rows: 8, inDim: 65, outDim: 1 },
  { bits: 3, rows: 1, inDim: 63, outDim: 130 },
  { bits: 3, rows: 1, inDim: 4097, outDim: 7, accumulate: true },
  { bits: 3, rows: 3, inDim: 1, outDim: 65 },
  { bits: 3, rows: 8, inDim: 130, outDim: 7 },
  { bits: 2, rows: 1, inDim: 7, outDim: 65, accumulate: true },
  { bits: 2, rows: 1, inDim: 4097, outDim: 1 },
  { bits: 2, rows: 3, inDim: 64, outDim: 130 },
  { bits: 2, rows: 8, inDim: 4097, outDim: 65, accumulate: true },
  // 9–64 rows: several 8-row GEMV dispatches (last one partial)
  { bits: 4, rows: 9, inDim: 130, outDim: 65 },
  { bits: 3, rows: 33, inDim: 65, outDim: 7, accumulate: true },
  { bits: 2, rows: 9, inDim: 4097, outDim: 7 },
  // tiled GEMM
  { bits: 4, rows: 9, inDim: 63, outDim: 130, tune: GEMM },
  { bits: 4, rows: 33, inDim: 4097, outDim: 7, accumulate: true, tune: GEMM },
  { bits: 3, rows: 9, inDim: 130, outDim: 65, tune: GEMM },
  { bits: 3, rows: 33, inDim: 7, outDim: 1, tune: GEMM },
  { bits: 2, rows: 33, inDim: 64, outDim: 65, accumulate: true, tune: GEMM },
  { bits: 2, rows: 9, inDim: 1, outDim: 130, tune: GEMM },
  { bits: 3, rows: 65, inDim: 130, outDim: 130 },
  // offsets and strides (LM-head-style last row; a panel writing its own column range)
  { bits: 4, rows: 1, inDim: 130, outDim: 65, accumulate: true, xRowOffset: 2, yColOffset: 3, yStride: 80 },
  { bits: 3, rows: 3, inDim: 64, outDim: 7, xRowOffset: 1, yColOffset: 5, yStride: 70 },
  { bits: 2, rows: 9, inDim: 65, outDim: 65, accumulate: true, xRowOffset: 4, yColOffset: 1, yStride: 66 },
  { bits: 4, rows: 9, inDim: 65, outDim: 7, xRowOffset: 3, yColOffset: 2, yStride: 12, tune: GEMM },
  // the GEMM on the shared core: in f16 (K tails within a piece, row and column tails, TK 16 and 32,
  // pipelined or not, offsets) and in f32 (the default), with 16-byte activation loads or scalar ones
  // (inDim % 4 ≠ 0: 65, 130 and 1 above, 66 and 7 here, pipelined and plain)
  {
    bits: 4,
    rows: 130,
    inDim: 1028,
    outDim: 129,
    accumulate: true,
    xRowOffset: 1,
    yColOffset: 3,
    yStride: 140,
    gemmMath: "f16",
    tune: { pipelined: false },
  },
  { bits: 3, rows: 33, inDim: 100, outDim: 40, gemmMath: "f16", tune: { ...GEMM, tk: 16, tm: 32, tn: 32 } },
  { bits: 2, rows: 65, inDim: 4096, outDim: 33, gemmMath: "f16", tune: GEMM },
  {
    bits: 4,
    rows: 130,
    inDim: 1028,
    outDim: 129,
    accumulate: true,
    gemmMath: "f16",
    tune: { pipelined: true },
  },
  {
    bits: 3,
    rows: 40,
    inDim: 4100,
    outDim: 65,
    xRowOffset: 2,
    gemmMath: "f16",
    tune: { ...GEMM, pipelined: true, tk: 32, tm: 32 },
  },
  {
    bits: 2,
    rows: 9,
    inDim: 64,
    outDim: 7,
    gemmMath: "f16",
    tune: { ...GEMM, pipelined: true, tm: 64, tn: 32 },
  },
  { bits: 4, rows: 70, inDim: 1028, outDim: 129, accumulate: true, xRowOffset: 1 },
  {
    bits: 3,
    rows: 33,
    inDim: 100,
    outDim: 40,
    tune: { ...GEMM, pipelined: false, tm: 32, tn: 32 },
  },
  { bits: 4, rows: 33, inDim: 64, outDim: 65, tune: GEMM, gemmMath: "f32" },
  {
    bits: 3,
    rows: 70,
    inDim: 66,
    outDim: 40,
    accumulate: true,
    xRowOffset: 2,
    tune: { pipelined: true, tm: 64, tn: 64 },
  },
  { bits: 2, rows: 9, inDim: 7, outDim: 33, tune: { ...GEMM, pipelined: false } },
  { bits: 4, rows: 12, inDim: 130, outDim: 70, gemmMath: "f16", tune: GEMM },
  { bits: 3, rows: 40, inDim: 4096, outDim: 7, accumulate: true, tune: GEMM, gemmMath: "f32" },
];

Deno.test("matmulLut() matches the f64 reference across bits and awkward shapes", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of CASES) await t.step(caseName(c), () => runCase(gpu, c));
  gpu.device.destroy();
});

// Other GEMV builds (row tiles of 64 and 128 rows, several row warps, other K splits and windows) and
// GEMM tiles, as a benchmark sweep may pick them.
const TUNED: Case[] = [
  { bits: 4, rows: 2, inDim: 4097, outDim: 130, tune: { nr: 2, rw: 2, ks: 4, pieces: 3 } },
  { bits: 3, rows: 5, inDim: 130, outDim: 200, tune: { nr: 4, ks: 2 } },
  { bits: 2, rows: 7, inDim: 640, outDim: 33, tune: { rw: 4, ks: 1, pieces: 2 } },
  { bits: 3, rows: 1, inDim: 1000, outDim: 65, tune: { nr: 2, ks: 16, pieces: 1, xs: false } },
  // the row-per-lane GEMV for one row, and other x-stationary row tiles
  { bits: 4, rows: 1, inDim: 4097, outDim: 65, tune: { xs: false } },
  { bits: 2, rows: 1, inDim: 63, outDim: 130, accumulate: true, tune: { xs: false } },
  { bits: 3, rows: 1, inDim: 4097, outDim: 40, tune: { xs: true, rb: 8, unroll: 2 } },
  { bits: 2, rows: 1, inDim: 130, outDim: 65, accumulate: true, tune: { xs: true } },
  { bits: 4, rows: 1, inDim: 2048, outDim: 70, accumulate: true, tune: { xs: true, rb: 32, unroll: 8 } },
  { bits: 4, rows: 1, inDim: 9000, outDim: 17, tune: { xs: true } },
  { bits: 4, rows: 1, inDim: 4097, outDim: 65, accumulate: true, tune: { xs: true } },
  { bits: 2, rows: 1, inDim: 63, outDim: 1, tune: { xs: true } },
  // fused prologues on both one-row builds and the two-row GEMV, with K tails and a row offset
  { bits: 4, rows: 1, inDim: 4096, outDim: 70, prologue: "norm", tune: { xs: true } },
  { bits: 4, rows: 1, inDim: 4096, outDim: 70, prologue: "norm", tune: { xs: false } },
  { bits: 3, rows: 2, inDim: 130, outDim: 65, prologue: "norm", accumulate: true },
  { bits: 2, rows: 1, inDim: 1000, outDim: 33, prologue: "siluMul", tune: { xs: true } },
  { bits: 4, rows: 2, inDim: 14336, outDim: 9, prologue: "siluMul", xRowOffset: 1, accumulate: true },
  { bits: 4, rows: 6, inDim: 96, outDim: 9, tune: { nr: 1, ks: 3 } },
  { bits: 3, rows: 17, inDim: 130, outDim: 65, tune: { gemvMaxRows: 0, tm: 64, tn: 32 } },
  { bits: 2, rows: 40, inDim: 97, outDim: 129, tune: { gemvMaxRows: 8, tm: 16, tn: 128 } },
];

Deno.test("matmulLut() tuned builds match the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of TUNED) await t.step(caseName(c), () => runCase(gpu, c));
  gpu.device.destroy();
});

Deno.test("matmulLut() runs leanserve-lut tensors as quant_format.ts writes them", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4] as const) {
    const c: Case = { bits, rows: bits === 3 ? 9 : 1, inDim: 100, outDim: 40, tune: GEMM };
    const parts = randomLut(c, bits);
    const q = { ...parts, method: "leanquant-nu" as const, loss: 0, dampUsed: 0 };
    const [lutT, codesT] = linearTensors("m", q).tensors;
    const packed = packLutTensors({
      lut: new Uint16Array(lutT.data.slice().buffer),
      qcodes: new Int32Array(codesT.data.slice().buffer),
    }, { bits, outDim: c.outDim, inDim: c.inDim });
    await t.step(caseName(c), () => runCase(gpu, c, { parts, packed }));
  }
  gpu.device.destroy();
});

Deno.test("matmulLut() splits dispatches past maxComputeWorkgroupsPerDimension", async (t) => {
  const real = await testGpu();
  if (!real) return;
  const gpu: Gpu = { ...real, maxWorkgroupsPerDimension: 50 };
  for (
    const c of [
      { bits: 4, rows: 2, inDim: 64, outDim: 2049 },
      { bits: 3, rows: 9, inDim: 42, outDim: 4097, tune: { ...GEMM, tn: 32 } },
      { bits: 2, rows: 9, inDim: 40, outDim: 8193, tune: GEMM },
    ] as Case[]
  ) {
    const steps = planMatmulLut({ accumulate: false, ...(c.tune ? { tune: c.tune } : {}) }, c);
    assert.ok(
      steps[0].workgroups > 50,
      `case must need a 2-D dispatch, has ${steps[0].workgroups} workgroups`,
    );
    await t.step(caseName(c), () => runCase(gpu, c));
  }
  real.device.destroy();
});

Deno.test("planMatmulLut() batches GEMV rows by 8 and reaches the GEMM past gemvMaxRows", () => {
  const shape = { bits: 4 as const, inDim: 4096, outDim: 14336 };
  const plan = (rows: number, tune?: LutTune) =>
    planMatmulLut({ accumulate: false, ...(tune ? { tune } : {}) }, { ...shape, rows });
  assert.deepEqual(plan(1).map((s) => [s.shader.path, s.row0, s.rows]), [["gemv", 0, 1]]);
  assert.deepEqual(plan(1, { xs: true }).map((s) => [s.shader.path, s.row0, s.rows]), [["xs", 0, 1]]);
  assert.deepEqual(plan(20).map((s) => [s.row0, s.rows]), [[0, 8], [8, 8], [16, 4]]);
  assert.equal(plan(65)[0].shader.path, "gemm");
  assert.equal(plan(9, GEMM)[0].shader.path, "gemm");
  // Every default build fits lavapipe's 32 KiB of workgroup memory (the H100 allows 48 KiB).
  for (const bits of [2, 3, 4] as const) {
    for (const outDim of [7, 4096, 14336, 40000, 128256]) {
      for (let rows = 1; rows <= 64; rows++) {
        for (const s of planMatmulLut({ accumulate: true }, { bits, inDim: 4096, outDim, rows })) {
          assert.ok(s.workgroupBytes <= 32768, `${JSON.stringify(s.shader)} needs ${s.workgroupBytes} bytes`);
        }
      }
    }
  }
  assert.throws(() => plan(2, { nr: 3 }), /nr 3 and rw 1 must be 1, 2 or 4/);
  assert.throws(() => plan(1, { xs: true, rb: 24 }), /need wg % rb = 0/);
  assert.throws(() => plan(9, { ...GEMM, tn: 48 }), /tiles 32×48×16/);
});

Deno.test("matmulLut() bind rejects bad shapes with the offending value", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const w = uploadLut(gpu, packLut(randomLut({ bits: 4, inDim: 64, outDim: 8 }, 1)), "w");
  const buf = createStorage(gpu, 4096, "buf");
  const k = createMatmulLut(gpu, { accumulate: false });
  const base = { x: buf, w, y: createStorage(gpu, 4096, "y"), rows: 1 };
  assert.throws(() => k.bind({ ...base, rows: 0 }), /rows must be a positive integer, got 0/);
  assert.throws(() => k.bind({ ...base, yStride: 8, yColOffset: 1 }), /yStride 8 is less than/);
  assert.throws(
    () => k.bind({ ...base, rows: 2, xRowOffset: 15 }),
    /buffer "x" holds 4096 bytes, needs 4352/,
  );
  assert.throws(
    () => k.bind({ ...base, w: { ...w, outDim: 9 } }),
    /buffer "codes" holds 256 bytes, needs 288/,
  );
  assert.throws(() => k.bind({ ...base, w: { ...w, bits: 5 as 4 } }), /bits must be 2, 3 or 4, got 5/);
  const huge = createMatmulLut(gpu, { accumulate: false, tune: { ks: 64 } });
  assert.throws(() => huge.bind({ ...base, rows: 8 }), /bytes of workgroup memory/);
  gpu.device.destroy();
});

// The batched decode path (pinned "gemv", inDim % 4 = 0): every bit width, one dispatch and several,
// output and K tails, offsets, other builds; 3-bit codes straddle words.
const ROWS_CASES: Case[] = [
  { bits: 4, rows: 1, inDim: 4096, outDim: 37 },
  { bits: 3, rows: 3, inDim: 384, outDim: 65, accumulate: true },
  { bits: 2, rows: 16, inDim: 1024, outDim: 33 },
  { bits: 4, rows: 5, inDim: 172, outDim: 64, accumulate: true }, // K tail: stories260K's down_proj
  { bits: 4, rows: ROW_LANES_MAX_ROWS.lut + 5, inDim: 128, outDim: 130, xRowOffset: 2, yColOffset: 3 },
  { bits: 3, rows: 9, inDim: 2048, outDim: 19, tune: { mm: { ks: 4, rl: 3, no: 2, wg: 64 } } },
];

Deno.test("matmulLut() batched decode path matches the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of ROWS_CASES) {
    const pinned: Case = { ...c, path: "gemv" };
    assert.equal(planMatmulLut({ accumulate: false, path: "gemv" }, c)[0].shader.path, "rows");
    await t.step(JSON.stringify(c), () => runCase(gpu, pinned));
  }
  gpu.device.destroy();
});

// A row's sums must not depend on its batch: alone, in another split and under other builds (all but the
// K split) a row gets the same bits.
Deno.test("matmulLut() batched decode path gives a row the same bits whatever its batch", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDim] = [20, 1024, 70];
  const w = uploadLut(gpu, packLut(randomLut({ bits: 3, inDim, outDim }, 41)), "w");
  const x = uploadStorage(gpu, randomF32(rows * inDim, 42), "x");
  const bind = (y: GPUBuffer, r0: number, n: number, tune?: LutTune) =>
    createMatmulLut(gpu, { accumulate: false, path: "gemv", ...(tune ? { tune } : {}) })
      .bind({ x, w, y, rows: n, xRowOffset: r0 });
  await assertRowInvariance(gpu, rows, outDim, bind, { mm: { no: 4, rl: 2, wg: 128, rows: 7 } });
  gpu.device.destroy();
});
