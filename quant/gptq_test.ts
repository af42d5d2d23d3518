import assert from "node:assert/strict";
import { createMinMaxGroupFitter, type GridInput, type GroupFitArgs, quantizeLinear } from "./gptq.ts";
import { gptqReference, type GptqResult, layerOutputError } from "./reference/reference.ts";
import { prepareLayer } from "./reference/reference_hessian.ts";
import { correlatedInputs, gaussian, hessianOf } from "./reference/_reference_cases.ts";
import { QUANTIZE_DEFAULTS, type QuantizeOptions, type QuantMethod } from "./types.ts";
import { readF32, uploadStorage } from "../kernels/core/buffers.ts";
import type { Gpu } from "../kernels/core/gpu.ts";
import { testGpu } from "../tests/_gpu.ts";

type Grid = "rtn" | "gptq" | "nu" | "aff" | "aff-hook";

interface Case {
  rows: number;
  cols: number;
  bits: 2 | 3 | 4;
  grid: Grid;
  groupSize: number;
  actOrder: boolean;
  /** Zero one input channel so H has a dead column. */
  deadCol?: number;
  blockSize?: number;
}

const METHOD: Record<Grid, QuantMethod> = {
  "rtn": "rtn",
  "gptq": "gptq",
  "nu": "leanquant-nu",
  "aff": "leanquant-aff",
  "aff-hook": "leanquant-aff",
};

/** A seeded layer: f32-representable W (so both sides see the same weights), inputs X and H = 2XXᵀ/T. */
function makeLayer(c: Case) {
  const seed = c.rows * 1000 + c.cols * 10 + c.bits;
  const X = correlatedInputs(c.cols, 2 * c.cols, seed);
  if (c.deadCol !== undefined) X.fill(0, c.deadCol * 2 * c.cols, (c.deadCol + 1) * 2 * c.cols);
  const W = gaussian(c.rows * c.cols, seed + 5).map((v) => Math.fround(0.1 * v));
  return { W, X, H: hessianOf(X, c.cols) };
}

/** Runs the f64 reference and the GPU on one case; "aff-hook" is the min-max grid through the group hook. */
async function runBoth(gpu: Gpu, c: Case, layer = makeLayer(c)) {
  const { W, H } = layer;
  const blockSize = c.blockSize ?? 128;
  const common = {
    bits: c.bits,
    groupSize: c.groupSize,
    actOrder: c.actOrder,
    blockSize,
    factor: "reversal",
  } as const;
  const refGrid = c.grid === "aff-hook" ? "gptq" : c.grid;
  const ref = gptqReference(W, H, { ...common, grid: refGrid, affT: 48, kmeansMaxIter: 50 });
  const prep = prepareLayer(W, H, { actOrder: c.actOrder, factor: "reversal" });
  const calls: GroupFitArgs[] = [];
  const minmax = createMinMaxGroupFitter(gpu, c.bits);
  const grid: GridInput = c.grid === "nu"
    ? { kind: "lut", lut: uploadStorage(gpu, Float32Array.from(ref.lut!), "lut") }
    : c.grid === "aff"
    ? { kind: "affine-row", params: uploadStorage(gpu, interleave(ref), "params") }
    : c.grid === "aff-hook"
    ? { kind: "affine-group", fitGroup: (pass, a) => (calls.push(a), minmax(pass, a)) }
    : { kind: "minmax" };
  const opts: QuantizeOptions = { ...QUANTIZE_DEFAULTS, ...common, method: METHOD[c.grid] };
  const got = await quantizeLinear(gpu, {
    W: uploadStorage(gpu, Float32Array.from(W), "W"),
    rows: c.rows,
    cols: c.cols,
    U: uploadStorage(gpu, Float32Array.from(prep.Hinv), "U"),
    perm: prep.perm,
    dead: prep.dead,
    grid,
    dampUsed: prep.dampUsed,
  }, opts);
  const Q = await readF32(gpu, got.Q, c.rows * c.cols);
  return { ref, got, Q, calls, layer };
}

/** The reference's row-wise (scale, zero) as (rows) vec2<f32>. */
function interleave(ref: GptqResult): Float32Array {
  return Float32Array.from(
    { length: 2 * ref.scale!.length },
    (_, i) => (i % 2 ? ref.zero! : ref.scale!)[i >> 1],
  );
}

