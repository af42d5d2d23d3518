import assert from "node:assert/strict";
import { createMatmulLut, type LutWeights, uploadLut } from "./matmul_lut.ts";
import { type LutTune, planMatmulLut } from "./matmul_lut_plan.ts";
import { lutQ8GemvWorkgroupBytes } from "./matmul_lut_q8_wgsl.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { type Encodable, sequence } from "../core/mod.ts";
import { rmsNormRef, siluMulRef } from "../core/reference.ts";
import { type LutParts, packLut } from "../../quant/pack_lut.ts";
import { assertStridedMatmul } from "../../tests/_assert.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { type Case, randomLut } from "../../tests/_lut_case.ts";

/** The int8 GEMV, opt-in (LutTune.q8Gemv: slower than the f32 GEMV for one row on the H100). */
const ON: LutTune = { q8Gemv: true };

// The int8 GEMV (unpinned, q8 activations, ≤ 2 rows): every bit width, K tails (inDim % 32 ≠ 0) and pieces
// per lane past one, output tails (outDim not a multiple of RB), both prologues, offsets, strides and
// accumulation, both kinds of tables, other launch shapes.
const CASES: Case[] = [
  { bits: 4, rows: 1, inDim: 1000, outDim: 37 },
  { bits: 3, rows: 1, inDim: 320, outDim: 70, accumulate: true, xRowOffset: 2, yColOffset: 3, yStride: 80 },
  { bits: 2, rows: 1, inDim: 65, outDim: 19, prologue: "siluMul" },
  { bits: 4, rows: 1, inDim: 4097, outDim: 33, prologue: "norm", accumulate: true },
  {
    bits: 3,
    rows: 2,
    inDim: 512,
    outDim: 45,
    prologue: "siluMul",
    xRowOffset: 1,
    yColOffset: 2,
    yStride: 50,
  },
  { bits: 2, rows: 1, inDim: 8192 + 64, outDim: 9 },
  { bits: 4, rows: 2, inDim: 96, outDim: 130, prologue: "norm", yColOffset: 5, yStride: 140 },
  { bits: 2, rows: 1, inDim: 256, outDim: 41, tune: { q8Chunks: false }, accumulate: true },
  { bits: 3, rows: 1, inDim: 1000, outDim: 21, tune: { q8Chunks: false }, prologue: "siluMul" },
  { bits: 4, rows: 1, inDim: 2080, outDim: 70, tune: { q8Chunks: false, rb: 8, unroll: 2 }, xRowOffset: 1 },
  { bits: 3, rows: 1, inDim: 640, outDim: 67, tune: { rb: 16, unroll: 8 } },
];

/** Round half to even, as WGSL round(). */
function rne(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `n` (≤ 32) values of `v` from `from` as int8 values and their scale, as the kernel computes them in f32. */
function quantize(v: ArrayLike<number>, from: number, n: number): { q: number[]; d: number } {
  const f = Math.fround;
  let am = 0;
  for (let k = 0; k < n; k++) am = Math.max(am, Math.abs(f(v[from + k])));
  const inv = am > 0 ? f(127 / am) : 0;
  return { q: Array.from({ length: n }, (_, k) => rne(f(f(v[from + k]) * inv))), d: f(am / 127) };
}

/**
 * The int8 arithmetic in f64: x quantized per 32 columns, each output's table to int8 (per-row scale), exact
 * integer dot products per piece, y[r, o] = s_o · Σ_p d_p · Σ l8 · q. Also mag[r, o] = |s_o| · Σ_p |d_p · dot_p|,
 * which bounds the f32 rounding of any order of that sum.
 * @param xs (rows, inDim) activations after the prologue
 */
function q8GemvRef(xs: ArrayLike<number>, w: LutParts): { y: Float64Array; mag: Float64Array } {
  const { rows: outDim, cols: inDim } = w;
  const levels = 1 << w.bits;
  const rows = xs.length / inDim;
  const tables = Array.from({ length: outDim }, (_, o) => {
    const t = Array.from({ length: levels }, (_, c) => w.lut[o * levels + c]);
    const { q, d } = quantize(t, 0, levels);
    return { l8: q, s: d };
  });
  const y = new Float64Array(rows * outDim);
  const mag = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let p = 0; p < inDim; p += 32) {
      const n = Math.min(32, inDim - p);
      const { q, d } = quantize(xs, r * inDim + p, n);
      for (let o = 0; o < outDim; o++) {
        let dot = 0;
        for (let k = 0; k < n; k++) dot += tables[o].l8[w.codes[o * inDim + p + k]] * q[k];
        y[r * outDim + o] += tables[o].s * d * dot;
        mag[r * outDim + o] += Math.abs(tables[o].s * d * dot);
      }
    }
  }
  return { y, mag };
}

