import assert from "node:assert/strict";
import {
  createSample,
  SAMPLE_PARAMS_BYTES,
  type SampleArgs,
  type SampleSettings,
  writeSampleParams,
} from "./sample.ts";
import { sampleHashRef, sampleRef, sampleUniformRef, sampleWeightsRef } from "../core/reference.ts";
import { checkPipelines, type Gpu, type Kernel } from "../core/gpu.ts";
import { createStorage, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { createAdvance } from "../core/step_state.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";

const UNWRITTEN = 0xdeadbeef;
const OFF = { topK: 0, topP: 1, minP: 0 };

interface StepRun {
  /** first value of state.step */
  startStep?: number;
  /** sample + advance pairs encoded into one pass */
  steps?: number;
  historyLen?: number;
  /** the logits become the last row of a (rows, vocab) buffer whose other rows are noise */
  rows?: number;
}

/** Runs `steps` decode steps (sample, then advance) in one pass; returns the ring and tokenOut. */
async function runSteps(
  gpu: Gpu,
  kernel: Kernel<SampleArgs>,
  logits: Float32Array,
  settings: SampleSettings,
  { startStep = 0, steps = 1, historyLen = steps, rows = 1 }: StepRun = {},
): Promise<{ history: Uint32Array; token: number; picks: number[] }> {
  const vocabSize = logits.length;
  const all = randomF32(rows * vocabSize, 99, 50);
  all.set(logits, (rows - 1) * vocabSize);
  const buffers = {
    logits: uploadStorage(gpu, all, "logits"),
    params: createStorage(gpu, SAMPLE_PARAMS_BYTES, "params"),
    state: uploadStorage(gpu, new Uint32Array([7, startStep, 0, 0]), "state"),
    tokenOut: uploadStorage(gpu, new Uint32Array([UNWRITTEN]), "tokenOut"),
    history: uploadStorage(gpu, new Uint32Array(historyLen).fill(UNWRITTEN), "history"),
  };
  writeSampleParams(gpu, buffers.params, settings);
  const logitsOffset = (rows - 1) * vocabSize * 4;
  const sample = kernel.bind({ ...buffers, logitsOffset, vocabSize, historyLen });
  const advance = createAdvance(gpu).bind({ state: buffers.state, nTokens: 1, stepInc: 1 });
  runPass(gpu, (pass) => {
    for (let s = 0; s < steps; s++) {
      sample.encode(pass);
      advance.encode(pass);
    }
  });
  const history = await readU32(gpu, buffers.history, historyLen);
  const [token] = await readU32(gpu, buffers.tokenOut, 1);
  const state = await readU32(gpu, buffers.state, 2);
  assert.deepEqual([...state], [7 + steps, startStep + steps], "advance moved the state");
  Object.values(buffers).forEach((b) => b.destroy());
  // picks[j] is step startStep + j (meaningful while steps ≤ historyLen)
  const picks = Array.from(
    { length: Math.min(steps, historyLen) },
    (_, j) => history[(startStep + j) % historyLen],
  );
  return { history, token, picks };
}

/** Zipf-like logits (p ∝ rank^−1.1, shuffled, with jitter), so top-p and min-p really cut. */
function zipfLogits(n: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const rank = Array.from({ length: n }, (_, i) => i + 1);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rank[i], rank[j]] = [rank[j], rank[i]];
  }
  return Float32Array.from(rank, (r) => -1.1 * Math.log(r) + 0.2 * rand());
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

