import assert from "node:assert/strict";
import { type AffineTune, FEW_ROWS, kSplitFor, planMatmulAffine } from "./matmul_affine_plan.ts";
import { ROW_LANES_MAX_ROWS } from "./row_lanes_wgsl.ts";

const MAX_ROWS = ROW_LANES_MAX_ROWS.q8;
import { createMatmulAffine, uploadAffine } from "./matmul_affine.ts";
import { matmulAffineRef, q8ActivationsRef, rmsNormRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { packAffine } from "../../quant/pack_affine.ts";
import { assertRowInvariance } from "../../tests/_row_invariance.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";
import { type Case, caseName, randomAffine, runCase } from "../../tests/_affine_case.ts";

// The batched q8 path (a pinned `path: "gemv"`): row counts within one dispatch and across several,
// every bit width, groups and act-order, both prologues, K tails, offsets and strides, other builds.
const BATCHED: Case[] = [
  { bits: 4, group: 128, rows: 1, inDim: 4096, outDim: 37 },
  { bits: 4, group: 32, rows: 3, inDim: 384, outDim: 65, accumulate: true },
  { bits: 3, group: 128, rows: 5, inDim: 4096, outDim: 19, norm: true },
  { bits: 2, group: 64, gIdx: true, rows: MAX_ROWS + 1, inDim: 1000, outDim: 33, siluMul: true },
  {
    bits: 4,
    group: 0,
    rows: 2 * MAX_ROWS + 8,
    inDim: 256,
    outDim: 130,
    norm: true,
    xRowOffset: 2,
    yColOffset: 3,
    yStride: 140,
  },
  { bits: 3, group: 32, gIdx: true, rows: 2, inDim: 4097, outDim: 7, accumulate: true },
  { bits: 2, group: 0, rows: MAX_ROWS, inDim: 8192 + 320, outDim: 17 },
  { bits: 3, group: 64, rows: 9, inDim: 320, outDim: 70, siluMul: true, xRowOffset: 1 },
  // ≥ 48 rows of a wide matrix: eight outputs and eight rows per lane (row_lanes_wgsl.ts defaults)
  { bits: 4, group: 128, rows: 50, inDim: 256, outDim: 4099 },
  {
    bits: 4,
    group: 64,
    gIdx: true,
    rows: 6,
    inDim: 2080,
    outDim: 40,
    tune: { mm: { no: 4, wg: 64, unroll: 3, rl: 1 } },
  },
  {
    bits: 2,
    group: 32,
    rows: 12,
    inDim: 512,
    outDim: 9,
    accumulate: true,
    tune: { mm: { rows: 5, ks: 4, rl: 3 } },
  },
  // the build that loads the next piece's codes during the current one's math, with K tails and act-order
  { bits: 3, group: 32, gIdx: true, rows: 20, inDim: 4097, outDim: 45, tune: { q8Prefetch: "codes" } },
  { bits: 4, group: 128, rows: 50, inDim: 1056, outDim: 4099, norm: true, tune: { q8Prefetch: "all" } },
  { bits: 2, group: 0, rows: 5, inDim: 96, outDim: 33, tune: { q8Prefetch: "all", mm: { no: 3, rl: 2 } } },
];

Deno.test("matmulAffine() batched q8 path matches the reference with int8 activations", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of BATCHED) {
    await t.step(caseName({ ...c, path: "gemv" }), () => runCase(gpu, { ...c, path: "gemv" }));
  }
  gpu.device.destroy();
});

Deno.test("matmulAffine() batched q8 path applies q/k/v in one pass, each into its own y", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  // kSplitByRows: few rows of a merged dispatch split K over 16 lanes (kSplitFor), the norm prologue too
  for (const [rows, kSplitByRows] of [[3, false], [3, true], [MAX_ROWS + 4, false]] as const) {
    const c = { bits: 4 as const, group: 64, gIdx: true, rows, inDim: 4097, outDims: [64, 16, 130] };
    await t.step(`${rows} rows${kSplitByRows ? ", K split by rows" : ""}`, async () => {
      const parts = c.outDims.map((outDim, i) => randomAffine({ ...c, outDim }, 200 + i));
      for (const p of parts.slice(1)) p.gIdx = parts[0].gIdx!;
      const packed = parts.map((p) => packAffine(p, { groupSize: c.group }));
      const ws = packed.map((p, i) => uploadAffine(gpu, p, `w${i}`));
      for (const w of ws.slice(1)) w.perm = ws[0].perm;
      const x = randomF32(rows * c.inDim, 9);
      const normWeight = Float32Array.from({ length: c.inDim }, (_, i) => 0.5 + (i % 13) / 10);
      const ys = c.outDims.map((d) => createStorage(gpu, rows * d * 4, "y"));
      const bound = createMatmulAffine(gpu, { accumulate: false, path: "gemv", kSplitByRows }).bind({
        x: uploadStorage(gpu, x, "x"),
        w: ws[0],
        y: ys[0],
        rows,
        more: ws.slice(1).map((w, i) => ({ w, y: ys[i + 1] })),
        norm: { weight: uploadStorage(gpu, normWeight, "nw"), eps: 1e-5 },
      });
      await checkPipelines(gpu);
      runPass(gpu, (pass) => bound.encode(pass));
      const xq = q8ActivationsRef(rmsNormRef(x, normWeight, rows, 1e-5), c.inDim, packed[0].perm);
      for (const [i, outDim] of c.outDims.entries()) {
        const want = matmulAffineRef(xq, { ...parts[i], outDim, inDim: c.inDim, groupSize: c.group });
        assertNmse(await readF32(gpu, ys[i], rows * outDim), want, 1e-6, `matrix ${i}`);
      }
    });
  }
  gpu.device.destroy();
});