/** The activation rows of a case after its prologue, and the buffers its bind takes. */
function inputs(gpu: Gpu, c: Case, seed: number) {
  const { rows, inDim, xRowOffset = 0 } = c;
  const x = randomF32((xRowOffset + rows) * inDim, seed + 1);
  const up = randomF32((xRowOffset + rows) * inDim, seed + 3);
  const normWeight = Float32Array.from({ length: inDim }, (_, i) => 0.5 + ((i * 7919) % 101) / 100);
  const rowsOf = (a: Float32Array) => a.subarray(xRowOffset * inDim, (xRowOffset + rows) * inDim);
  const xs: ArrayLike<number> = c.prologue === "norm"
    ? rmsNormRef(rowsOf(x), normWeight, rows, 1e-5)
    : c.prologue === "siluMul"
    ? siluMulRef(rowsOf(x), rowsOf(up))
    : rowsOf(x);
  const args = {
    x: uploadStorage(gpu, x, "x"),
    rows,
    xRowOffset,
    ...(c.prologue === "norm" ? { norm: { weight: uploadStorage(gpu, normWeight, "nw"), eps: 1e-5 } } : {}),
    ...(c.prologue === "siluMul" ? { siluMulUp: uploadStorage(gpu, up, "up") } : {}),
  };
  return { xs, args };
}

/** Binds, runs and reads back y (rows, yStride), which starts as `y0`. */
async function run(gpu: Gpu, y0: Float32Array, bind: (y: GPUBuffer) => Encodable): Promise<Float32Array> {
  const y = uploadStorage(gpu, y0, "y");
  const bound = bind(y);
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  return await readF32(gpu, y, y0.length);
}

/** The written element (r, o) of a strided y. */
function at(c: Case, y: Float32Array, r: number, o: number): number {
  return y[r * (c.yStride ?? c.outDim + (c.yColOffset ?? 0)) + (c.yColOffset ?? 0) + o];
}

Deno.test("matmulLut() int8 GEMV matches the int8 arithmetic in f64", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of CASES) {
    const { rows, inDim, outDim, yColOffset = 0, yStride = outDim + yColOffset } = c;
    const spec = {
      accumulate: c.accumulate ?? false,
      activations: "q8" as const,
      tune: { q8Gemv: true, ...c.tune },
    };
    const [step] = planMatmulLut(spec, { ...c, prologue: c.prologue ?? "none" });
    const name = `${c.bits}-bit${c.accumulate ? " +=" : ""} rows ${rows}, ${outDim}×${inDim}` +
      `${c.prologue ? ` ${c.prologue}` : ""} ${JSON.stringify(step.shader)}`;
    await t.step(name, async () => {
      assert.equal(step.shader.path, "q8gemv");
      const seed = c.bits * 1_000_003 + rows * 7919 + inDim * 131 + outDim;
      const parts = randomLut(c, seed);
      const { xs, args } = inputs(gpu, c, seed);
      const y0 = randomF32(rows * yStride, seed + 2);
      const w = uploadLut(gpu, packLut(parts), "w");
      const got = await run(
        gpu,
        y0,
        (y) => createMatmulLut(gpu, spec).bind({ ...args, w, y, yStride, yColOffset }),
      );
      const { y: want, mag } = q8GemvRef(xs, parts);
      const out = { rows, outDim, yStride, yColOffset };
      const acc = (accIn: Float32Array) => want.map((v, i) => v + (c.accumulate ? accIn[i] : 0));
      // every element near the f64 value of the same integer sums (and untouched columns unchanged) ...
      assertStridedMatmul(got, y0, out, acc, { what: name });
      if (c.prologue) return; // (x after an f64 prologue may round to another int8 here and there)
      // ... and, without a prologue, within the f32 rounding of its order of the sum: (pieces + 4) ulps of mag
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < outDim; o++) {
          const i = r * outDim + o;
          const prev = c.accumulate ? at(c, y0, r, o) : 0;
          const bound = (Math.ceil(inDim / 32) + 4) * 2 ** -24 * mag[i] + 2 ** -24 * Math.abs(prev + want[i]);
          const err = Math.abs(at(c, got, r, o) - prev - want[i]);
          assert.ok(
            err <= bound,
            `${name}: (${r}, ${o}) off by ${err.toExponential(3)} > ${bound.toExponential(3)}`,
          );
        }
      }
    });
  }
  gpu.device.destroy();
});

