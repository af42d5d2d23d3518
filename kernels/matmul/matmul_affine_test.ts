import assert from "node:assert/strict";
import { AFFINE_GEMV_MAX_ROWS, planMatmulAffine } from "./matmul_affine_plan.ts";
import { createMatmulAffine, uploadAffine } from "./matmul_affine.ts";
import { matmulAffineRef, q8ActivationsRef, rmsNormRef } from "../core/reference.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { packAffine, packAutoGptq, toAutoGptq } from "../../quant/pack_affine.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";
import { type Case, caseName, randomAffine, runCase } from "../../tests/_affine_case.ts";

const CASES: Case[] = [
  // GEMV reading x in place (inDim % 32 == 0, original column order)
  { bits: 4, group: 128, rows: 1, inDim: 384, outDim: 65 },
  { bits: 4, group: 32, rows: 1, inDim: 128, outDim: 7, accumulate: true },
  { bits: 3, group: 128, rows: 1, inDim: 384, outDim: 65 },
  { bits: 3, group: 64, rows: 8, inDim: 64, outDim: 7, accumulate: true },
  { bits: 2, group: 64, rows: 1, inDim: 384, outDim: 65, accumulate: true },
  { bits: 2, group: 0, rows: 8, inDim: 64, outDim: 65 },
  { bits: 2, group: 32, rows: 3, inDim: 128, outDim: 1 },
  { bits: 4, group: 32, rows: 1, inDim: 64, outDim: 4097 },
  // GEMV through the prep pass (act-order permutation and/or inDim % 32 ≠ 0)
  { bits: 4, group: 0, rows: 1, inDim: 4097, outDim: 7 },
  { bits: 4, group: 64, gIdx: true, rows: 3, inDim: 384, outDim: 65 },
  { bits: 4, group: 128, gIdx: true, rows: 8, inDim: 4097, outDim: 7, accumulate: true },
  { bits: 3, group: 32, gIdx: true, rows: 1, inDim: 128, outDim: 65 },
  { bits: 3, group: 0, rows: 3, inDim: 4097, outDim: 1 },
  { bits: 2, group: 128, gIdx: true, rows: 1, inDim: 4097, outDim: 7 },
  // GEMM (rows > 8): K tails, N tails, gathered activations
  { bits: 4, group: 128, rows: 9, inDim: 384, outDim: 65 },
  { bits: 4, group: 32, gIdx: true, rows: 33, inDim: 128, outDim: 7, accumulate: true },
  { bits: 4, group: 64, gIdx: true, rows: 33, inDim: 4097, outDim: 1 },
  { bits: 3, group: 0, rows: 9, inDim: 4097, outDim: 7 },
  { bits: 3, group: 64, gIdx: true, rows: 33, inDim: 384, outDim: 65 },
  { bits: 2, group: 128, rows: 33, inDim: 4097, outDim: 7, accumulate: true },
  { bits: 2, group: 32, gIdx: true, rows: 9, inDim: 128, outDim: 65 },
  { bits: 3, group: 32, rows: 65, inDim: 64, outDim: 130 },
  { bits: 4, group: 128, rows: 130, inDim: 256, outDim: 129 },
  // offsets and strides (LM-head-style last row; a panel writing its own column range)
  {
    bits: 4,
    group: 128,
    rows: 1,
    inDim: 384,
    outDim: 65,
    accumulate: true,
    xRowOffset: 2,
    yColOffset: 3,
    yStride: 80,
  },
  {
    bits: 3,
    group: 32,
    gIdx: true,
    rows: 3,
    inDim: 128,
    outDim: 7,
    xRowOffset: 1,
    yColOffset: 5,
    yStride: 70,
  },
  {
    bits: 2,
    group: 0,
    rows: 9,
    inDim: 96,
    outDim: 65,
    accumulate: true,
    xRowOffset: 4,
    yColOffset: 1,
    yStride: 66,
  },
];

Deno.test("matmulAffine() matches the f64 reference across bits, groups, g_idx and shapes", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of CASES) await t.step(caseName(c), () => runCase(gpu, c));
  gpu.device.destroy();
});

