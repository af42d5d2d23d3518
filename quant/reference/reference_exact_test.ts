import assert from "node:assert/strict";
import { eliminateColumn, exactReference, fullInverseImportance } from "./reference_exact.ts";
import { affineCode, nearestCode, roundToF16, weightedKMeans } from "./reference_grid.ts";
import { gptqReference, layerOutputError } from "./reference.ts";
import { inverseSpd } from "./reference_linalg.ts";
import { prepareLayer } from "./reference_hessian.ts";
import { correlatedInputs, dequantMismatch, gaussian, hessianOf, randomSpd } from "./_reference_cases.ts";

/** H[F, F] for the index list F. */
function subMatrix(H: ArrayLike<number>, n: number, F: readonly number[]): Float64Array {
  return Float64Array.from(
    { length: F.length ** 2 },
    (_, p) => H[F[Math.floor(p / F.length)] * n + F[p % F.length]],
  );
}

/**
 * Greedy OBQ by the definition: a fresh explicit inv(H[F, F]) at every step, nearest-LUT quantization.
 * @returns codes (rows, n) and each row's order
 */
function greedyExplicit(W: Float64Array, H: Float64Array, lut: Float64Array, rows: number, n: number) {
  const K = lut.length / rows;
  const codes = new Uint8Array(rows * n);
  const orders: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const w = W.slice(r * n, (r + 1) * n);
    const row = lut.subarray(r * K, (r + 1) * K);
    let F = Array.from({ length: n }, (_, i) => i);
    const order: number[] = [];
    while (F.length > 0) {
      const Finv = inverseSpd(subMatrix(H, n, F), F.length)!;
      const m = F.length;
      const eps = F.map((j, a) => (row[nearestCode(row, w[j])] - w[j]) ** 2 / Finv[a * m + a]);
      const a = eps.indexOf(Math.min(...eps));
      const q = F[a];
      const code = nearestCode(row, w[q]);
      codes[r * n + q] = code;
      const e = (w[q] - row[code]) / Finv[a * m + a];
      F.forEach((j, b) => w[j] -= e * Finv[b * m + a]);
      order.push(q);
      F = F.filter((j) => j !== q);
    }
    orders.push(order);
  }
  return { codes, orders };
}

Deno.test("eliminateColumn() keeps H_F⁻¹ equal to inv(H[F, F]) step by step", () => {
  const n = 10;
  const H = randomSpd(n, 3, { outlier: 2 });
  const Hinv = inverseSpd(H, n)!;
  let alive = Array.from({ length: n }, (_, i) => i);
  for (const q of [4, 0, 9, 2, 7, 5]) {
    alive = alive.filter((j) => j !== q);
    eliminateColumn(Hinv, n, q, alive);
    const want = inverseSpd(subMatrix(H, n, alive), alive.length)!;
    const got = subMatrix(Hinv, n, alive);
    const scale = Math.max(...want.map(Math.abs));
    got.forEach((v, i) =>
      assert.ok(Math.abs(v - want[i]) <= 1e-10 * scale, `after removing ${q}: ${v} vs ${want[i]}`)
    );
  }
});

Deno.test("exactReference() codes are in range, Q is their dequantized value, dead columns code 0", async (t) => {
  const rows = 6, cols = 20, bits = 3;
  const H = hessianOf(correlatedInputs(cols, 80, 4), cols);
  for (let j = 0; j < cols; j++) [H[5 * cols + j], H[j * cols + 5]] = [0, 0]; // column 5 is dead
  const W = gaussian(rows * cols, 11);
  for (const grid of ["nu", "aff"] as const) {
    await t.step(grid, () => {
      const res = exactReference(W, H, { bits, grid, affT: 64 });
      assert.equal(dequantMismatch(res, rows, cols, bits), null);
      assert.deepEqual([...res.perm].sort((x, y) => x - y), Array.from({ length: cols }, (_, i) => i));
      assert.ok(Number.isFinite(res.loss) && res.loss > 0);
      for (let r = 0; r < rows; r++) {
        // A dead column is uncorrelated and starts at 0, so it rounds 0 to the row's grid.
        const q0 = grid === "nu"
          ? res.lut![r * 8 + nearestCode(res.lut!.subarray(r * 8, r * 8 + 8), 0)]
          : res.scale![r] * (affineCode(0, { scale: res.scale![r], zero: res.zero![r] }, 7) - res.zero![r]);
        assert.equal(res.Q[r * cols + 5], q0);
      }
      if (grid === "nu") res.lut!.forEach((v) => assert.equal(v, roundToF16(v)));
      else assert.deepEqual(res.gIdx, new Int32Array(cols));
    });
  }
  assert.throws(() => exactReference(W, H, { bits: 9, grid: "nu" }), /bits 9/);
});