// Both int8 paths multiply the same int8 activations by the same int8 tables, piece by piece: their integer sums
// are identical and only the f32 combination of the pieces differs, within (pieces + 4) ulps of Σ|terms| each.
Deno.test("matmulLut() int8 GEMV agrees with the int8 batched path", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4] as const) {
    for (const prologue of [undefined, "siluMul" as const]) {
      const c: Case = {
        bits,
        rows: 1,
        inDim: 2000 + 64 * bits,
        outDim: 50,
        ...(prologue ? { prologue } : {}),
      };
      await t.step(`${bits}-bit${prologue ? ` ${prologue}` : ""}`, async () => {
        const parts = randomLut(c, 70 + bits);
        const w = uploadLut(gpu, packLut(parts), "w");
        const { xs, args } = inputs(gpu, c, 80 + bits);
        const y0 = new Float32Array(c.outDim);
        const gemv = await run(
          gpu,
          y0,
          (y) =>
            createMatmulLut(gpu, { accumulate: false, activations: "q8", tune: ON }).bind({ ...args, w, y }),
        );
        // (its prep pass computes silu(x)·up with the same WGSL as the GEMV, so x is the same too)
        const batched = await run(
          gpu,
          y0,
          (y) =>
            createMatmulLut(gpu, { accumulate: false, activations: "q8", path: "gemv" }).bind({
              ...args,
              w,
              y,
            }),
        );
        const { mag } = q8GemvRef(xs, parts);
        const pieces = Math.ceil(c.inDim / 32);
        for (let o = 0; o < c.outDim; o++) {
          const bound = 2 * (pieces + 4) * 2 ** -24 * mag[o];
          const err = Math.abs(gemv[o] - batched[o]);
          assert.ok(
            err <= bound,
            `output ${o}: ${gemv[o]} against ${batched[o]}, bound ${bound.toExponential(3)}`,
          );
        }
        assert.notDeepEqual(gemv, y0);
      });
    }
  }
  gpu.device.destroy();
});