Deno.test("matmulAffine() GEMV is right for every specialised row count", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (let rows = 1; rows <= AFFINE_GEMV_MAX_ROWS; rows++) {
    for (const bits of [3, 4] as const) {
      const c: Case = { bits, group: 32, rows, inDim: 96, outDim: 40, accumulate: true, activations: "f32" };
      assert.equal(
        planMatmulAffine({ accumulate: true, activations: "f32" }, { ...c, groupSize: 32, hasPerm: false })
          .shader.path,
        "gemv",
      );
      await t.step(`rows ${rows}, ${bits}-bit`, () => runCase(gpu, c));
    }
  }
  gpu.device.destroy();
});

// Every GEMV build the planner can be told to use: direct or staged activations, factored or per-code
// dequantization, K unrolling, other tiles; and the GEMM with other tiles.
const TUNED: Case[] = [
  {
    bits: 3,
    group: 32,
    rows: 2,
    inDim: 384,
    outDim: 33,
    activations: "f32",
    tune: { staged: false, perCode: false, unrollK: 2 },
  },
  {
    bits: 4,
    group: 64,
    gIdx: true,
    rows: 1,
    inDim: 4097,
    outDim: 7,
    activations: "f32",
    tune: { staged: false, perCode: true, nr: 8 },
  },
  {
    bits: 2,
    group: 128,
    rows: 5,
    inDim: 384,
    outDim: 65,
    activations: "f32",
    tune: { staged: false, perCode: true, tpr: 16 },
  },
  {
    bits: 3,
    group: 0,
    rows: 1,
    inDim: 4097,
    outDim: 17,
    activations: "f32",
    tune: { perCode: true, nr: 2, wg: 128 },
  },
  {
    bits: 4,
    group: 32,
    rows: 6,
    inDim: 1024,
    outDim: 9,
    activations: "f32",
    tune: { staged: false, perCode: false, tpr: 64, nr: 1 },
  },
  {
    bits: 2,
    group: 64,
    gIdx: true,
    rows: 4,
    inDim: 384,
    outDim: 40,
    activations: "f32",
    tune: { tpr: 8, nr: 8 },
  },
  {
    bits: 4,
    group: 128,
    gIdx: true,
    rows: 3,
    inDim: 1024,
    outDim: 33,
    activations: "f32",
    tune: { perCode: false, nr: 4, tpr: 32 },
  },
  { bits: 3, group: 128, rows: 17, inDim: 384, outDim: 65, activations: "f32", tune: { tm: 64, tn: 32 } },
  // the GEMM: exact f32 pinned (the default), f16 arithmetic with TK 16 and 32 (the f16 default)
  { bits: 4, group: 32, gIdx: true, rows: 33, inDim: 4097, outDim: 65, gemmMath: "f32", accumulate: true },
  { bits: 3, group: 0, rows: 9, inDim: 384, outDim: 7, gemmMath: "f16", tune: { tk: 16 } },
  { bits: 4, group: 128, rows: 40, inDim: 1056, outDim: 70, gemmMath: "f16", tune: { tm: 32 } },
  { bits: 2, group: 64, gIdx: true, rows: 129, inDim: 4097, outDim: 9, accumulate: true, gemmMath: "f16" },
  // the pipelined GEMM (double-buffered tiles), f16 and f32, K and row/column tails, act-order, 3-bit
  {
    bits: 4,
    group: 128,
    rows: 130,
    inDim: 1056,
    outDim: 129,
    accumulate: true,
    gemmMath: "f16",
    tune: { pipelined: true },
  },
  {
    bits: 3,
    group: 32,
    gIdx: true,
    rows: 40,
    inDim: 4097,
    outDim: 65,
    gemmMath: "f16",
    tune: { pipelined: true, tk: 32, tm: 32 },
  },
  {
    bits: 2,
    group: 0,
    rows: 17,
    inDim: 384,
    outDim: 7,
    gemmMath: "f32",
    tune: { pipelined: true, tm: 64, tn: 32 },
  },
];

