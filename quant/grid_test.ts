import assert from "node:assert/strict";
import {
  createAffineGroupFitter,
  encodeAffineGroupSearch,
  fitLut,
  importanceFromDiagonal,
  importanceFromFactor,
  readAffineParams,
  searchAffine,
} from "./grid.ts";
import {
  affineCode,
  affSearch,
  affSearchFast,
  defaultAffSteps,
  importanceWeights,
  nearestCode,
  roundToF16,
  weightedGridError,
  weightedKMeans,
} from "./reference/reference_grid.ts";
import { type PreparedLayer, prepareLayer } from "./reference/reference_hessian.ts";
import { correlatedInputs, gaussian, hessianOf } from "./reference/_reference_cases.ts";
import { checkPipelines, type Gpu } from "../kernels/core/gpu.ts";
import { createStorage, readF32, readU32, uploadStorage } from "../kernels/core/buffers.ts";
import { assertAllClose } from "../tests/_assert.ts";
import { testGpu } from "../tests/_gpu.ts";

const ROWS = 24, COLS = 96;

/** A prepared layer like a real one: correlated inputs, an outlier channel, one dead column, act-order. */
function layer(): PreparedLayer {
  const H = hessianOf(correlatedInputs(COLS, 4 * COLS, 11), COLS);
  for (let i = 0; i < COLS; i++) H[5 * COLS + i] = H[i * COLS + 5] = 0;
  const W = Float32Array.from(gaussian(ROWS * COLS, 12), (v) => 0.02 * v);
  return prepareLayer(W, H, { actOrder: true, percdamp: 0.01 });
}

/** Uploads the prepared layer's U and permuted W as f32. */
function upload(gpu: Gpu, prep: PreparedLayer) {
  return {
    U: uploadStorage(gpu, Float32Array.from(prep.Hinv), "U"),
    W: uploadStorage(gpu, Float32Array.from(prep.W), "W"),
  };
}

Deno.test("importanceFromFactor() and fitLut() in one pass reproduce the reference's nu grid", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const prep = layer();
  const { U, W } = upload(gpu, prep);
  const aRef = importanceWeights(prep.Hinv, COLS, 4);
  const diag = Float32Array.from({ length: COLS }, (_, k) => prep.Hinv[k * COLS + k]);
  assertAllClose(importanceFromDiagonal(diag), aRef, { rtol: 2e-6, atol: 1e-37, what: "host importance" });
  for (const bits of [2, 3, 4]) {
    const K = 2 ** bits;
    const encoder = gpu.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    const importance = importanceFromFactor(gpu, { U, cols: COLS, pass });
    const lut = fitLut(gpu, { W, rows: ROWS, cols: COLS, importance, bits, pass });
    pass.end();
    gpu.device.queue.submit([encoder.finish()]);
    await checkPipelines(gpu);
    assertAllClose(await readF32(gpu, importance, COLS), aRef, {
      rtol: 2e-6,
      atol: 1e-37,
      what: "importance",
    });
    const got = await readF32(gpu, lut, ROWS * K);
    let identical = 0;
    for (let r = 0; r < ROWS; r++) {
      const x = prep.W.subarray(r * COLS, (r + 1) * COLS);
      const ref = weightedKMeans(x, aRef, { k: K }).centers.map(roundToF16);
      const row = got.subarray(r * K, (r + 1) * K);
      if (row.every((v, j) => v === ref[j])) {
        identical++;
        continue;
      }
      const errOf = (c: ArrayLike<number>) => weightedGridError(x, aRef, (v) => c[nearestCode(c, v)]);
      assert.ok(errOf(row) <= errOf(ref) * (1 + 1e-3), `bits ${bits} row ${r}: LUT ${row} vs ${ref}`);
    }
    console.log(`fitLut bits ${bits}: ${identical}/${ROWS} rows identical to the f64 pipeline`);
    assert.ok(identical >= 0.9 * ROWS, `bits ${bits}: only ${identical}/${ROWS} identical rows`);
  }
  gpu.device.destroy();
});

/** Compares GPU (scale, zero, i·t + j) with a reference search of every set; returns the agreement. */
function agreement(
  sets: { x: ArrayLike<number>; a: ArrayLike<number> }[],
  got: { scale: Float32Array; zero: Float32Array; choice: Uint32Array },
  search: (x: ArrayLike<number>, a: ArrayLike<number>) => ReturnType<typeof affSearch>,
  { bits, t }: { bits: number; t: number },
): number {
  let same = 0;
  sets.forEach(({ x, a }, s) => {
    const ref = search(x, a);
    const p = { scale: got.scale[s], zero: got.zero[s] };
    const err = weightedGridError(x, a, (v) => p.scale * (affineCode(v, p, 2 ** bits - 1) - p.zero));
    assert.ok(err <= ref.err * (1 + 1e-5) + 1e-30, `set ${s}: objective ${err} vs ${ref.err}`);
    if (got.choice[s] === ref.i * t + ref.j) same++;
  });
  return same / sets.length;
}

