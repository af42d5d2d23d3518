/**
 * The batch sampler on one row, as the sequence runner (inference/engine/generate.ts) uses it: picks against
 * the plain-TS sampleRef step by step, and sampleRef itself against hand-computed sets.
 */
import assert from "node:assert/strict";
import { type BatchSampleArgs, createBatchSample, GREEDY_SLOT, packSlotParams } from "./batch_sample.ts";
import {
  sampleHashRef,
  sampleRef,
  type SampleRefParams,
  sampleUniformRef,
  sampleWeightsRef,
} from "../core/reference.ts";
import { checkPipelines, type Gpu, type Kernel } from "../core/gpu.ts";
import { createStorage, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { createAdvance } from "../core/step_state.ts";
import { randomF32, testGpu, zipfLogits } from "../../tests/_gpu.ts";

const NONE = 0xffffffff;
const BASE = GREEDY_SLOT;
const UNWRITTEN = 0xdeadbeef;
const OFF = { topK: 0, topP: 1, minP: 0 };
const PACK = { maxBias: 4, maxBan: 3 };

/**
 * Samples the last of `rows` logit rows (the others are noise that gather skips) `steps` times in one
 * pass, each followed by an advance, as the sequence runner does; the slot's RNG step starts at
 * `startStep`. Checks the bookkeeping (state, slot token and step; the first test checks the counts) and
 * returns the picks.
 */
async function draw(
  gpu: Gpu,
  kernel: Kernel<BatchSampleArgs>,
  logits: Float32Array,
  settings: SampleRefParams,
  { startStep = 0, steps = 1, rows = 1 } = {},
): Promise<number[]> {
  const vocabSize = logits.length;
  const all = randomF32(rows * vocabSize, 99, 50);
  all.set(logits, (rows - 1) * vocabSize);
  const gather = new Uint32Array(rows).fill(NONE);
  gather[rows - 1] = 0;
  const b = {
    logits: uploadStorage(gpu, all, "logits"),
    slotParams: uploadStorage(gpu, new Uint8Array(packSlotParams({ ...BASE, ...settings }, PACK)), "params"),
    gather: uploadStorage(gpu, gather, "gather"),
    rowSlot: uploadStorage(gpu, new Uint32Array(1), "rowSlot"),
    state: uploadStorage(gpu, new Uint32Array([7, 0, 0, 0]), "state"),
    slots: uploadStorage(gpu, new Uint32Array([UNWRITTEN, startStep, 0, 0]), "slots"),
    outTokens: uploadStorage(gpu, new Uint32Array(steps + 1).fill(UNWRITTEN), "outTokens"),
    counts: createStorage(gpu, vocabSize * 4, "counts"),
  };
  const sample = kernel.bind({ ...b, rows, vocabSize, maxSlots: 1 });
  const advance = createAdvance(gpu).bind({ state: b.state, nTokens: 1, stepInc: 1 });
  runPass(gpu, (pass) => {
    for (let s = 0; s < steps; s++) [sample, advance].forEach((k) => k.encode(pass));
  });
  const out = [...await readU32(gpu, b.outTokens, steps + 1)];
  const picks = out.slice(0, steps);
  assert.equal(out[steps], UNWRITTEN, "step k writes outTokens[k] only");
  assert.deepEqual([...await readU32(gpu, b.state, 2)], [7 + steps, steps], "advance moved the state");
  const slot = await readU32(gpu, b.slots, 2);
  assert.deepEqual([...slot], [picks[steps - 1], startStep + steps], "slot token and RNG step");
  Object.values(b).forEach((buffer) => buffer.destroy());
  return picks;
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

Deno.test("sampleRef() keeps the hand-computed sets", () => {
  // probabilities 0.1, 0.2, 0.3, 0.4
  const logits = [1, 2, 3, 4].map(Math.log);
  const kept = (p: Partial<SampleRefParams>) =>
    [...sampleWeightsRef(logits, { temperature: 1, ...OFF, seed: 0, ...p })].flatMap((w, i) =>
      w > 0 ? [i] : []
    );
  assert.deepEqual(kept({}), [0, 1, 2, 3]);
  assert.deepEqual(kept({ topK: 2 }), [2, 3]);
  assert.deepEqual(kept({ topP: 0.35 }), [3]);
  assert.deepEqual(kept({ topP: 0.5 }), [2, 3]);
  assert.deepEqual(kept({ topP: 0.75 }), [1, 2, 3]);
  assert.deepEqual(kept({ minP: 0.45 }), [1, 2, 3]);
  assert.deepEqual(kept({ topK: 3, topP: 0.5, minP: 0.1 }), [2, 3]);
  assert.deepEqual(kept({ temperature: 0 }), [3]);
  // Ties with the boundary are all kept; greedy takes the lowest index.
  const tied = sampleWeightsRef([1, 5, 0, 5], { temperature: 1, ...OFF, topK: 1, seed: 0 });
  assert.deepEqual([...tied], [0, 1, 0, 1]);
  assert.equal(sampleRef([1, 5, 0, 5], { temperature: 0, ...OFF, seed: 0 }, 0), 1);
  // With topK = 2 on 0.1..0.4 the pick is 2 when u · 0.7 < 0.3, else 3.
  for (let step = 0; step < 20; step++) {
    const u = sampleUniformRef(5, step);
    assert.equal(
      sampleRef(logits, { temperature: 1, ...OFF, topK: 2, seed: 5 }, step),
      u * 0.7 < 0.3 ? 2 : 3,
    );
  }
});

Deno.test("sampleRef() threshold search keeps exactly the sorted top-k and top-p sets", () => {
  for (const seed of [1, 2, 3]) {
    const logits = seed === 3 ? zipfLogits(3000, seed) : randomF32(3000, seed, 4 * seed);
    const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a]);
    const kept = (p: Partial<SampleRefParams>) => {
      const w = sampleWeightsRef(logits, { temperature: 1, ...OFF, seed: 0, ...p });
      return [...w.keys()].filter((i) => w[i] > 0).sort((a, b) => a - b);
    };
    for (const topK of [1, 5, 40, 2999]) {
      assert.deepEqual(kept({ topK }), order.slice(0, topK).sort((a, b) => a - b), `topK ${topK}`);
    }
    const mx = logits[order[0]];
    const p = order.map((i) => Math.exp(logits[i] - mx));
    const z = p.reduce((a, b) => a + b, 0);
    for (const topP of [0.05, 0.3, 0.9, 0.99]) {
      let n = 0;
      for (let mass = 0; mass < topP * z;) mass += p[n++];
      assert.deepEqual(kept({ topP }), order.slice(0, n).sort((a, b) => a - b), `topP ${topP}`);
    }
  }
});

