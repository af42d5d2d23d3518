/**
 * Hessians past one storage binding (issue 12; kernels/core/matrix_parts.ts): H, the factor's work matrices
 * and U live in two buffers, and every kernel touching them reads through its split build. On a device whose
 * binding limit is lowered to 80,000 bytes a 200-column Hessian splits at row 100, which no Cholesky panel,
 * triangular-inverse block or GPTQ block edge meets, so every straddling case runs. The split build only
 * changes where an element is read or written, never the arithmetic, so everything must be BIT-identical to
 * the one-buffer run on the real limit.
 */
import assert from "node:assert/strict";
import { testGpu } from "../tests/_gpu.ts";
import { type Gpu, readF32, runPass, uploadStorage } from "../kernels/core/mod.ts";
import { destroyMatrix, readMatrix, uploadMatrix } from "../kernels/core/matrix_parts.ts";
import { correlatedInputs, gaussian, hessianOf } from "./reference/_reference_cases.ts";
import { createHessian } from "./hessian.ts";
import { factorHessian } from "./cholesky.ts";
import { createGpuQuantizer } from "./gpu_quantizer.ts";
import { QUANTIZE_DEFAULTS, type QuantizeOptions } from "./types.ts";

const COLS = 200;
const ROWS = 64;
/** 100 rows of 200 f32: H (160 kB) needs two parts, W (51 kB) still fits one binding. */
const SMALL_BINDING = 100 * COLS * 4;

/** The same device with a lowered binding limit (shares the pipeline cache: split builds have their own keys). */
function smallBinding(gpu: Gpu): Gpu {
  return { ...gpu, maxBindingBytes: SMALL_BINDING };
}

/** Bit patterns, so −0 vs 0 and NaN payloads count as differences. */
function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function assertBitEqual(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const [g, w] = [bits(got), bits(want)];
  const i = g.findIndex((v, k) => v !== w[k]);
  assert.equal(i, -1, `${what}: first difference at ${i}: ${got[i]} vs ${want[i]}`);
}

/** A Hessian with one dead input channel (column 7), f32 on the host. */
function testHessian(cols: number): Float32Array {
  const H = Float32Array.from(hessianOf(correlatedInputs(cols, 400, 5), cols));
  for (let j = 0; j < cols; j++) H[7 * cols + j] = H[j * cols + 7] = 0;
  return H;
}

Deno.test("createHessian() in two buffers accumulates and finalizes bit-identically to one", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const small = smallBinding(gpu);
  for (const cols of [COLS, COLS - 2]) { // vec4 loads, then scalar loads (cols % 4 != 0)
    const x = uploadStorage(gpu, Float32Array.from(gaussian(90 * cols, cols), (v) => 0.5 * v), "x");
    const run = async (g: Gpu): Promise<{ parts: number; H: Float32Array }> => {
      const h = createHessian(g, cols);
      h.addBatch(x, 48);
      runPass(gpu, (pass) => h.encodeBatch(pass, x, 40, 50));
      h.finalize();
      const out = { parts: h.H.parts.length, H: await readMatrix(gpu, h.H) };
      h.destroy();
      return out;
    };
    const one = await run(gpu);
    const two = await run(small);
    assert.equal(one.parts, 1);
    assert.equal(two.parts, 2, "the lowered limit splits H");
    assertBitEqual(two.H, one.H, `H of ${cols} columns`);
    x.destroy();
  }
  gpu.device.destroy();
});

Deno.test("factorHessian() on a two-buffer H gives the one-buffer U, perm, dead columns and damping", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const small = smallBinding(gpu);
  const H = testHessian(COLS);
  for (const actOrder of [true, false]) {
    const run = async (g: Gpu) => {
      const Hg = uploadMatrix(g, H, COLS, COLS, "H");
      const f = await factorHessian(g, Hg, COLS, { actOrder, percdamp: 0.01, onRetry: () => {} });
      const U = await readMatrix(gpu, f.U);
      const parts = [Hg.parts.length, f.U.parts.length];
      destroyMatrix(f.U);
      destroyMatrix(Hg);
      return { f, U, parts };
    };
    const one = await run(gpu);
    const two = await run(small);
    assert.deepEqual([one.parts, two.parts], [[1, 1], [2, 2]]);
    assertBitEqual(two.U, one.U, `U (actOrder ${actOrder})`);
    assert.deepEqual(two.f.perm, one.f.perm);
    assert.deepEqual(two.f.dead, one.f.dead);
    assert.equal(two.f.dead[7], 1, "column 7 is dead");
    assert.deepEqual(
      [two.f.dampUsed, two.f.percdampUsed, two.f.retries],
      [one.f.dampUsed, one.f.percdampUsed, one.f.retries],
    );
  }
  gpu.device.destroy();
});

Deno.test("createGpuQuantizer() with a two-buffer H and U quantizes bit-identically to one buffer", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const W = Float32Array.from(gaussian(ROWS * COLS, 11), (v) => 0.05 * v);
  const H = testHessian(COLS);
  const one = createGpuQuantizer(gpu, { onRetry: () => {} });
  const two = createGpuQuantizer(smallBinding(gpu), { onRetry: () => {} });
  // Block 64 puts blocks in part 0, across the split at row 100, and in part 1; 128 only across and in part 1.
  const cases: [QuantizeOptions["method"], 3 | 4, number, number][] = [
    ["gptq", 4, 0, 128],
    ["leanquant-nu", 3, 0, 64],
    ["leanquant-aff", 4, 0, 64],
    ["leanquant-aff", 3, 32, 128],
  ];
  for (const [method, b, groupSize, blockSize] of cases) {
    await t.step(`${method} ${b}-bit group ${groupSize} block ${blockSize}`, async () => {
      const opts: QuantizeOptions = {
        ...QUANTIZE_DEFAULTS,
        method,
        bits: b,
        groupSize,
        blockSize,
        affT: 128,
      };
      const read = async (q: Awaited<ReturnType<typeof one>>) => {
        const Q = q.Q instanceof GPUBuffer ? await readF32(gpu, q.Q, ROWS * COLS) : q.Q;
        if (q.Q instanceof GPUBuffer) q.Q.destroy();
        return { ...q, Q };
      };
      const want = await read(await one({ W, H, rows: ROWS, cols: COLS }, opts));
      const got = await read(await two({ W, H, rows: ROWS, cols: COLS }, opts));
      assert.deepEqual(got.codes, want.codes, "codes");
      assertBitEqual(got.Q, want.Q, "Q");
      for (const key of ["lut", "scale", "zero"] as const) {
        if (want[key] || got[key]) assertBitEqual(got[key]!, want[key]!, key);
      }
      assert.deepEqual(got.gIdx, want.gIdx, "gIdx");
      assert.equal(got.loss, want.loss, "loss");
      assert.equal(got.dampUsed, want.dampUsed, "damping");
    });
  }
  gpu.device.destroy();
});