/** Asserts GPU ≈ reference: ≥ 99% identical codes, close loss and grid, Q = dequant(codes) exactly. */
function assertMatches(c: Case, { ref, got, Q }: Awaited<ReturnType<typeof runBoth>>): number {
  const n = c.rows * c.cols;
  assert.equal(got.codes.length, n);
  let same = 0;
  for (let i = 0; i < n; i++) {
    assert.ok(got.codes[i] < 2 ** c.bits, `code ${got.codes[i]} at ${i} out of range`);
    if (got.codes[i] === ref.codes[i]) same++;
  }
  const frac = same / n;
  assert.ok(frac >= 0.99, `only ${(100 * frac).toFixed(2)}% identical codes`);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-3 * ref.loss + 1e-12, `loss ${got.loss} vs ${ref.loss}`);
  assert.equal(got.dampUsed, ref.dampUsed);
  const K = 2 ** c.bits;
  if (got.lut) assert.deepEqual(got.lut, Float32Array.from(ref.lut!));
  if (got.scale) {
    assert.deepEqual(got.gIdx, ref.gIdx);
    const nGroups = got.scale.length / c.rows;
    assert.equal(nGroups, ref.scale!.length / c.rows);
    let zeros = 0;
    for (let i = 0; i < got.scale.length; i++) {
      assert.ok(Math.abs(got.scale[i] - ref.scale![i]) <= 1e-4 * ref.scale![i], `scale ${i}`);
      if (got.zero![i] === ref.zero![i]) zeros++;
    }
    assert.ok(zeros >= 0.99 * got.scale.length, `zero-points differ in ${got.scale.length - zeros} groups`);
  }
  for (let r = 0; r < c.rows; r++) {
    for (let col = 0; col < c.cols; col++) {
      const code = got.codes[r * c.cols + col];
      const gi = got.gIdx ? r * (got.scale!.length / c.rows) + got.gIdx[col] : 0;
      const q: number = got.lut
        ? got.lut[r * K + code]
        : Math.fround(got.scale![gi] * (code - got.zero![gi]));
      assert.equal(Q[r * c.cols + col], q, `Q(${r}, ${col}) is not the dequantized code`);
    }
  }
  return frac;
}

Deno.test("quantizeLinear() matches gptqReference across shapes, grids and act-order", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cases: Case[] = [
    { rows: 1, cols: 7, bits: 4, grid: "gptq", groupSize: 0, actOrder: false },
    { rows: 7, cols: 63, bits: 3, grid: "gptq", groupSize: 32, actOrder: true },
    { rows: 33, cols: 64, bits: 2, grid: "rtn", groupSize: 0, actOrder: true, deadCol: 5 },
    { rows: 64, cols: 65, bits: 4, grid: "gptq", groupSize: 64, actOrder: true, deadCol: 3 },
    { rows: 33, cols: 130, bits: 3, grid: "gptq", groupSize: 128, actOrder: false },
    { rows: 64, cols: 256, bits: 4, grid: "gptq", groupSize: 128, actOrder: true },
    { rows: 64, cols: 256, bits: 2, grid: "gptq", groupSize: 0, actOrder: true, deadCol: 200 },
    { rows: 7, cols: 130, bits: 2, grid: "rtn", groupSize: 32, actOrder: true },
    { rows: 33, cols: 130, bits: 4, grid: "nu", groupSize: 0, actOrder: true, deadCol: 129 },
    { rows: 7, cols: 65, bits: 2, grid: "nu", groupSize: 0, actOrder: false },
    { rows: 64, cols: 256, bits: 3, grid: "nu", groupSize: 0, actOrder: true },
    { rows: 33, cols: 130, bits: 4, grid: "aff", groupSize: 0, actOrder: true },
    { rows: 7, cols: 64, bits: 2, grid: "aff", groupSize: 0, actOrder: false },
    { rows: 33, cols: 130, bits: 3, grid: "gptq", groupSize: 48, actOrder: true, blockSize: 32 },
  ];
  for (const c of cases) {
    const name = `rows ${c.rows}, cols ${c.cols}, ${c.bits}-bit ${c.grid} g${c.groupSize}` +
      `${c.actOrder ? ", act-order" : ""}${c.deadCol !== undefined ? ", dead column" : ""}` +
      `${c.blockSize ? `, block ${c.blockSize}` : ""}`;
    await t.step(name, async () => {
      const frac = assertMatches(c, await runBoth(gpu, c));
      console.log(`  identical codes: ${(100 * frac).toFixed(2)}%`);
    });
  }
  gpu.device.destroy();
});

Deno.test("quantizeLinear() calls the affine-group hook at every group start on the current W", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  // groupSize < blockSize (groups start mid-block on stale W), not dividing it, and spanning blocks.
  for (const [groupSize, blockSize] of [[32, 128], [48, 64], [200, 64]]) {
    await t.step(`groupSize ${groupSize}, blockSize ${blockSize}`, async () => {
      const c: Case = { rows: 9, cols: 256, bits: 3, grid: "aff-hook", groupSize, actOrder: true, blockSize };
      const run = await runBoth(gpu, c);
      const starts = run.calls.map((a) => [a.colStart, a.groupCols, a.groupIndex, a.nGroups]);
      const want = Array.from({ length: Math.ceil(256 / groupSize) }, (_, gi) => {
        const k = gi * groupSize;
        return [k, Math.min(groupSize, 256 - k), gi, Math.ceil(256 / groupSize)];
      });
      assert.deepEqual(starts, want);
      const frac = assertMatches(c, run);
      // Fits at every block start (blockSize 4) see fresh columns: the codes must be closer to the stale fit.
      const { W, H } = run.layer;
      const fresh = gptqReference(W, H, { bits: 3, grid: "gptq", groupSize, actOrder: true, blockSize: 4 });
      const differ = fresh.codes.filter((v, i) => v !== run.got.codes[i]).length / fresh.codes.length;
      console.log(
        `  identical codes: ${(100 * frac).toFixed(2)}%, ${
          (100 * differ).toFixed(2)
        }% differ from fresh fits`,
      );
      assert.ok(differ > 1 - frac, "the codes are no closer to the stale-W fit than to a fresh one");
    });
  }
  gpu.device.destroy();
});

