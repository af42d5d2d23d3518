import assert from "node:assert/strict";
import { createMatmul, GEMV_BATCH_MAX_ROWS, GEMV_MAX_ROWS, type MatmulSpec, planMatmul } from "./matmul.ts";
import { ROW_LANES_MAX_ROWS } from "./row_lanes_wgsl.ts";
import { matmulRef } from "../core/reference.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import {
  createStorage,
  f16BitsToF32,
  f32ToF16Bits,
  readF32,
  runPass,
  uploadStorage,
} from "../core/buffers.ts";
import { assertRowInvariance } from "../../tests/_row_invariance.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertBoundedMatmul, assertNmse, assertStridedMatmul } from "../../tests/_assert.ts";
import { gemmF16ErrorBound, type GemmMath } from "./gemm_core_wgsl.ts";

interface Case {
  weightType: "f32" | "f16";
  accumulate?: boolean;
  rows: number;
  inDim: number;
  outDim: number;
  xRowOffset?: number;
  yStride?: number;
  yColOffset?: number;
  gemmMath?: GemmMath;
  tune?: MatmulSpec["tune"];
  /** pin the path (the batched engine's calls) */
  path?: "gemv" | "gemm";
}

/** Weights as the kernel reads them, plus their exact values (f16-rounded for f16). */
function makeWeights(weightType: "f32" | "f16", n: number, seed: number) {
  const w = randomF32(n, seed);
  if (weightType === "f32") return { data: w as ArrayBufferView, values: w };
  const bits = Uint16Array.from(w, f32ToF16Bits);
  return { data: bits as ArrayBufferView, values: Float32Array.from(bits, f16BitsToF32) };
}

/**
 * Runs one case on the GPU and checks y against matmulRef: the written columns by NMSE, and every
 * element outside them (other columns of a strided y) unchanged.
 */