Deno.test("exactReference() equals greedy OBQ with an explicit inverse at every step", () => {
  const rows = 5, n = 16, bits = 2;
  const H = randomSpd(n, 21, { outlier: 3 });
  const W = gaussian(rows * n, 22);
  const res = exactReference(W, H, { bits, grid: "nu" });
  const prep = prepareLayer(W, H, { percdamp: 0.01 });
  const want = greedyExplicit(prep.W, prep.H, res.lut!, rows, n);
  assert.deepEqual(res.codes, want.codes);
  assert.deepEqual([...res.perm], want.orders[0]);
  // The natural order is not what greedy picks on a correlated H.
  assert.notDeepEqual([...res.perm], Array.from({ length: n }, (_, i) => i));
});

Deno.test("exactReference() with H = I is nearest rounding on an unweighted k-means grid", () => {
  const rows = 4, cols = 24, bits = 2, percdamp = 0.01;
  const H = Float64Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 1 : 0));
  const W = gaussian(rows * cols, 31);
  const res = exactReference(W, H, { bits, grid: "nu", percdamp });
  assert.deepEqual(fullInverseImportance(inverseSpd(H, cols)!, cols), new Float64Array(cols).fill(1));
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const w = W.subarray(r * cols, (r + 1) * cols);
    const { centers } = weightedKMeans(w, new Float64Array(cols).fill(1), { k: 4 });
    const lut = centers.map(roundToF16);
    assert.deepEqual(res.lut!.subarray(r * 4, r * 4 + 4), lut);
    for (let c = 0; c < cols; c++) {
      const code = nearestCode(lut, w[c]);
      assert.equal(res.codes[r * cols + c], code);
      loss += (lut[code] - w[c]) ** 2 * (1 + percdamp) / 2;
    }
  }
  assert.ok(Math.abs(res.loss - loss) <= 1e-12 * loss);
});

// Measured 2026-12-05 with scikit-learn's empty-cluster relocation in k-means (rows 16, cols 64, seeds 0–9):
// exact-nu beats GPTQ-nu on 10 / 8 seeds at 3 bits (act-order off / on) and 10 / 6 at 4 bits; its mean error
// over 20 seeds is 0.91–0.97 of GPTQ's. At 2 bits with act-order it wins only 4/10 (mean 1.01), so 2 bits is
// not asserted. The test asks for a lower mean error and a majority of wins.
Deno.test("exactReference() nu has a lower output error than gptqReference nu on average and on most seeds", async (t) => {
  const rows = 16, cols = 64;
  for (const bits of [3, 4]) {
    for (const actOrder of [false, true]) {
      await t.step(`${bits}-bit, actOrder ${actOrder}`, () => {
        const wins: boolean[] = [];
        let ratio = 0;
        for (let seed = 0; seed < 10; seed++) {
          const X = correlatedInputs(cols, 4 * cols, seed);
          const H = hessianOf(X, cols);
          const W = gaussian(rows * cols, seed + 50);
          const exact = exactReference(W, H, { bits, grid: "nu" });
          const gptq = gptqReference(W, H, { bits, grid: "nu", actOrder });
          const e = layerOutputError(W, exact.Q, { X, cols });
          const g = layerOutputError(W, gptq.Q, { X, cols });
          wins.push(e <= g);
          ratio += e / g / 10;
        }
        assert.ok(ratio < 0.99, `exact's error is ${ratio.toFixed(3)} of GPTQ's on average`);
        assert.ok(wins.filter(Boolean).length >= 6, `exact wins on ${wins.filter(Boolean).length}/10 seeds`);
      });
    }
  }
});