Deno.test("quantizeLinear() GPTQ has a lower output error than RTN on the same grid", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [grid, groupSize] of [["gptq", 0], ["gptq", 32], ["nu", 0]] as const) {
    await t.step(`${grid} g${groupSize}`, async () => {
      const c: Case = { rows: 16, cols: 96, bits: 3, grid, groupSize, actOrder: true };
      const layer = makeLayer(c);
      const withFeedback = await runBoth(gpu, c, layer);
      // RTN on the very grid GPTQ used: min-max refits on the unchanged W, the LUT is reused as is.
      const rtnCase: Case = { ...c, grid: grid === "nu" ? "nu" : "rtn" };
      const rtn = grid === "nu"
        ? await runRtnOnLut(gpu, c, layer, withFeedback.got.lut!)
        : await runBoth(gpu, rtnCase, layer);
      const opts = { X: layer.X, cols: c.cols };
      const eG = layerOutputError(layer.W, withFeedback.Q, opts);
      const eR = layerOutputError(layer.W, rtn.Q, opts);
      console.log(`  output error: gptq ${eG.toExponential(3)}, rtn ${eR.toExponential(3)}`);
      assert.ok(eG < eR, `GPTQ ${eG} is not below RTN ${eR}`);
    });
  }
  gpu.device.destroy();
});

/** RTN (no feedback) on a given LUT; checks it codes every weight to its nearest entry. */
async function runRtnOnLut(gpu: Gpu, c: Case, layer: ReturnType<typeof makeLayer>, lut: Float32Array) {
  const prep = prepareLayer(layer.W, layer.H, { actOrder: c.actOrder, factor: "reversal" });
  const got = await quantizeLinear(gpu, {
    W: uploadStorage(gpu, Float32Array.from(layer.W), "W"),
    rows: c.rows,
    cols: c.cols,
    U: uploadStorage(gpu, Float32Array.from(prep.Hinv), "U"),
    perm: prep.perm,
    dead: prep.dead,
    grid: { kind: "lut", lut: uploadStorage(gpu, lut, "lut") },
  }, { ...QUANTIZE_DEFAULTS, bits: c.bits, method: "rtn" });
  const K = 2 ** c.bits;
  for (let i = 0; i < c.rows * c.cols; i++) {
    const r = Math.floor(i / c.cols);
    const dist = (k: number) => Math.abs(lut[r * K + k] - layer.W[i]);
    for (let k = 0; k < K; k++) {
      assert.ok(dist(got.codes[i]) <= dist(k), `weight ${i} not at its nearest entry`);
    }
  }
  return { got, Q: await readF32(gpu, got.Q, c.rows * c.cols) };
}

Deno.test("quantizeLinear() rejects inconsistent layers", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const buf = uploadStorage(gpu, new Float32Array(64), "buf");
  const layer = {
    W: buf,
    rows: 2,
    cols: 4,
    U: buf,
    perm: Int32Array.from([0, 1, 2, 3]),
    dead: new Uint8Array(4),
  };
  const opts: QuantizeOptions = { ...QUANTIZE_DEFAULTS, method: "gptq", bits: 4 };
  const minmax = { kind: "minmax" } as const;
  await assert.rejects(
    quantizeLinear(gpu, { ...layer, perm: Int32Array.from([0, 1, 1, 3]), grid: minmax }, opts),
    /perm is not a permutation of 4 columns/,
  );
  await assert.rejects(
    quantizeLinear(gpu, { ...layer, grid: { kind: "lut", lut: buf } }, opts),
    /method "gptq" cannot use a "lut" grid/,
  );
  await assert.rejects(
    quantizeLinear(gpu, { ...layer, grid: { kind: "affine-group", fitGroup: () => {} } }, {
      ...opts,
      method: "leanquant-aff",
    }),
    /"affine-group" grid needs groupSize > 0/,
  );
  await assert.rejects(
    quantizeLinear(gpu, { ...layer, grid: minmax }, { ...opts, blockSize: 6 }),
    /blockSize 6/,
  );
  gpu.device.destroy();
});