async function runCase(gpu: Gpu, c: Case): Promise<void> {
  const { rows, inDim, outDim, xRowOffset = 0, yColOffset = 0, yStride = outDim + yColOffset } = c;
  const spec: MatmulSpec = {
    weightType: c.weightType,
    accumulate: c.accumulate ?? false,
    ...(c.gemmMath ? { gemmMath: c.gemmMath } : {}),
    ...(c.tune ? { tune: c.tune } : {}),
    ...(c.path ? { path: c.path } : {}),
  };
  const seed = rows * 7919 + inDim * 131 + outDim;
  const x = randomF32((xRowOffset + rows) * inDim, seed);
  const w = makeWeights(c.weightType, outDim * inDim, seed + 1);
  const y0 = randomF32(rows * yStride, seed + 2);
  const y = uploadStorage(gpu, y0, "y");
  const bound = createMatmul(gpu, spec).bind({
    x: uploadStorage(gpu, x, "x"),
    w: uploadStorage(gpu, w.data, "w"),
    y,
    rows,
    inDim,
    outDim,
    xRowOffset,
    yStride,
    yColOffset,
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  const got = await readF32(gpu, y, rows * yStride);

  const xUsed = x.subarray(xRowOffset * inDim);
  const out = { rows, outDim, yStride, yColOffset };
  const want = (accIn: Float32Array) =>
    matmulRef(xUsed, w.values, rows, inDim, outDim, spec.accumulate ? accIn : undefined);
  const shader = planMatmul(spec, { rows, inDim, outDim, hasF16: gpu.hasF16 })[0].shader;
  if (shader.path === "gemm" && shader.math === "f16") {
    // f16 arithmetic: every element within the worst-case bound, and a typical error near f16 rounding.
    const abs = matmulRef(xUsed.map(Math.abs), w.values.map(Math.abs), rows, inDim, outDim);
    const e = assertBoundedMatmul(
      got,
      y0,
      out,
      want,
      (i, v) => gemmF16ErrorBound(abs[i], inDim, v),
      JSON.stringify(c),
    );
    assert.ok(e <= 2e-6, `${JSON.stringify(c)}: f16 GEMM nmse ${e.toExponential(3)} > 2e-6`);
    return;
  }
  assertStridedMatmul(got, y0, out, want, { what: JSON.stringify(c) });
}

const CASES: Case[] = [
  // GEMV, 16-byte loads
  { weightType: "f32", rows: 1, inDim: 64, outDim: 65 },
  { weightType: "f16", rows: 1, inDim: 512, outDim: 63 },
  { weightType: "f16", rows: 2, inDim: 1408, outDim: 7, accumulate: true },
  { weightType: "f32", rows: 7, inDim: 512, outDim: 64, accumulate: true },
  { weightType: "f16", rows: 8, inDim: 64, outDim: 1408 },
  { weightType: "f16", rows: 1, inDim: 64, outDim: 49152 }, // LM-head-like: many workgroups
  // GEMV, scalar loads (inDim not a multiple of 4 / 8)
  { weightType: "f32", rows: 1, inDim: 1, outDim: 1 },
  { weightType: "f32", rows: 1, inDim: 4097, outDim: 3 },
  { weightType: "f32", rows: 8, inDim: 7, outDim: 65, accumulate: true },
  { weightType: "f16", rows: 1, inDim: 2, outDim: 1 },
  { weightType: "f16", rows: 7, inDim: 1410, outDim: 65 },
  // batches of GEMV dispatches (9..128 rows)
  { weightType: "f32", rows: 9, inDim: 63, outDim: 65 },
  { weightType: "f32", rows: 33, inDim: 1, outDim: 7, accumulate: true },
  { weightType: "f16", rows: 9, inDim: 4098, outDim: 3 },
  { weightType: "f16", rows: 65, inDim: 64, outDim: 512, accumulate: true },
  // GEMM (rows > 128), K, row and column tails
  { weightType: "f32", rows: 129, inDim: 512, outDim: 63 },
  { weightType: "f16", rows: 200, inDim: 1408, outDim: 65 },
  { weightType: "f32", rows: 129, inDim: 3, outDim: 4097 },
  { weightType: "f16", rows: 257, inDim: 66, outDim: 129, accumulate: true },
  { weightType: "f32", rows: 300, inDim: 1, outDim: 1 },
  // GEMM with 16-byte staging loads and a partial last K tile (inDim % 16 ≠ 0)
  { weightType: "f32", rows: 150, inDim: 20, outDim: 70 },
  { weightType: "f16", rows: 131, inDim: 24, outDim: 33, accumulate: true },
  { weightType: "f32", rows: 133, inDim: 36, outDim: 40, xRowOffset: 3, yColOffset: 2 },
  // offsets and strides (LM head on the last row; a panel writing its own column range)
  { weightType: "f16", rows: 1, inDim: 512, outDim: 65, xRowOffset: 6, yColOffset: 64, yStride: 200 },
  { weightType: "f32", rows: 2, inDim: 63, outDim: 7, xRowOffset: 3, yColOffset: 1, yStride: 9 },
  { weightType: "f16", rows: 8, inDim: 64, outDim: 64, accumulate: true, xRowOffset: 1, yColOffset: 64 },
  { weightType: "f16", rows: 17, inDim: 64, outDim: 63, accumulate: true, xRowOffset: 2, yColOffset: 5 },
  { weightType: "f32", rows: 140, inDim: 65, outDim: 64, accumulate: true, xRowOffset: 5, yColOffset: 3 },
  // f16 weights through the exact f32 GEMM, pinned (the default; `gemmMath: "f16"` picks f16 FMAs)
  { weightType: "f16", rows: 200, inDim: 1408, outDim: 65, gemmMath: "f32" },
  { weightType: "f16", rows: 257, inDim: 66, outDim: 129, accumulate: true, gemmMath: "f32" },
  // f16 arithmetic: long K (many f32 flushes), a K tail inside a flush, offsets
  {
    weightType: "f16",
    rows: 130,
    inDim: 4104,
    outDim: 33,
    accumulate: true,
    xRowOffset: 1,
    yColOffset: 7,
    gemmMath: "f16",
  },
  // the pipelined f16-weight GEMM (double-buffered tiles), f16 and f32 arithmetic
  {
    weightType: "f16",
    rows: 131,
    inDim: 1032,
    outDim: 129,
    accumulate: true,
    gemmMath: "f16",
    tune: { pipelined: true },
  },
  {
    weightType: "f16",
    rows: 200,
    inDim: 72,
    outDim: 40,
    gemmMath: "f16",
    tune: { pipelined: true, tm: 32, tk: 32 },
  },
  { weightType: "f16", rows: 129, inDim: 64, outDim: 65, gemmMath: "f32", tune: { pipelined: true, tn: 32 } },
  // the pipelined f32-weight GEMM (the quantizer's calibration forwards): K and row tails, offsets
  {
    weightType: "f32",
    rows: 131,
    inDim: 1036,
    outDim: 129,
    accumulate: true,
    xRowOffset: 3,
    yColOffset: 2,
    tune: { pipelined: true, tm: 64 },
  },
  {
    weightType: "f32",
    rows: 40,
    inDim: 68,
    outDim: 33,
    path: "gemm",
    tune: { pipelined: true, tm: 32, tn: 32 },
  },
];

Deno.test("matmul() matches the f64 reference on awkward shapes", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of CASES) {
    const name = `${c.weightType}${c.accumulate ? " +=" : ""} rows ${c.rows}, ${c.outDim}×${c.inDim}` +
      (c.xRowOffset || c.yColOffset
        ? `, xRowOffset ${c.xRowOffset ?? 0}, yColOffset ${c.yColOffset ?? 0}`
        : "");
    await t.step(name, () => runCase(gpu, c));
  }
  gpu.device.destroy();
});

