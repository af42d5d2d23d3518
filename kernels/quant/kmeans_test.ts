import assert from "node:assert/strict";
import { createKMeans, kmeansShader, kmeansWorkgroupSize } from "./kmeans.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import {
  nearestCode,
  roundToF16,
  weightedGridError,
  weightedKMeans,
} from "../../quant/reference/reference_grid.ts";
import { seededRandom, testGpu } from "../../tests/_gpu.ts";

/** Heavy-tailed importances in (0, 1], like U_kk^-4 normalised by its max, rounded to f32. */
function randomImportance(n: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  return Float32Array.from({ length: n }, () => rand() ** 6 + 1e-3);
}

/** Rows of Gaussian-ish weights with a few outliers; row 0 all equal, row 1 all zero (degenerate). */
function randomRows(rows: number, cols: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const W = new Float32Array(rows * cols);
  for (let i = 0; i < W.length; i++) {
    const g = (rand() + rand() + rand() - 1.5) * 0.05;
    W[i] = rand() < 0.01 ? g * 8 : g;
  }
  if (rows > 2) {
    W.fill(0.0123, 0, cols);
    W.fill(0, cols, 2 * cols);
  }
  return W;
}

/** Runs the kernel on (rows, cols) and returns the LUT; the f64 reference gets the same f32 inputs. */
async function gpuLut(gpu: Gpu, W: Float32Array, a: Float32Array, rows: number, cols: number, bits: number) {
  const lut = createStorage(gpu, rows * 2 ** bits * 4, "lut");
  const bound = createKMeans(gpu, { bits }).bind({
    W: uploadStorage(gpu, W, "W"),
    importance: uploadStorage(gpu, a, "a"),
    lut,
    rows,
    cols,
    maxIter: 100,
    tolFactor: 1e-6,
  });
  runPass(gpu, (pass) => bound.encode(pass));
  return await readF32(gpu, lut, rows * 2 ** bits);
}

Deno.test("kmeans() matches weightedKMeans() within f16 rounding on awkward row lengths", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4]) createKMeans(gpu, { bits });
  await checkPipelines(gpu);
  let identical = 0, total = 0;
  for (const cols of [1, 7, 63, 64, 65, 128, 300, 1000]) {
    await t.step(`cols = ${cols}, bits 2/3/4`, async () => {
      for (const bits of [2, 3, 4]) {
        const K = 2 ** bits;
        const rows = cols >= 300 ? 8 : 16;
        const W = randomRows(rows, cols, cols * 31 + bits);
        const a = randomImportance(cols, cols + 17 * bits);
        const got = await gpuLut(gpu, W, a, rows, cols, bits);
        for (let r = 0; r < rows; r++) {
          const x = W.subarray(r * cols, (r + 1) * cols);
          const ref = weightedKMeans(x, a, { k: K }).centers.map(roundToF16);
          const lut = got.subarray(r * K, (r + 1) * K);
          for (let j = 0; j < K; j++) {
            assert.equal(roundToF16(lut[j]), lut[j], `row ${r} entry ${j} is not f16-exact: ${lut[j]}`);
            if (j > 0) assert.ok(lut[j] >= lut[j - 1], `row ${r}: centres not ascending`);
          }
          total++;
          if (lut.every((v, j) => v === ref[j])) {
            identical++;
            continue;
          }
          // A different row must be an equally good local optimum: same weighted error within 1e-3.
          const errOf = (c: ArrayLike<number>) => weightedGridError(x, a, (v) => c[nearestCode(c, v)]);
          const eg = errOf(lut), er = errOf(ref);
          assert.ok(
            eg <= er * (1 + 1e-3) + 1e-12,
            `cols ${cols} bits ${bits} row ${r}: error ${eg} vs ${er}`,
          );
        }
      }
    });
  }
  console.log(`kmeans: ${identical}/${total} rows bit-identical to the f64 reference after f16 rounding`);
  assert.ok(identical >= 0.95 * total, `only ${identical}/${total} rows identical`);
  gpu.device.destroy();
});

Deno.test("kmeans() handles degenerate rows and zero-weight clusters without NaN", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cols = 40;
  // Row 0: all equal; row 1: all zero; row 2: two values, every weight 0 except one point.
  const W = new Float32Array(3 * cols);
  W.fill(-0.75, 0, cols);
  for (let c = 0; c < cols; c++) W[2 * cols + c] = c % 2 ? 1 : -1;
  const a = new Float32Array(cols);
  a[3] = 1;
  const got = await gpuLut(gpu, W, a, 3, cols, 2);
  assert.deepEqual(Array.from(got.subarray(0, 4)), [-0.75, -0.75, -0.75, -0.75]);
  assert.deepEqual(Array.from(got.subarray(4, 8)), [0, 0, 0, 0]);
  // Column 3 (value 1) is the only weighted point: its cluster moves onto it, the others keep the init.
  const ref = weightedKMeans(W.subarray(2 * cols), a, { k: 4 }).centers;
  assert.deepEqual(Array.from(got.subarray(8, 12)), Array.from(ref, roundToF16));
  assert.ok(got.every(Number.isFinite));
  gpu.device.destroy();
});

Deno.test("kmeansWorkgroupSize() keeps the reduction inside workgroup memory", () => {
  const fake = { maxInvocationsPerWorkgroup: 256, maxWorkgroupStorageBytes: 16384 } as Gpu;
  assert.equal(kmeansWorkgroupSize(fake, 16), 64);
  assert.equal(kmeansWorkgroupSize({ ...fake, maxWorkgroupStorageBytes: 49152 }, 16), 256);
  assert.equal(kmeansWorkgroupSize({ ...fake, maxWorkgroupStorageBytes: 32768 }, 16), 128);
  assert.match(kmeansShader(), /override K: u32/);
});