Deno.test("searchAffine() row-wise at T = 2048 matches affSearchFast on a prepared layer", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const prep = layer();
  const { U, W } = upload(gpu, prep);
  const importance = importanceFromFactor(gpu, { U, cols: COLS });
  const a = await readF32(gpu, importance, COLS);
  const rows = 8;
  for (const bits of [2, 4]) {
    const t = defaultAffSteps(bits);
    const choice = createStorage(gpu, rows * 4, "choice");
    const params = searchAffine(gpu, { W, rows, cols: COLS, importance, bits, choice });
    const got = {
      ...await readAffineParams(gpu, params, { rows, nGroups: 1 }),
      choice: await readU32(gpu, choice, rows),
    };
    const sets = Array.from(
      { length: rows },
      (_, r) => ({ x: prep.W.subarray(r * COLS, (r + 1) * COLS), a }),
    );
    const frac = agreement(sets, got, (x, aSet) => affSearchFast(x, aSet, { bits }), { bits, t });
    console.log(`searchAffine row-wise bits ${bits}: same (i, j) on ${(100 * frac).toFixed(1)}% of rows`);
    assert.ok(frac >= 0.99);
  }
  gpu.device.destroy();
});

Deno.test("encodeAffineGroupSearch() and createAffineGroupFitter() at group starts equal one static searchAffine()", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const prep = layer();
  const { U, W } = upload(gpu, prep);
  const importance = importanceFromFactor(gpu, { U, cols: COLS });
  const a = await readF32(gpu, importance, COLS);
  const bits = 3, T = 256, g = 40; // groups of 40, 40 and a 16-column tail
  const t = defaultAffSteps(bits, T);
  const nGroups = Math.ceil(COLS / g);
  const slots = ROWS * nGroups;
  const [staticParams, staticChoice, hookParams, hookChoice] = [8, 4, 8, 4].map((b) =>
    createStorage(gpu, slots * b, "out")
  );
  searchAffine(gpu, {
    W,
    rows: ROWS,
    cols: COLS,
    importance,
    bits,
    groupSize: g,
    T,
    params: staticParams,
    choice: staticChoice,
  });
  const encoder = gpu.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  for (let gi = nGroups - 1; gi >= 0; gi--) {
    const common = {
      gpu,
      W,
      rows: ROWS,
      cols: COLS,
      importance,
      bits,
      T,
      params: hookParams,
      choice: hookChoice,
    };
    encodeAffineGroupSearch(pass, { ...common, colStart: gi * g, groupCols: g, groupIndex: gi });
  }
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
  // The GPTQ-loop adapter derives the importance from U inside the same pass, at the first group.
  const fitter = createAffineGroupFitter(gpu, { bits, T });
  const fitterParams = createStorage(gpu, slots * 8, "fitter params");
  const encoder2 = gpu.device.createCommandEncoder();
  const pass2 = encoder2.beginComputePass();
  for (let gi = 0; gi < nGroups; gi++) {
    const args = { W, U, rows: ROWS, cols: COLS, nGroups, params: fitterParams };
    fitter(pass2, { ...args, colStart: gi * g, groupCols: Math.min(g, COLS - gi * g), groupIndex: gi });
  }
  pass2.end();
  gpu.device.queue.submit([encoder2.finish()]);
  const hook = await readF32(gpu, hookParams, 2 * slots);
  assert.deepEqual(hook, await readF32(gpu, staticParams, 2 * slots));
  assert.deepEqual(await readF32(gpu, fitterParams, 2 * slots), hook);
  const choice = await readU32(gpu, hookChoice, slots);
  assert.deepEqual(choice, await readU32(gpu, staticChoice, slots));
  const sets = [];
  for (let r = 0; r < ROWS; r++) {
    for (let gi = 0; gi < nGroups; gi++) {
      const c0 = gi * g, c1 = Math.min(c0 + g, COLS);
      sets.push({ x: prep.W.subarray(r * COLS + c0, r * COLS + c1), a: a.subarray(c0, c1) });
    }
  }
  const { scale, zero } = await readAffineParams(gpu, hookParams, { rows: ROWS, nGroups });
  const frac = agreement(sets, { scale, zero, choice }, (x, aSet) => affSearch(x, aSet, { bits, T, t }), {
    bits,
    t,
  });
  console.log(`group search: same (i, j) on ${(100 * frac).toFixed(1)}% of ${sets.length} groups`);
  assert.ok(frac >= 0.99);
  gpu.device.destroy();
});