Deno.test("sampleRef() keeps the hand-computed sets", () => {
  // probabilities 0.1, 0.2, 0.3, 0.4
  const logits = [1, 2, 3, 4].map(Math.log);
  const kept = (p: Partial<SampleSettings>) =>
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
  assert.deepEqual([...sampleWeightsRef([1, 5, 0, 5], { temperature: 1, ...OFF, topK: 1, seed: 0 })], [
    0,
    1,
    0,
    1,
  ]);
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
    const kept = (p: Partial<SampleSettings>) => {
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

Deno.test("sample() on the GPU", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createSample(gpu);
  const small = createSample(gpu, { workgroupSize: 64 });
  // A 4-token pool keeps the threshold search on the logits buffer nearly to the end.
  const unpooled = createSample(gpu, { workgroupSize: 128, poolSize: 4 });
  const kernels = [kernel, small, unpooled];
  const tiny = createSample(gpu, { workgroupSize: 8 }); // fewer invocations than a draw group
  await checkPipelines(gpu);

  await t.step("the RNG equals sampleHashRef: uniform logits over 2^16 tokens pick hash >> 16", async () => {
    const logits = new Float32Array(65536);
    for (const seed of [0, 1, 12345, 0xffffffff]) {
      const startStep = seed % 1000;
      const { picks } = await runSteps(gpu, kernel, logits, { temperature: 1, ...OFF, seed }, {
        startStep,
        steps: 6,
      });
      const want = picks.map((_, j) => sampleHashRef(seed, startStep + j) >>> 16);
      assert.deepEqual(picks, want, `seed ${seed}`);
    }
  });

  await t.step("greedy equals argmax (lowest index on ties) for vocab 1, 7, 512, 49152, 128256", async () => {
    for (const vocab of [1, 7, 512, 49152, 128256]) {
      const logits = randomF32(vocab, vocab, 10);
      const { history, token } = await runSteps(gpu, kernel, logits, { temperature: 0, ...OFF, seed: 3 });
      assert.equal(history[0], argmax(logits), `vocab ${vocab}`);
      assert.equal(token, argmax(logits), `vocab ${vocab} tokenOut`);
      if (vocab < 7) continue;
      // Ties in neighbouring lanes, in one lane of one invocation (4 · 64 vec4s apart) and across
      // invocations: the lowest index must win each time.
      const a = Math.floor(vocab / 3);
      for (const [b, c] of [[a + 1, a + 2], [a + 1024, vocab - 1], [vocab - 1, vocab - 1]]) {
        if (c >= vocab) continue;
        const tiedLogits = logits.slice();
        tiedLogits[a] = tiedLogits[b] = tiedLogits[c] = 11; // above every random logit
        const settings = { temperature: 0, ...OFF, seed: 3 };
        const tied = await runSteps(gpu, small, tiedLogits, settings, { rows: 2 });
        assert.equal(tied.token, a, `vocab ${vocab} tie at ${a}, ${b}, ${c}`);
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
            const { picks } = await runSteps(gpu, k, logits, settings, { startStep, steps: 8, rows: 2 });
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
            const { picks } = await runSteps(gpu, k, logits, settings, {
              startStep: 100 * i,
              steps: 4,
              rows,
            });
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
    logits[0] = -Infinity;
    for (
      const settings of [{ temperature: 1.5, ...OFF, seed: 6 }, { temperature: 1, ...OFF, topK: 20, seed: 7 }]
    ) {
      for (const k of kernels) {
        const { picks } = await runSteps(gpu, k, logits, settings, { steps: 16 });
        assert.deepEqual(picks, picks.map((_, j) => sampleRef(logits, settings, j)));
        assert.ok(picks.every((tok) => logits[tok] > -Infinity));
      }
    }
    const allMasked = new Float32Array(9).fill(-Infinity);
    allMasked[4] = -1e30;
    const { token } = await runSteps(gpu, kernel, allMasked, { temperature: 0, ...OFF, seed: 1 });
    assert.equal(token, 4);
  });

  await t.step("topK = 1 always gives the argmax", async () => {
    for (const vocab of [7, 512, 128256]) {
      const logits = randomF32(vocab, vocab + 1, 3);
      for (const temperature of [0.7, 1.5]) {
        const settings = { temperature, topK: 1, topP: 0.9, minP: 0.05, seed: vocab };
        const { history } = await runSteps(gpu, kernel, logits, settings, { steps: 4 });
        assert.deepEqual([...history], [argmax(logits), argmax(logits), argmax(logits), argmax(logits)]);
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
      const { history } = await runSteps(gpu, small, logits, settings, { steps: n });
      assert.ok(history.every((tok) => tok < 8), "every step wrote a token id");
      const counts = new Array(8).fill(0);
      history.forEach((tok) => counts[tok]++);
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

  await t.step("history is a ring indexed by state.step and tokenOut holds the last pick", async () => {
    const logits = randomF32(7, 11, 1);
    const settings = { temperature: 1, ...OFF, seed: 9 };
    const startStep = 5;
    const { history, token } = await runSteps(gpu, kernel, logits, settings, {
      startStep,
      steps: 7,
      historyLen: 3,
      rows: 3,
    });
    const picks = Array.from({ length: 7 }, (_, j) => sampleRef(logits, settings, startStep + j));
    assert.ok(new Set(picks).size > 1, "the picks vary with the step");
    const want = new Array(3);
    picks.forEach((p, j) => want[(startStep + j) % 3] = p);
    assert.deepEqual([...history], want);
    assert.equal(token, picks[6]);
  });

  await t.step("two samples with an advance between them read the moving step", async () => {
    const logits = randomF32(512, 12, 2);
    const settings = { temperature: 1.2, topK: 40, topP: 0.95, minP: 0, seed: 31337 };
    const { history } = await runSteps(gpu, kernel, logits, settings, {
      startStep: 0,
      steps: 2,
      historyLen: 4,
    });
    const want = [sampleRef(logits, settings, 0), sampleRef(logits, settings, 1), UNWRITTEN, UNWRITTEN];
    assert.deepEqual([...history], want);
  });

  await t.step("bind and writeSampleParams reject bad arguments", () => {
    const params = createStorage(gpu, SAMPLE_PARAMS_BYTES, "params");
    const ok = { temperature: 1, topP: 1, topK: 0, minP: 0, seed: 1 };
    assert.throws(() => writeSampleParams(gpu, params, { ...ok, topP: 0 }), /topP/);
    assert.throws(() => writeSampleParams(gpu, params, { ...ok, temperature: -1 }), /temperature/);
    assert.throws(() => writeSampleParams(gpu, params, { ...ok, seed: 2 ** 32 }), /seed/);
    const logits = createStorage(gpu, 40, "logits");
    const small = createStorage(gpu, 4, "u32");
    const args = {
      logits,
      params,
      state: small,
      tokenOut: small,
      history: small,
      vocabSize: 10,
      historyLen: 1,
    };
    assert.throws(() => kernel.bind({ ...args, logitsOffset: 4 }), /does not fit/);
    assert.throws(() => kernel.bind({ ...args, historyLen: 2 }), /historyLen/);
  });

  gpu.device.destroy();
});
