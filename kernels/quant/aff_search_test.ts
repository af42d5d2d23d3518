import assert from "node:assert/strict";
import { type AffSearchArgs, affSearchCache, createAffSearch } from "./aff_search.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import {
  affineCode,
  affSearch,
  affSearchFast,
  type AffSearchResult,
  defaultAffSteps,
  weightedGridError,
} from "../../quant/reference/reference_grid.ts";
import { seededRandom, testGpu } from "../../tests/_gpu.ts";

const LENGTHS = [1, 7, 63, 64, 65, 128, 300, 1000];

/** Heavy-tailed importances in (0, 1], like U_kk^-4 normalised by its max. */
function randomImportance(n: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  return Float32Array.from({ length: n }, () => rand() ** 6 + 1e-3);
}

/**
 * Rows of several kinds: 0 all equal, 1 all zero, 2 one-signed (lo = 0), 3 with dead (zero) columns,
 * the rest Gaussian-ish with 1% outliers.
 */
function randomRows(rows: number, cols: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const W = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = (rand() + rand() + rand() - 1.5) * 0.05;
      let v = rand() < 0.01 ? g * 8 : g;
      if (r === 0) v = -0.0371;
      if (r === 1) v = 0;
      if (r === 2) v = Math.abs(v);
      if (r === 3 && c % 5 === 0) v = 0;
      W[r * cols + c] = v;
    }
  }
  return W;
}

/** Runs one dispatch and returns (scale, zero) pairs and the winning i·t + j per (row, group). */
async function runSearch(
  gpu: Gpu,
  W: Float32Array,
  a: Float32Array,
  args: Omit<AffSearchArgs, "W" | "importance" | "params" | "choice"> & { bits: number; cache?: number },
) {
  const slots = args.rows * args.nGroups;
  const params = createStorage(gpu, slots * 8, "params");
  const choice = createStorage(gpu, slots * 4, "choice");
  const { bits, cache = Infinity, ...rest } = args;
  const bound = createAffSearch(gpu, { bits, cache }).bind({
    ...rest,
    W: uploadStorage(gpu, W, "W"),
    importance: uploadStorage(gpu, a, "a"),
    params,
    choice,
  });
  runPass(gpu, (pass) => bound.encode(pass));
  return { params: await readF32(gpu, params, 2 * slots), choice: await readU32(gpu, choice, slots) };
}

/** Tallies argmin agreement; a disagreement must be a near-tie on the f64 objective. */
class Agreement {
  same = 0;
  total = 0;
  check(x: ArrayLike<number>, a: ArrayLike<number>, ref: AffSearchResult, got: GridChoice, what: string) {
    this.total++;
    const maxq = 2 ** got.bits - 1;
    const p = { scale: got.scale, zero: got.zero };
    const err = weightedGridError(x, a, (v) => p.scale * (affineCode(v, p, maxq) - p.zero));
    const floor = 1e-12 * weightedGridError(x, a, () => 0);
    assert.ok(
      err <= ref.err * (1 + 1e-5) + floor,
      `${what}: argmin ${got.index} vs (${ref.i}, ${ref.j}), objective ${err} vs ${ref.err}`,
    );
    if (got.index !== ref.i * got.t + ref.j) return;
    this.same++;
    assert.ok(
      Math.abs(got.scale - ref.scale) <= 1e-6 * ref.scale,
      `${what}: scale ${got.scale} vs ${ref.scale}`,
    );
    if (got.zero === ref.zero) return;
    // Only a rounding tie may flip the zero-point: −lo'/s a half-integer that f32 rounds to the other side.
    let lo = 0, hi = 0;
    for (let c = 0; c < x.length; c++) [lo, hi] = [Math.min(lo, x[c]), Math.max(hi, x[c])];
    if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
    const v = -(lo + ref.i * (hi - lo) / got.T) / ref.scale;
    assert.ok(
      Math.abs(v - Math.floor(v) - 0.5) < 1e-5,
      `${what}: zero ${got.zero} vs ${ref.zero} (−lo'/s = ${v})`,
    );
  }
  report(label: string) {
    console.log(`${label}: same (i, j) as the reference on ${this.same}/${this.total} sets`);
    assert.ok(this.same >= 0.99 * this.total, `${label}: ${this.same}/${this.total} < 99%`);
  }
}
interface GridChoice {
  T: number;
  scale: number;
  zero: number;
  index: number;
  t: number;
  bits: number;
}