// The q8 GEMV: every piece count per invocation, gathered and in-place activations, one and two rows,
// tails of K (inDim % 32) and of the output rows, other workgroup shapes.
const Q8: Case[] = [
  { bits: 4, group: 128, rows: 1, inDim: 4096, outDim: 37 },
  { bits: 4, group: 32, rows: 2, inDim: 9216, outDim: 19, accumulate: true },
  { bits: 2, group: 64, rows: 1, inDim: 8192 + 320, outDim: 17, tune: { rb: 8, unroll: 2 } },
  { bits: 2, group: 0, gIdx: false, rows: 2, inDim: 1000, outDim: 33 },
  { bits: 4, group: 64, gIdx: true, rows: 1, inDim: 2080, outDim: 40, tune: { wg: 64, rb: 32, unroll: 8 } },
  { bits: 4, group: 0, rows: 1, inDim: 64, outDim: 3 },
  // with the RMSNorm prologue: in place, gathered through act-order, and with a K tail
  { bits: 4, group: 128, rows: 1, inDim: 4096, outDim: 37, norm: true },
  { bits: 2, group: 64, gIdx: true, rows: 2, inDim: 1024, outDim: 33, norm: true, accumulate: true },
  { bits: 4, group: 0, rows: 1, inDim: 4097, outDim: 19, norm: true, tune: { rb: 8 } },
  // with the SiLU·mul prologue (down_proj): in place, gathered, a K tail, an x row offset
  { bits: 4, group: 128, rows: 1, inDim: 14336, outDim: 21, siluMul: true, accumulate: true },
  { bits: 2, group: 32, gIdx: true, rows: 2, inDim: 512, outDim: 17, siluMul: true },
  // 3-bit pieces (three words, 12-bit groups spread into bytes) with both prologues and a K tail
  { bits: 3, group: 128, rows: 2, inDim: 4096, outDim: 19, norm: true },
  { bits: 3, group: 32, gIdx: true, rows: 1, inDim: 1000, outDim: 17, siluMul: true, accumulate: true },
  { bits: 4, group: 0, rows: 1, inDim: 1000, outDim: 9, siluMul: true, xRowOffset: 2 },
];

Deno.test("matmulAffine() q8 GEMV matches the reference with int8 activations", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of Q8) await t.step(caseName(c), () => runCase(gpu, c));
  gpu.device.destroy();
});

// Several matrices sharing x in one q8 dispatch (q/k/v, gate/up): each y must equal its own product,
// with the prologue applied once; act-order weights share one perm buffer.
Deno.test("matmulAffine() q8 GEMV over several matrices writes each product to its own y", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cases = [
    { bits: 4 as const, group: 128, gIdx: false, rows: 1, inDim: 512, outDims: [64, 16, 16], norm: true },
    { bits: 2 as const, group: 32, gIdx: true, rows: 2, inDim: 320, outDims: [40, 33], norm: false },
    { bits: 4 as const, group: 64, gIdx: true, rows: 1, inDim: 4097, outDims: [7, 9, 130], norm: true },
    { bits: 3 as const, group: 128, gIdx: true, rows: 1, inDim: 384, outDims: [40, 8, 8], norm: true },
  ];
  for (const c of cases) {
    await t.step(JSON.stringify(c), async () => {
      const parts = c.outDims.map((outDim, i) => randomAffine({ ...c, outDim }, 100 + i));
      // act-order: the matrices of one group share the Hessian, hence the permutation
      for (const p of parts.slice(1)) if (parts[0].gIdx) p.gIdx = parts[0].gIdx;
      const packed = parts.map((p) => packAffine(p, { groupSize: c.group }));
      const ws = packed.map((p, i) => uploadAffine(gpu, p, `w${i}`));
      for (const w of ws.slice(1)) w.perm = ws[0].perm;
      const x = randomF32(c.rows * c.inDim, 7);
      const normWeight = Float32Array.from({ length: c.inDim }, (_, i) => 0.5 + (i % 13) / 10);
      const ys = c.outDims.map((d) => createStorage(gpu, c.rows * d * 4, "y"));
      const bound = createMatmulAffine(gpu, { accumulate: false }).bind({
        x: uploadStorage(gpu, x, "x"),
        w: ws[0],
        y: ys[0],
        rows: c.rows,
        more: ws.slice(1).map((w, i) => ({ w, y: ys[i + 1] })),
        ...(c.norm ? { norm: { weight: uploadStorage(gpu, normWeight, "nw"), eps: 1e-5 } } : {}),
      });
      await checkPipelines(gpu);
      runPass(gpu, (pass) => bound.encode(pass));
      const xs = c.norm ? rmsNormRef(x, normWeight, c.rows, 1e-5) : x;
      for (const [i, outDim] of c.outDims.entries()) {
        const got = await readF32(gpu, ys[i], c.rows * outDim);
        const xq = q8ActivationsRef(xs, c.inDim, packed[0].perm);
        const want = matmulAffineRef(xq, { ...parts[i], outDim, inDim: c.inDim, groupSize: c.group });
        assertNmse(got, want, 1e-6, `matrix ${i}`);
      }
    });
  }
  const w = uploadAffine(
    gpu,
    packAffine(randomAffine({ bits: 4, group: 32, inDim: 64, outDim: 8 }, 1), {
      groupSize: 32,
    }),
    "w",
  );
  const other = uploadAffine(
    gpu,
    packAffine(randomAffine({ bits: 2, group: 32, inDim: 64, outDim: 8 }, 2), {
      groupSize: 32,
    }),
    "o",
  );
  const buf = createStorage(gpu, 4096, "buf");
  const k = createMatmulAffine(gpu, { accumulate: false });
  assert.throws(
    () => k.bind({ x: buf, w, y: buf, rows: 1, more: [{ w: other, y: createStorage(gpu, 64, "y") }] }),
    /bits, inDim and groupSize must equal/,
  );
  gpu.device.destroy();
});