Deno.test("planMatmul() batches short inputs through the GEMV and tiles long ones", () => {
  const spec: MatmulSpec = { weightType: "f16", accumulate: true };
  const plan = (rows: number, inDim = 64) => planMatmul(spec, { rows, inDim, outDim: 64 });
  assert.deepEqual(plan(1).map((s) => [s.shader.path, s.row0, s.rows]), [["gemv", 0, 1]]);
  assert.deepEqual(plan(19).map((s) => [s.shader.path, s.row0, s.rows]), [
    ["gemv", 0, 8],
    ["gemv", 8, 8],
    ["gemv", 16, 3],
  ]);
  assert.equal(plan(GEMV_BATCH_MAX_ROWS).length, GEMV_BATCH_MAX_ROWS / GEMV_MAX_ROWS);
  assert.deepEqual(plan(GEMV_BATCH_MAX_ROWS + 1).map((s) => s.shader.path), ["gemm"]);
  assert.deepEqual(plan(1, 64)[0].shader, { path: "gemv", vec4: true, rows: 1, nr: 4 });
  assert.deepEqual(plan(1, 68)[0].shader, { path: "gemv", vec4: false, rows: 1, nr: 4 });
});

Deno.test("matmul() GEMV is right for every specialised row count", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (let rows = 1; rows <= GEMV_MAX_ROWS; rows++) {
    await t.step(
      `rows ${rows}`,
      () => runCase(gpu, { weightType: "f16", accumulate: true, rows, inDim: 72, outDim: 40 }),
    );
  }
  gpu.device.destroy();
});

Deno.test("matmul() splits dispatches past maxComputeWorkgroupsPerDimension", async (t) => {
  const real = await testGpu();
  if (!real) return;
  // An artificial cap makes the 2-D split happen at test sizes.
  const gpu: Gpu = { ...real, maxWorkgroupsPerDimension: 50 };
  for (
    const c of [
      { weightType: "f16", rows: 1, inDim: 64, outDim: 49152 },
      { weightType: "f32", rows: 3, inDim: 7, outDim: 4097 },
      { weightType: "f16", rows: 129, inDim: 64, outDim: 4097 },
    ] as Case[]
  ) {
    const [step] = planMatmul({ weightType: c.weightType, accumulate: false }, c);
    assert.ok(step.workgroups > 50, `case must need a 2-D dispatch, has ${step.workgroups} workgroups`);
    await t.step(`${c.weightType} rows ${c.rows}, ${c.outDim}×${c.inDim}`, () => runCase(gpu, c));
  }
  real.device.destroy();
});

