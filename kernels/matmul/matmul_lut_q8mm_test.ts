import assert from "node:assert/strict";
import { createMatmulLut, uploadLut } from "./matmul_lut.ts";
import { type LutTune, planLutQ8mm } from "./matmul_lut_plan.ts";
import { lutQ8mmWorkgroupBytes } from "./matmul_lut_q8mm_wgsl.ts";
import { ROW_LANES_MAX_ROWS } from "./row_lanes_wgsl.ts";

const MAX_ROWS = ROW_LANES_MAX_ROWS.lutq8;
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { checkPipelines } from "../core/gpu.ts";
import { type Encodable, sequence } from "../core/mod.ts";
import { packLut } from "../../quant/pack_lut.ts";
import { assertRowInvariance } from "../../tests/_row_invariance.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { type Case, caseName, randomLut, runCase } from "../../tests/_lut_case.ts";

// The int8 batched path (`path: "gemv"`, `activations: "q8"`): every bit width, row counts within one
// dispatch and across several, K tails (inDim % 32 ≠ 0), output tails, both prologues, offsets and strides,
// other builds.
const Q8: Case[] = [
  { bits: 4, rows: 1, inDim: 4096, outDim: 37 },
  { bits: 4, rows: 3, inDim: 384, outDim: 65, accumulate: true },
  { bits: 3, rows: 5, inDim: 4097, outDim: 19, prologue: "norm" },
  { bits: 2, rows: MAX_ROWS + 1, inDim: 1000, outDim: 33, prologue: "siluMul" },
  {
    bits: 4,
    rows: 2 * MAX_ROWS + 8,
    inDim: 256,
    outDim: 130,
    prologue: "norm",
    xRowOffset: 2,
    yColOffset: 3,
    yStride: 140,
  },
  { bits: 3, rows: 2, inDim: 65, outDim: 7, accumulate: true },
  { bits: 2, rows: MAX_ROWS, inDim: 8192 + 320, outDim: 17 },
  { bits: 3, rows: 9, inDim: 320, outDim: 70, prologue: "siluMul", xRowOffset: 1 },
  // ≥ 48 rows of a wide matrix: eight outputs and eight rows per lane (row_lanes_wgsl.ts defaults)
  { bits: 4, rows: 50, inDim: 256, outDim: 4099 },
  { bits: 4, rows: 6, inDim: 2080, outDim: 40, tune: { mm: { no: 4, wg: 64, unroll: 3, rl: 1 } } },
  { bits: 2, rows: 12, inDim: 512, outDim: 9, accumulate: true, tune: { mm: { rows: 5, ks: 4, rl: 3 } } },
  // the cases above take chunk tables where they fit lavapipe's 32 KiB (the 50-row one does not); these ask
  // for the byte-shifted copies
  { bits: 4, rows: 20, inDim: 4097, outDim: 37, tune: { q8Chunks: false } },
  { bits: 3, rows: 3, inDim: 320, outDim: 70, prologue: "norm", tune: { q8Chunks: false } },
  { bits: 2, rows: 50, inDim: 1000, outDim: 33, accumulate: true, tune: { q8Chunks: false, mm: { no: 2 } } },
  // the build that loads the next piece's codes during the current one's math
  { bits: 3, rows: 20, inDim: 4097, outDim: 45, tune: { q8Prefetch: "codes" } },
  { bits: 4, rows: 7, inDim: 96, outDim: 33, tune: { q8Prefetch: "all", q8Chunks: false, mm: { no: 3 } } },
];

Deno.test("matmulLut() int8 batched path matches the reference with int8 activations and tables", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of Q8) {
    const q8: Case = { ...c, path: "gemv", activations: "q8" };
    await t.step(caseName(q8), () => runCase(gpu, q8));
  }
  gpu.device.destroy();
});

// A row's sums must not depend on its batch: alone, in another split and under other builds (all but the
// K split) a row gets the same bits.
Deno.test("matmulLut() int8 batched path gives a row the same bits whatever its batch", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDim] = [20, 1024, 70];
  const w = uploadLut(gpu, packLut(randomLut({ bits: 4, inDim, outDim }, 43)), "w");
  const x = uploadStorage(gpu, randomF32(rows * inDim, 44), "x");
  const bind = (y: GPUBuffer, r0: number, n: number, tune?: LutTune) =>
    createMatmulLut(gpu, { accumulate: false, path: "gemv", activations: "q8", ...(tune ? { tune } : {}) })
      .bind({ x, w, y, rows: n, xRowOffset: r0 });
  await assertRowInvariance(gpu, rows, outDim, bind, { mm: { no: 4, rl: 2, wg: 128, rows: 7 } });
  gpu.device.destroy();
});