// The engine's batched greedy decode equals one-at-a-time decode only if a row's sums do not depend on
// the batch: every row of a 24-row call must equal, bit for bit, the same row run alone, in another
// split of rows, and under builds that differ in everything but the K split.
Deno.test("matmulAffine() batched q8 path gives a row the same bits whatever its batch", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDim] = [24, 1056, 70];
  const parts = randomAffine({ bits: 4, group: 32, gIdx: true, inDim, outDim }, 31);
  const w = uploadAffine(gpu, packAffine(parts, { groupSize: 32 }), "w");
  const x = uploadStorage(gpu, randomF32(rows * inDim, 32), "x");
  const norm = { weight: uploadStorage(gpu, randomF32(inDim, 33), "nw"), eps: 1e-5 };
  const bind = (y: GPUBuffer, r0: number, n: number, tune?: AffineTune) =>
    createMatmulAffine(gpu, { accumulate: false, path: "gemv", ...(tune ? { tune } : {}) })
      .bind({ x, w, y, rows: n, xRowOffset: r0, norm });
  await assertRowInvariance(gpu, rows, outDim, bind, { mm: { no: 4, wg: 128, unroll: 3, rows: 7, rl: 2 } });
  await assertRowInvariance(gpu, rows, outDim, bind, { q8Prefetch: "all", mm: { no: 2, rows: 9, rl: 3 } });
  const plans = [1, 2, 16].map((n) =>
    planMatmulAffine({ accumulate: false, path: "gemv" }, { ...w, rows: n, hasPerm: true }).shader
  );
  const splits = plans.map((p) => p.path === "q8mm" ? p.ks : -1);
  assert.ok(splits.every((k) => k > 0 && k === splits[0]), `one K split for every row count, got ${splits}`);
  gpu.device.destroy();
});

// kSplitByRows (the engine's default, non-invariant decode): few rows of narrow matrices split K over 16
// lanes; the sums still match the reference, and the split follows kSplitFor.
Deno.test("matmulAffine() batched q8 path with kSplitByRows splits few rows wider and matches the reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const spec = { accumulate: false, path: "gemv" as const, kSplitByRows: true };
  const dims = { bits: 4 as const, outDim: 70, inDim: 1056, groupSize: 32, hasPerm: false };
  const ks = (rows: number, outDim = dims.outDim) => {
    const s = planMatmulAffine(spec, { ...dims, outDim, rows }).shader;
    return s.path === "q8mm" ? s.ks : -1;
  };
  assert.deepEqual([ks(2), ks(FEW_ROWS - 1), ks(FEW_ROWS), ks(12, 4097)], [16, 16, 8, 8]);
  assert.deepEqual([kSplitFor(8, 4096), kSplitFor(8, 6144), kSplitFor(40, 1024)], [16, 8, 8]);
  const rows = 12;
  const parts = randomAffine({ bits: 4, group: 32, inDim: dims.inDim, outDim: dims.outDim }, 41);
  const packed = packAffine(parts, { groupSize: 32 });
  const x = randomF32(rows * dims.inDim, 42);
  const y = createStorage(gpu, rows * dims.outDim * 4, "y");
  const bound = createMatmulAffine(gpu, spec).bind({
    x: uploadStorage(gpu, x, "x"),
    w: uploadAffine(gpu, packed, "w"),
    y,
    rows,
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  const want = matmulAffineRef(q8ActivationsRef(x, dims.inDim, packed.perm), { ...parts, ...dims });
  assertNmse(await readF32(gpu, y, rows * dims.outDim), want, 1e-6, "kSplitByRows");
  gpu.device.destroy();
});