Deno.test("matmulLut() int8 GEMV applies q/k/v in one dispatch, each into its own y", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [rows, inDim, outDims] = [1, 1000, [64, 16, 30]];
  const ws: LutWeights[] = outDims.map((outDim, i) =>
    uploadLut(gpu, packLut(randomLut({ bits: 3, inDim, outDim }, 90 + i)), "w")
  );
  const x = uploadStorage(gpu, randomF32(rows * inDim, 93), "x");
  const norm = { weight: uploadStorage(gpu, randomF32(inDim, 94), "nw"), eps: 1e-5 };
  const kernel = createMatmulLut(gpu, { accumulate: false, activations: "q8", tune: ON });
  const runAll = async (bind: (ys: GPUBuffer[]) => Encodable) => {
    const ys = outDims.map((d) => createStorage(gpu, rows * d * 4, "y"));
    const bound = bind(ys);
    await checkPipelines(gpu);
    runPass(gpu, (pass) => bound.encode(pass));
    return await Promise.all(ys.map((y, i) => readF32(gpu, y, rows * outDims[i])));
  };
  const merged = await runAll((ys) =>
    kernel.bind({ x, w: ws[0], y: ys[0], rows, norm, more: ws.slice(1).map((w, i) => ({ w, y: ys[i + 1] })) })
  );
  const alone = await runAll((ys) => sequence(ws.map((w, i) => kernel.bind({ x, w, y: ys[i], rows, norm }))));
  // the same build per workgroup (RB 4 for all three, as alone), so the same bits
  assert.deepEqual(merged, alone);
  assert.ok(alone.every((y) => y.some((v) => v !== 0)));
  // the f32 GEMV takes no further matrices
  assert.throws(
    () =>
      createMatmulLut(gpu, { accumulate: false, activations: "q8", tune: { q8Gemv: false } })
        .bind({ x, w: ws[0], y: ws[0].codes, rows, more: [{ w: ws[1], y: ws[1].lut }] }),
    /several matrices in one dispatch need an int8 path/,
  );
  gpu.device.destroy();
});

Deno.test("planMatmulLut() takes the int8 GEMV for up to two unpinned q8 rows, sized to the device", () => {
  const path = (rows: number, spec: { path?: "gemv"; activations?: "q8" | "f32"; tune?: LutTune }) =>
    planMatmulLut({ accumulate: false, ...spec }, { bits: 4, inDim: 4096, outDim: 4096, rows })[0].shader
      .path;
  // Off by default: on the H100 it is no faster than the f32 GEMV for one row (BENCHMARKS.md).
  assert.notEqual(path(1, { activations: "q8" }), "q8gemv");
  assert.equal(path(1, { activations: "q8", tune: ON }), "q8gemv");
  assert.equal(path(2, { activations: "q8", tune: ON }), "q8gemv");
  assert.notEqual(path(3, { activations: "q8", tune: ON }), "q8gemv");
  assert.notEqual(path(1, {}), "q8gemv");
  assert.notEqual(path(1, { activations: "f32" }), "q8gemv");
  assert.notEqual(path(1, { activations: "q8", tune: { q8Gemv: false } }), "q8gemv");
  assert.notEqual(path(1, { activations: "q8", path: "gemv" }), "q8gemv");
  // 8B shapes: within lavapipe's 32 KiB (chunk tables where they fit, byte-shifted copies where not), chunk
  // tables everywhere in the H100's 48 KiB; 16 rows per workgroup where that leaves ≥ 256 workgroups
  for (const bits of [2, 3, 4] as const) {
    for (const [outDim, inDim] of [[4096, 4096], [1024, 4096], [14336, 4096], [4096, 14336]]) {
      for (const prologue of ["none", "norm", "siluMul"] as const) {
        for (const maxWorkgroupBytes of [32768, 49152]) {
          const spec = { accumulate: false, activations: "q8" as const, tune: ON };
          const [step] = planMatmulLut(spec, { bits, outDim, inDim, rows: 1, prologue, maxWorkgroupBytes });
          const what = `${bits}-bit ${outDim}×${inDim} ${prologue}, ${maxWorkgroupBytes} bytes`;
          assert.equal(step.shader.path, "q8gemv", what);
          if (step.shader.path !== "q8gemv") continue;
          assert.equal(step.workgroupBytes, lutQ8GemvWorkgroupBytes(step.shader), what);
          assert.ok(step.workgroupBytes <= maxWorkgroupBytes, what);
          assert.equal(step.shader.rb, outDim >= 4096 ? 16 : 4, what);
          assert.equal(step.workgroups, Math.ceil(outDim / step.shader.rb), what);
          if (maxWorkgroupBytes === 49152) assert.equal(step.shader.chunks, true, what);
          // chunk tables exactly where they fit
          const chunked = lutQ8GemvWorkgroupBytes({ ...step.shader, chunks: true });
          assert.equal(step.shader.chunks, chunked <= maxWorkgroupBytes, what);
        }
      }
    }
  }
});