Deno.test("planLutQ8mm() splits rows into dispatches and fits lavapipe's workgroup memory", () => {
  const shape = { bits: 4 as const, inDim: 4096, outDim: 14336 };
  const plan = (rows: number) =>
    planLutQ8mm({ accumulate: false, path: "gemv", activations: "q8" }, { ...shape, rows });
  assert.deepEqual(plan(2 * MAX_ROWS + 1).map((s) => [s.row0, s.rows]), [
    [0, MAX_ROWS],
    [MAX_ROWS, MAX_ROWS],
    [2 * MAX_ROWS, 1],
  ]);
  for (const rows of [1, 2, 16, 31, 48, MAX_ROWS]) {
    for (const bits of [2, 3, 4] as const) {
      const [step] = planLutQ8mm({ accumulate: false }, { ...shape, bits, rows });
      assert.equal(step.shader.path, "q8mm");
      if (step.shader.path !== "q8mm") continue;
      assert.equal(step.workgroupBytes, lutQ8mmWorkgroupBytes(step.shader));
      assert.ok(step.workgroupBytes <= 32768, `${rows} rows, ${bits}-bit: ${step.workgroupBytes} bytes`);
    }
  }
  // chunk tables where they fit (the H100's 48 KiB holds them at 64 rows, lavapipe's 32 KiB does not; at
  // 128 rows a workgroup has half the outputs, so they fit both), byte-shifted copies where they do not or
  // when asked for
  const chunks = (rows: number, maxWorkgroupBytes?: number, tune?: LutTune) => {
    const [step] = planLutQ8mm({ accumulate: false, ...(tune ? { tune } : {}) }, {
      ...shape,
      rows,
      ...(maxWorkgroupBytes ? { maxWorkgroupBytes } : {}),
    });
    return step.shader.path === "q8mm" && step.shader.chunks === true;
  };
  assert.equal(chunks(16), true);
  assert.equal(chunks(64), false);
  assert.equal(chunks(64, 49152), true);
  assert.equal(chunks(MAX_ROWS), true);
  assert.equal(chunks(16, undefined, { q8Chunks: false }), false);
});

Deno.test("matmulLut() int8 batched path applies q/k/v after one prep pass, each into its own y", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDims] = [MAX_ROWS + 3, 4097, [64, 16, 130]];
  const ws = outDims.map((outDim, i) =>
    uploadLut(gpu, packLut(randomLut({ bits: 3, inDim, outDim }, 50 + i)), "w")
  );
  const x = uploadStorage(gpu, randomF32(rows * inDim, 53), "x");
  const norm = { weight: uploadStorage(gpu, randomF32(inDim, 54), "nw"), eps: 1e-5 };
  const kernel = createMatmulLut(gpu, { accumulate: false, path: "gemv", activations: "q8" });
  const run = async (bind: (ys: GPUBuffer[]) => Encodable) => {
    const ys = outDims.map((d) => createStorage(gpu, rows * d * 4, "y"));
    const bound = bind(ys);
    await checkPipelines(gpu);
    runPass(gpu, (pass) => bound.encode(pass));
    return await Promise.all(ys.map((y, i) => readF32(gpu, y, rows * outDims[i])));
  };
  const merged = await run((ys) =>
    kernel.bind({ x, w: ws[0], y: ys[0], rows, norm, more: ws.slice(1).map((w, i) => ({ w, y: ys[i + 1] })) })
  );
  const alone = await run((ys) => sequence(ws.map((w, i) => kernel.bind({ x, w, y: ys[i], rows, norm }))));
  assert.deepEqual(merged, alone);
  assert.throws(
    () =>
      kernel.bind({
        x,
        w: ws[0],
        y: ws[0].codes,
        rows: 1,
        more: [{ w: { ...ws[1], bits: 4 }, y: ws[1].lut }],
      }),
    /bits and inDim must equal the first matrix's \(3, 4097\)/,
  );
  gpu.device.destroy();
});

// Chunk tables hold the same int8 levels as the byte-shifted copies and feed the same dot products in the same
// order: the two builds give the same bits.
Deno.test("matmulLut() int8 batched path gives the same bits with chunk tables and byte-shifted copies", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4] as const) {
    const [rows, inDim, outDim] = [9, 1000, 45];
    const w = uploadLut(gpu, packLut(randomLut({ bits, inDim, outDim }, 60 + bits)), "w");
    const x = uploadStorage(gpu, randomF32(rows * inDim, 61), "x");
    const run = async (tune: LutTune): Promise<Float32Array> => {
      const y = createStorage(gpu, rows * outDim * 4, "y");
      const bound = createMatmulLut(gpu, { accumulate: false, path: "gemv", activations: "q8", tune })
        .bind({ x, w, y, rows });
      await checkPipelines(gpu);
      runPass(gpu, (pass) => bound.encode(pass));
      return await readF32(gpu, y, rows * outDim);
    };
    assert.deepEqual(await run({ q8Chunks: true }), await run({ q8Chunks: false }), `${bits}-bit`);
  }
  gpu.device.destroy();
});