Deno.test("batchSample() on one row equals sampleRef step by step", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createBatchSample(gpu);
  const small = createBatchSample(gpu, { workgroupSize: 64 });
  // A 4-token pool keeps the threshold search on the logits buffer nearly to the end.
  const unpooled = createBatchSample(gpu, { workgroupSize: 128, poolSize: 4 });
  const kernels = [kernel, small, unpooled];
  const tiny = createBatchSample(gpu, { workgroupSize: 8 }); // fewer invocations than a draw group
  await checkPipelines(gpu);

  await t.step("the RNG equals sampleHashRef: uniform logits over 2^16 tokens pick hash >> 16", async () => {
    for (const seed of [0, 1, 12345, 0xffffffff]) {
      const startStep = seed % 1000;
      const picks = await draw(gpu, kernel, new Float32Array(65536), { temperature: 1, ...OFF, seed }, {
        startStep,
        steps: 6,
      });
      assert.deepEqual(picks, picks.map((_, j) => sampleHashRef(seed, startStep + j) >>> 16), `seed ${seed}`);
    }
  });

  await t.step("greedy equals argmax (lowest index on ties) for vocab 1, 7, 512, 49152, 128256", async () => {
    const greedy = { temperature: 0, ...OFF, seed: 3 };
    for (const vocab of [1, 7, 512, 49152, 128256]) {
      const logits = randomF32(vocab, vocab, 10);
      assert.deepEqual(await draw(gpu, kernel, logits, greedy), [argmax(logits)], `vocab ${vocab}`);
      if (vocab < 7) continue;
      // Ties in neighbouring lanes, in one lane of one invocation (4 · 64 vec4s apart) and across
      // invocations: the lowest index must win each time.
      const a = Math.floor(vocab / 3);
      for (const [b, c] of [[a + 1, a + 2], [a + 1024, vocab - 1], [vocab - 1, vocab - 1]]) {
        if (c >= vocab) continue;
        const tiedLogits = logits.slice();
        tiedLogits[a] = tiedLogits[b] = tiedLogits[c] = 11; // above every random logit
        const got = await draw(gpu, small, tiedLogits, greedy, { rows: 2 });
        assert.deepEqual(got, [a], `vocab ${vocab} tie at ${a}, ${b}, ${c}`);
      }
    }
  });

  await t.step("seeded sampling equals sampleRef over temperature × topK × topP × minP", async () => {
    const logits = zipfLogits(512, 2024);
    const keptSizes = new Set<number>();
    let combo = 0;
    for (const temperature of [0.7, 1, 1.5]) {
      for (const topK of [1, 5, 40]) {
        for (const topP of [0.5, 0.9, 1]) {
          for (const minP of [0, 0.05, 0.2]) {
            const settings = { temperature, topK, topP, minP, seed: 1000003 * combo++ };
            keptSizes.add(sampleWeightsRef(logits, settings).filter((w) => w > 0).length);
            const startStep = combo * 37;
            const k = [...kernels, tiny][combo % 4];
            const picks = await draw(gpu, k, logits, settings, { startStep, steps: 8, rows: 2 });
            const want = picks.map((_, j) => sampleRef(logits, settings, startStep + j));
            assert.deepEqual(picks, want, JSON.stringify(settings));
          }
        }
      }
    }
    assert.ok(
      keptSizes.size >= 8,
      `the filters cut the vocabulary in many ways: kept sizes ${[...keptSizes]}`,
    );
  });

  await t.step(
    "seeded sampling equals sampleRef on 49152 and 50257 (unaligned row) vocabularies",
    async () => {
      for (const [vocab, rows] of [[49152, 1], [50257, 2]]) {
        const logits = zipfLogits(vocab, 7);
        for (const [topK, topP, minP] of [[0, 0.9, 0], [0, 1, 0.05], [0, 0.95, 0.01], [50, 0.99, 0]]) {
          const settings = { temperature: 0.8, topK, topP, minP, seed: 4242 + topK };
          for (const [i, k] of kernels.entries()) {
            const picks = await draw(gpu, k, logits, settings, { startStep: 100 * i, steps: 4, rows });
            const want = picks.map((_, j) => sampleRef(logits, settings, 100 * i + j));
            assert.deepEqual(picks, want, `vocab ${vocab} kernel ${i} ${JSON.stringify(settings)}`);
          }
        }
      }
    },
  );

  await t.step("−inf logits are never drawn, counted or taken as the argmax", async () => {
    const logits = zipfLogits(300, 5);
    for (let i = 0; i < 300; i += 3) logits[i] = -Infinity;
    for (
      const settings of [{ temperature: 1.5, ...OFF, seed: 6 }, { temperature: 1, ...OFF, topK: 20, seed: 7 }]
    ) {
      for (const k of kernels) {
        const picks = await draw(gpu, k, logits, settings, { steps: 16 });
        assert.deepEqual(picks, picks.map((_, j) => sampleRef(logits, settings, j)));
        assert.ok(picks.every((tok) => logits[tok] > -Infinity));
      }
    }
    const allMasked = new Float32Array(9).fill(-Infinity);
    allMasked[4] = -1e30;
    assert.deepEqual(await draw(gpu, kernel, allMasked, { temperature: 0, ...OFF, seed: 1 }), [4]);
  });

  await t.step("topK = 1 always gives the argmax", async () => {
    for (const vocab of [7, 512, 128256]) {
      const logits = randomF32(vocab, vocab + 1, 3);
      for (const temperature of [0.7, 1.5]) {
        const settings = { temperature, topK: 1, topP: 0.9, minP: 0.05, seed: vocab };
        assert.deepEqual(
          await draw(gpu, kernel, logits, settings, { steps: 4 }),
          new Array(4).fill(argmax(logits)),
        );
      }
    }
  });

  await t.step("2000 draws over 8 tokens match the kept distribution (chi-square)", async () => {
    const logits = new Float32Array([0.5, -1, 2, 0, 1.2, -0.3, 0.8, -2]);
    for (
      const settings of [{ temperature: 1, ...OFF, seed: 77 }, {
        temperature: 0.7,
        ...OFF,
        topK: 5,
        seed: 78,
      }]
    ) {
      const n = 2000;
      const picks = await draw(gpu, small, logits, settings, { steps: n });
      const counts = new Array(8).fill(0);
      picks.forEach((tok) => counts[tok]++);
      const w = sampleWeightsRef(logits, settings);
      const total = w.reduce((a, b) => a + b, 0);
      let chi2 = 0;
      let dof = -1;
      for (let i = 0; i < 8; i++) {
        if (w[i] === 0) {
          assert.equal(counts[i], 0, `token ${i} is filtered but was drawn`);
          continue;
        }
        const expected = (n * w[i]) / total;
        chi2 += (counts[i] - expected) ** 2 / expected;
        dof++;
      }
      // 99.9th percentile of chi-square with 7 (resp. 4) degrees of freedom.
      const bound = dof === 7 ? 24.32 : 18.47;
      assert.ok(chi2 < bound, `chi2 ${chi2.toFixed(2)} ≥ ${bound} (dof ${dof}, counts ${counts})`);
    }
  });

  await t.step("packSlotParams, createBatchSample and bind reject bad arguments", () => {
    assert.throws(() => packSlotParams({ ...BASE, topP: 0 }, PACK), /topP/);
    assert.throws(() => packSlotParams({ ...BASE, temperature: -1 }, PACK), /temperature/);
    assert.throws(() => packSlotParams({ ...BASE, seed: 2 ** 32 }, PACK), /seed/);
    assert.throws(() => createBatchSample(gpu, { workgroupSize: 48 }), /workgroupSize 48/);
    assert.throws(() => createBatchSample(gpu, { poolSize: 6 }), /poolSize 6/);
    const small = createStorage(gpu, 16, "u32");
    const args = { slotParams: small, gather: small, rowSlot: small, state: small, slots: small };
    const more = { outTokens: small, counts: small, vocabSize: 10, maxSlots: 1 };
    const logits = createStorage(gpu, 40, "logits");
    assert.throws(() => kernel.bind({ ...args, ...more, logits, rows: 2 }), /fewer than 2 rows/);
  });

  gpu.device.destroy();
});