Deno.test("matmulAffine() tuned builds match the f64 reference", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of TUNED) await t.step(caseName(c), () => runCase(gpu, c));
  gpu.device.destroy();
});

Deno.test("matmulAffine() runs AutoGPTQ tensors packed into its layout", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4] as const) {
    for (const rows of [1, 9]) {
      const c: Case = { bits, group: 32, gIdx: true, rows, inDim: 128, outDim: 64 };
      // AutoGPTQ zeros are integers 1..2^b (v1 stores zero − 1 in b bits).
      const parts = randomAffine(c, bits * 10 + rows);
      parts.zero = parts.zero.map((z) => 1 + Math.round(z));
      const tensors = toAutoGptq(parts, { groupSize: c.group });
      const packed = packAutoGptq(tensors, { bits, outDim: c.outDim, inDim: c.inDim, groupSize: c.group });
      await t.step(caseName(c), () => runCase(gpu, c, { parts, packed }));
    }
  }
  gpu.device.destroy();
});

Deno.test("matmulAffine() splits dispatches past maxComputeWorkgroupsPerDimension", async (t) => {
  const real = await testGpu();
  if (!real) return;
  const gpu: Gpu = { ...real, maxWorkgroupsPerDimension: 50 };
  for (
    const c of [
      { bits: 4, group: 32, gIdx: true, rows: 2, inDim: 4096, outDim: 2049 },
      { bits: 2, group: 64, rows: 9, inDim: 64, outDim: 8193 },
    ] as Case[]
  ) {
    const plan = planMatmulAffine({ accumulate: false }, { ...c, groupSize: c.group, hasPerm: !!c.gIdx });
    assert.ok(plan.workgroups > 50, `case must need a 2-D dispatch, has ${plan.workgroups} workgroups`);
    await t.step(caseName(c), () => runCase(gpu, c));
  }
  real.device.destroy();
});

Deno.test("matmulAffine() bind rejects bad shapes with the offending value", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const packed = packAffine(randomAffine({ bits: 4, group: 32, inDim: 64, outDim: 8 }, 1), { groupSize: 32 });
  const w = uploadAffine(gpu, packed, "w");
  const buf = createStorage(gpu, 4096, "buf");
  const k = createMatmulAffine(gpu, { accumulate: false });
  const base = { x: buf, w, y: createStorage(gpu, 4096, "y"), rows: 1 };
  assert.throws(() => k.bind({ ...base, rows: 0 }), /rows must be a positive integer, got 0/);
  assert.throws(() => k.bind({ ...base, yStride: 8, yColOffset: 1 }), /yStride 8 is less than/);
  assert.throws(
    () => k.bind({ ...base, rows: 2, xRowOffset: 15 }),
    /buffer "x" holds 4096 bytes, needs 4352/,
  );
  assert.throws(() => k.bind({ ...base, w: { ...w, groupSize: 48 } }), /multiple of 32, got 48/);
  const norm = { weight: createStorage(gpu, 256, "norm weight"), eps: 1e-5 };
  assert.throws(
    () => createMatmulAffine(gpu, { accumulate: false, activations: "f32" }).bind({ ...base, norm }),
    /a fused norm needs the q8 GEMV/,
  );
  assert.throws(
    () => k.bind({ ...base, norm: { ...norm, weight: createStorage(gpu, 64, "short") } }),
    /"norm weight" holds 64 bytes, needs 256/,
  );
  assert.throws(
    () => k.bind({ ...base, w: { ...w, outDim: 9 } }),
    /buffer "codes" holds 256 bytes, needs 288/,
  );
  gpu.device.destroy();
});