Deno.test("matmul() row panels of one weight fill one output", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDim, split] = [3, 96, 100, 37];
  const x = randomF32(rows * inDim, 1);
  const w = makeWeights("f16", outDim * inDim, 2);
  const bits = w.data as Uint16Array;
  const y = createStorage(gpu, rows * outDim * 4, "y");
  const kernel = createMatmul(gpu, { weightType: "f16", accumulate: false });
  const xBuf = uploadStorage(gpu, x, "x");
  const panels = [[0, split], [split, outDim]].map(([o0, o1]) =>
    kernel.bind({
      x: xBuf,
      w: uploadStorage(gpu, bits.subarray(o0 * inDim, o1 * inDim), `w rows ${o0}..${o1}`),
      y,
      rows,
      inDim,
      outDim: o1 - o0,
      yStride: outDim,
      yColOffset: o0,
    })
  );
  runPass(gpu, (pass) => panels.forEach((p) => p.encode(pass)));
  const got = await readF32(gpu, y, rows * outDim);
  assertNmse(got, matmulRef(x, w.values, rows, inDim, outDim), 1e-10, "two panels");
  gpu.device.destroy();
});

Deno.test("matmul() bind rejects bad shapes with the offending value", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const buf = createStorage(gpu, 4096, "buf");
  const f16 = createMatmul(gpu, { weightType: "f16", accumulate: false });
  const base = { x: buf, w: buf, y: createStorage(gpu, 4096, "y"), rows: 1, inDim: 8, outDim: 8 };
  assert.throws(() => f16.bind({ ...base, inDim: 7 }), /even inDim, got 7/);
  assert.throws(() => f16.bind({ ...base, y: buf }), /y must be a different buffer from x and w/);
  assert.throws(() => f16.bind({ ...base, rows: 0 }), /rows must be a positive integer, got 0/);
  assert.throws(() => f16.bind({ ...base, yStride: 8, yColOffset: 1 }), /yStride 8 is less than/);
  assert.throws(() => f16.bind({ ...base, outDim: 300 }), /buffer "w" holds 4096 bytes, needs 4800/);
  assert.throws(() => f16.bind({ ...base, rows: 2, xRowOffset: 127 }), /buffer "x" holds 4096 bytes/);
  gpu.device.destroy();
});

// The batched decode path (pinned "gemv", f16 weights): one dispatch and several, tails of the outputs, an
// LM-head-like width, offsets and strides, other builds.
const ROWS_CASES: Case[] = [
  { weightType: "f16", rows: 1, inDim: 512, outDim: 63 },
  { weightType: "f16", rows: 3, inDim: 1408, outDim: 7, accumulate: true },
  { weightType: "f16", rows: 16, inDim: 64, outDim: 1408 },
  {
    weightType: "f16",
    rows: ROW_LANES_MAX_ROWS.dense + 5,
    inDim: 256,
    outDim: 130,
    xRowOffset: 2,
    yColOffset: 3,
  },
  { weightType: "f16", rows: 6, inDim: 64, outDim: 49152 },
  // ≥ 16 rows of a wide matrix: eight outputs per lane (row_lanes_wgsl.ts defaults)
  { weightType: "f16", rows: 20, inDim: 64, outDim: 4100 },
  { weightType: "f16", rows: 9, inDim: 4096, outDim: 33, tune: { mm: { ks: 4, rl: 3, no: 4, unroll: 3 } } },
];

Deno.test("matmul() batched decode path matches the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of ROWS_CASES) {
    const pinned: Case = { ...c, path: "gemv" };
    const shader = planMatmul({ weightType: "f16", accumulate: false, path: "gemv" }, c)[0].shader;
    assert.equal(shader.path, "rows");
    await t.step(JSON.stringify(c), () => runCase(gpu, pinned));
  }
  gpu.device.destroy();
});

// A row's sums must not depend on its batch (the engine's batched greedy equals one-at-a-time greedy): a
// row alone, in another split of rows and under builds that differ in all but the K split give its bits.
Deno.test("matmul() batched decode path gives a row the same bits whatever its batch", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDim] = [20, 1024, 70];
  const x = uploadStorage(gpu, randomF32(rows * inDim, 5), "x");
  const w = uploadStorage(gpu, Uint16Array.from(randomF32(outDim * inDim, 6), f32ToF16Bits), "w");
  const bind = (y: GPUBuffer, r0: number, n: number, tune?: MatmulSpec["tune"]) =>
    createMatmul(gpu, { weightType: "f16", accumulate: false, path: "gemv", ...(tune ? { tune } : {}) })
      .bind({ x, w, y, rows: n, inDim, outDim, xRowOffset: r0 });
  await assertRowInvariance(gpu, rows, outDim, bind, { mm: { no: 4, rl: 2, wg: 128, unroll: 3, rows: 7 } });
  gpu.device.destroy();
});
