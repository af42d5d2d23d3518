import assert from "node:assert/strict";
import {
  affineCode,
  affSearch,
  affSearchFast,
  defaultAffSteps,
  importanceWeights,
  minMaxParams,
  nearestCode,
  roundHalfEven,
  roundToF16,
  weightedGridError,
  weightedKMeans,
} from "./reference_grid.ts";
import { upperInverseFactorLiteral } from "./reference_linalg.ts";
import { gaussian, randomSpd } from "./_reference_cases.ts";
import { seededRandom } from "../../tests/_gpu.ts";

/** Heavy-tailed importances in (0, 1], like U_kk^-4 normalised by its max. */
function randomImportance(n: number, seed: number): Float64Array {
  const rand = seededRandom(seed);
  return Float64Array.from({ length: n }, () => rand() ** 6 + 1e-3);
}

Deno.test("roundHalfEven() rounds ties to even like torch.round", () => {
  const cases = [[0.5, 0], [1.5, 2], [2.5, 2], [-0.5, -0], [-1.5, -2], [-2.5, -2], [2.4999, 2], [-3.5, -4]];
  for (const [x, want] of cases) assert.equal(roundHalfEven(x), want, `round(${x})`);
  assert.equal(roundHalfEven(0.49999999999999994), 0);
  assert.equal(roundHalfEven(4503599627370497), 4503599627370497); // already an integer at 2^52 + 1
});

Deno.test("roundToF16() agrees with the platform's Float16Array on edge and random values", () => {
  const values = [
    1,
    -1,
    65504,
    65519.99,
    65520,
    1e6,
    2 ** -14,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    1e-9,
    1 + 2 ** -11,
  ];
  values.push(1 + 3 * 2 ** -11, 0.1, -0.3333, 2049, 2051, 4095);
  const g = gaussian(4000, 7);
  for (let i = 0; i < g.length; i++) values.push(g[i] * 10 ** ((i % 13) - 8));
  if (typeof Float16Array === "undefined") {
    // Hand-checked fallbacks: ties to even at 1 + 2^-11 → 1; 65520 overflows.
    assert.equal(roundToF16(1 + 2 ** -11), 1);
    assert.equal(roundToF16(65520), Infinity);
    return;
  }
  const ref = new Float16Array(values);
  for (let i = 0; i < values.length; i++) {
    assert.equal(roundToF16(values[i]), ref[i], `f16(${values[i]})`);
  }
});

Deno.test("minMaxParams() and affineCode() follow quant.py", () => {
  // Asymmetric 2-bit on [-1, 2]: scale = 3/3 = 1, zero = round(1) = 1.
  assert.deepEqual(minMaxParams([-1, 0.5, 2], { bits: 2 }), { scale: 1, zero: 1 });
  // The range always includes 0: [0.5, 2] becomes [0, 2].
  assert.deepEqual(minMaxParams([0.5, 2], { bits: 2 }), { scale: 2 / 3, zero: 0 });
  // All-zero set uses [-1, 1]; zero = round(0.5) = 0 and round(1.5) = 2 (ties to even).
  assert.deepEqual(minMaxParams([0, 0], { bits: 1 }), { scale: 2, zero: 0 });
  assert.deepEqual(minMaxParams([0, 0], { bits: 2 }), { scale: 2 / 3, zero: 2 });
  // Symmetric: xmax = max(|xmin|, xmax), xmin = −xmax; zero = (maxq + 1)/2.
  assert.deepEqual(minMaxParams([-3, 1], { bits: 2 }), { scale: 4 / 3, zero: 2 });
  assert.deepEqual(minMaxParams([-3, 1], { bits: 2, sym: true }), { scale: 2, zero: 2 });
  // zero = round(−xmin/scale) ties to even: 2-bit [−0.5, 1]: scale 0.5, −xmin/scale = 1 → 1;
  // 1-bit [−1, 3]: scale 4, −xmin/scale = 0.25 → 0; 2-bit [−1.25, 2.5]: scale 1.25, 1 → 1.
  assert.equal(minMaxParams([-0.5, 1], { bits: 2 }).zero, 1);
  assert.equal(minMaxParams([-1, 3], { bits: 1 }).zero, 0);
  // Codes: clamp(round(x/scale) + zero, 0, maxq) with round(0.5) = 0 and round(1.5) = round(2.5) = 2.
  const p = { scale: 1, zero: 1 };
  assert.deepEqual([-5, -1, 0.5, 1.5, 2.5, 9].map((x) => affineCode(x, p, 3)), [0, 0, 1, 3, 3, 3]);
  assert.deepEqual([-1.5, -0.5, 0.5].map((x) => affineCode(x, { scale: 1, zero: 2 }, 3)), [0, 2, 2]);
});

Deno.test("nearestCode() lets the first index win ties", () => {
  assert.equal(nearestCode([0, 1, 2], 0.5), 0);
  assert.equal(nearestCode([0, 1, 1, 2], 1.2), 1);
  assert.equal(nearestCode([-1, 3], 10), 1);
});

Deno.test("importanceWeights() is U_kk^-p normalised by its maximum", () => {
  const U = [0.5, 9, 9, 0, 0.25, 9, 0, 0, 1];
  const a = importanceWeights(U, 3, 4);
  assert.deepEqual(Array.from(a), [16 / 256, 1, 1 / 256]);
});

Deno.test("weightedKMeans() solves a two-cluster case and weights pull the centres", () => {
  const x = [0, 1, 9, 10];
  assert.deepEqual(Array.from(weightedKMeans(x, [1, 1, 1, 1], { k: 2 }).centers), [0.5, 9.5]);
  assert.deepEqual(Array.from(weightedKMeans(x, [3, 1, 1, 3], { k: 2 }).centers), [0.25, 9.75]);
});