/** Row-wise search of `rows` random rows, checked set by set against `reference`. */
async function checkRows(
  gpu: Gpu,
  tally: Agreement,
  { cols, bits, T, rows, seed, reference, cache = Infinity }: {
    cols: number;
    bits: number;
    T: number;
    rows: number;
    seed: number;
    reference: typeof affSearch;
    /** staged columns; smaller than cols forces the streamed path */
    cache?: number;
  },
) {
  const t = defaultAffSteps(bits, T);
  const W = randomRows(rows, cols, seed);
  const a = randomImportance(cols, seed + 1);
  const got = await runSearch(gpu, W, a, {
    rows,
    cols,
    colStart: 0,
    groupCols: cols,
    groupIndex: 0,
    nGroups: 1,
    bits,
    T,
    t,
    cache,
  });
  for (let r = 0; r < rows; r++) {
    const x = W.subarray(r * cols, (r + 1) * cols);
    const ref = reference(x, a, { bits, T, t });
    const choice = {
      scale: got.params[2 * r],
      zero: got.params[2 * r + 1],
      index: got.choice[r],
      t,
      T,
      bits,
    };
    tally.check(x, a, ref, choice, `cols ${cols} bits ${bits} T ${T} row ${r}`);
  }
}

Deno.test("affSearch kernel matches the brute-force reference at small T", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 3, 4]) createAffSearch(gpu, { bits });
  await checkPipelines(gpu);
  const tally = new Agreement();
  for (const cols of LENGTHS) {
    await t.step(`cols = ${cols}, bits 2/3/4, T = 16 and 64`, async () => {
      for (const bits of [2, 3, 4]) {
        for (const T of [16, 64]) {
          await checkRows(gpu, tally, {
            cols,
            bits,
            T,
            rows: 8,
            seed: cols * 7 + bits * 3 + T,
            reference: affSearch,
          });
        }
      }
    });
  }
  await t.step("rows longer than the workgroup cache stream from storage", async () => {
    for (const bits of [2, 4]) {
      for (const cols of [65, 1000]) {
        await checkRows(gpu, tally, {
          cols,
          bits,
          T: 64,
          rows: 6,
          seed: cols + bits,
          reference: affSearch,
          cache: 64,
        });
      }
    }
  });
  tally.report("brute force, small T");
  gpu.device.destroy();
});

Deno.test("affSearch kernel matches affSearchFast at T = 2048", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const tally = new Agreement();
  for (const cols of LENGTHS) {
    await t.step(`cols = ${cols}, bits 2/3/4`, async () => {
      for (const bits of [2, 3, 4]) {
        const rows = cols === 1 || cols >= 300 ? 4 : 6;
        await checkRows(gpu, tally, {
          cols,
          bits,
          T: 2048,
          rows,
          seed: cols * 13 + bits,
          reference: affSearchFast,
        });
      }
    });
  }
  tally.report("fast reference, T = 2048");
  gpu.device.destroy();
});

Deno.test("affSearch kernel searches several groups per dispatch, a short tail group and offsets", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rows = 5, cols = 300, g = 64, bits = 3, T = 128;
  const t = defaultAffSteps(bits, T);
  const W = randomRows(rows, cols, 99);
  const a = randomImportance(cols, 100);
  // Groups 1..4 (columns 64..299, the last one 44 wide) into slots 2..5 of a 6-slot params row.
  const got = await runSearch(gpu, W, a, {
    rows,
    cols,
    colStart: g,
    groupCols: g,
    groupIndex: 2,
    groupCount: 4,
    nGroups: 6,
    bits,
    T,
    t,
  });
  const tally = new Agreement();
  for (let r = 0; r < rows; r++) {
    for (let q = 0; q < 6; q++) {
      const slot = r * 6 + q;
      if (q < 2) {
        assert.deepEqual([got.params[2 * slot], got.params[2 * slot + 1], got.choice[slot]], [0, 0, 0]);
        continue;
      }
      const c0 = (q - 1) * g, c1 = Math.min(c0 + g, cols);
      const x = W.subarray(r * cols + c0, r * cols + c1);
      const ref = affSearch(x, a.subarray(c0, c1), { bits, T, t });
      const choice = {
        scale: got.params[2 * slot],
        zero: got.params[2 * slot + 1],
        index: got.choice[slot],
        t,
        T,
        bits,
      };
      tally.check(x, a.subarray(c0, c1), ref, choice, `row ${r} group ${q}`);
    }
  }
  tally.report("group-wise");
  assert.throws(
    () => createAffSearch(gpu, { bits }).bind({ ...dummyArgs(gpu), T: 16, t: 9 }),
    /2\(t − 1\) < T/,
  );
  assert.ok(affSearchCache(gpu, 256) >= 128);
  gpu.device.destroy();
});

function dummyArgs(gpu: Gpu): AffSearchArgs {
  const b = createStorage(gpu, 64, "dummy");
  const base = { rows: 1, cols: 4, colStart: 0, groupCols: 4, groupIndex: 0, nGroups: 1, T: 16, t: 4 };
  return { ...base, W: b, importance: b, params: b };
}