Deno.test("weightedKMeans() relocates empty clusters to the farthest points, as sklearn does", () => {
  // linspace(0, 10, 4) = [0, 3.33, 6.67, 10]: the middle two start empty and take 0.2, then 0.1 (the points
  // farthest from centre 0), leaving centre 0 with the point 0: every value gets its own centre.
  const { centers } = weightedKMeans([0, 0.1, 0.2, 10], [1, 1, 1, 1], { k: 4 });
  assert.deepEqual(Array.from(centers, (c) => Number(c.toFixed(12))), [0, 0.1, 0.2, 10]);
});

Deno.test("weightedKMeans() handles zero-weight clusters and flat rows without NaN", () => {
  // linspace(0, 9, 4) = [0, 3, 6, 9]: nothing lands near 3, and the points near 6 weigh nothing.
  const x = [0, 0.2, 6, 6.2, 9], a = [1, 1, 0, 0, 1];
  const { centers } = weightedKMeans(x, a, { k: 4 });
  assert.ok(centers.every((c, j) => Number.isFinite(c) && (j === 0 || c >= centers[j - 1])));
  // Three weighted values and four centres: each weighted value ends on a centre.
  assert.equal(weightedGridError(x, a, (v) => centers[nearestCode(centers, v)]), 0);
  const flat = weightedKMeans([2, 2, 2], [1, 1, 1], { k: 4 });
  assert.deepEqual(Array.from(flat.centers), [2, 2, 2, 2]);
  assert.equal(flat.iterations, 1);
});

Deno.test("weightedKMeans() lowers the weighted error below the min-max grid on random rows", () => {
  for (const bits of [2, 3, 4]) {
    for (let seed = 0; seed < 8; seed++) {
      const x = gaussian(96, 100 + seed);
      const a = randomImportance(96, 200 + seed);
      const lut = Array.from(weightedKMeans(x, a, { k: 2 ** bits }).centers, roundToF16);
      const p = minMaxParams(x, { bits });
      const maxq = 2 ** bits - 1;
      const eNu = weightedGridError(x, a, (v) => lut[nearestCode(lut, v)]);
      const eMinMax = weightedGridError(x, a, (v) => p.scale * (affineCode(v, p, maxq) - p.zero));
      assert.ok(eNu <= eMinMax, `bits ${bits} seed ${seed}: nu ${eNu} > min-max ${eMinMax}`);
    }
  }
});

Deno.test("defaultAffSteps() is 0.2T / 0.3T / 0.4T", () => {
  assert.deepEqual([4, 3, 2].map((b) => defaultAffSteps(b)), [410, 614, 819]);
  assert.equal(defaultAffSteps(4, 64), 13);
});

Deno.test("affSearch() at (0, 0) is the min-max grid, and the search never does worse", () => {
  const n = 40;
  const U = upperInverseFactorLiteral(randomSpd(n, 5), n)!;
  const a = importanceWeights(U, n);
  for (const bits of [2, 3, 4]) {
    const x = gaussian(n, 300 + bits);
    const maxq = 2 ** bits - 1;
    const zeroZero = affSearch(x, a, { bits, T: 64, t: 1 });
    assert.deepEqual({ scale: zeroZero.scale, zero: zeroZero.zero }, minMaxParams(x, { bits }));
    const best = affSearch(x, a, { bits, T: 128 });
    const eMinMax = weightedGridError(x, a, (v) => {
      const p = minMaxParams(x, { bits });
      return p.scale * (affineCode(v, p, maxq) - p.zero);
    });
    assert.equal(zeroZero.err, eMinMax);
    assert.ok(best.err <= eMinMax, `bits ${bits}`);
    assert.ok(best.err < 0.999 * eMinMax, `bits ${bits}: the search should find a strictly better grid`);
    assert.equal(
      best.err,
      weightedGridError(x, a, (v) => best.scale * (affineCode(v, best, maxq) - best.zero)),
    );
  }
});

Deno.test("affSearchFast() picks the same argmin as the brute force", async (t) => {
  for (const bits of [2, 3, 4]) {
    await t.step(`bits = ${bits}, small T, random sets`, () => {
      for (let seed = 0; seed < 24; seed++) {
        const n = 8 + 5 * seed;
        // Some sets are one-signed (lo = 0) and some repeat 0 (dead columns), to hit clamps and ties.
        const x = gaussian(n, 400 + seed).map((
          v,
          c,
        ) => (seed % 3 === 0 ? Math.abs(v) : seed % 3 === 1 && c % 5 === 0 ? 0 : v));
        const a = randomImportance(n, 500 + seed);
        const opts = { bits, T: 40 + 8 * seed };
        const slow = affSearch(x, a, opts);
        const fast = affSearchFast(x, a, opts);
        assert.deepEqual([fast.i, fast.j, fast.scale, fast.zero], [slow.i, slow.j, slow.scale, slow.zero]);
        assert.ok(Math.abs(fast.err - slow.err) <= 1e-12 * slow.err + 1e-300);
      }
    });
  }
  await t.step("default T = 2048 on a tiny set", () => {
    const x = gaussian(6, 600);
    const a = randomImportance(6, 601);
    const slow = affSearch(x, a, { bits: 4 });
    const fast = affSearchFast(x, a, { bits: 4 });
    assert.deepEqual([fast.i, fast.j], [slow.i, slow.j]);
  });
  await t.step("an all-zero set returns the [-1, 1] grid", () => {
    const r = affSearchFast([0, 0, 0], [1, 1, 1], { bits: 2, T: 16 });
    assert.deepEqual([r.i, r.j, r.err], [0, 0, 0]);
  });
});
