/**
 * Forward row buckets: few and bounded, each step fits one, and a runner that has bound every bucket at
 * install binds no plan and compiles no pipeline while it serves (the stalls BENCHMARKS.md "Serving under
 * load" traced to plans bound mid-serving). And a slot's token mask reaches the sampler.
 */
import assert from "node:assert/strict";
import { testGpu } from "../../tests/_gpu.ts";
import { presetConfig, randomWeights } from "../../bench/random_model.ts";
import { MAX_BAN, MAX_BIAS } from "./engine.ts";
import { BatchRunner, type StepSpec } from "./batch_runner.ts";
import { bucketOf, decodeBuckets, logitBuckets, prefillBuckets } from "./row_buckets.ts";
import { KvCache, sizeKvCache } from "./kv_cache.ts";
import { Scheduler } from "./scheduler.ts";
import { GREEDY_SLOT, maskWords, type SlotSettings } from "../../kernels/ops/mod.ts";

Deno.test("row buckets are few, increasing, end at the maximum and hold every count", () => {
  assert.deepEqual(decodeBuckets(1), [1]);
  assert.deepEqual(decodeBuckets(3), [1, 2, 3]);
  assert.deepEqual(decodeBuckets(24), [1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24]);
  assert.deepEqual(prefillBuckets(512), [16, 32, 64, 128, 256, 512]);
  assert.deepEqual(prefillBuckets(2048), [
    16,
    32,
    64,
    128,
    256,
    512,
    640,
    768,
    896,
    1024,
    1280,
    1536,
    1792,
    2048,
  ]);
  assert.deepEqual(prefillBuckets(700), [16, 32, 64, 128, 256, 512, 640, 700]);
  assert.deepEqual(prefillBuckets(8), [8]);
  assert.deepEqual(logitBuckets(64), [1, 2, 4, 8, 16, 32, 64]);
  for (const max of [1, 2, 5, 16, 17, 64, 100, 256, 1000, 4096]) {
    for (const buckets of [decodeBuckets(max), prefillBuckets(max), logitBuckets(max)]) {
      assert.equal(buckets.at(-1), max);
      buckets.slice(1).forEach((b, i) => assert.ok(b > buckets[i], `${buckets} increase`));
      assert.ok(buckets.length <= 80, `${buckets.length} buckets for ${max}`);
    }
    for (let n = 1; n <= max; n += Math.ceil(max / 50)) {
      const b = bucketOf(n, decodeBuckets(max));
      assert.ok(b >= n && b <= max);
    }
  }
  assert.throws(() => bucketOf(65, decodeBuckets(64)), /Cannot fit 65 rows/);
});

const GREEDY: SlotSettings = GREEDY_SLOT;

Deno.test("after prebuild, serving binds no plan and compiles no pipeline", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const config = presetConfig("tiny");
  const weights = await randomWeights(gpu, config, "f16", { kind: "affine", bits: 4 });
  const shape = sizeKvCache(gpu, config, { memory: null, maxModelLen: 128, maxNumSeqs: 3, kvType: "f16" });
  const cache = new KvCache(gpu, config, shape);
  const options = { maxSlots: 3, maxRows: 32, maxChunk: 4, maxBias: MAX_BIAS, maxBan: MAX_BAN };
  const runner = new BatchRunner(gpu, config, weights, cache, options);
  try {
    // decode 1, 2, 3; prefill 16 × logits 1, 2, 3 and 32 × the same
    assert.equal(await runner.prebuild(), 9);
    const pipelines = gpu.pipelineCache.size;
    const scheduler = new Scheduler();
    const entry = scheduler.addModel(runner, () => {});
    // Prompts of 5, 40 (two pieces) and 20 ids, joining while the others decode.
    const runs = [5, 40, 20].map((len, i) =>
      new Promise<number>((resolve, reject) => {
        let n = 0;
        scheduler.add(entry, [{
          prompt: Array.from({ length: len }, (_, j) => (j * 7 + i) % config.vocabSize),
          limit: 6 + 3 * i,
          settings: GREEDY,
          sink: {
            token() {
              if (++n === 6 + 3 * i) resolve(n);
              return false;
            },
            fail: reject,
          },
        }]);
      })
    );
    assert.deepEqual(await Promise.all(runs), [6, 9, 12]);
    assert.equal(runner.boundPlans, 9, "no plan bound while serving");
    assert.equal(gpu.pipelineCache.size, pipelines, "no pipeline compiled while serving");
  } finally {
    runner.destroy();
    cache.destroy();
    gpu.device.destroy();
  }
});

Deno.test("a masked slot samples only the id its token mask allows, next to an unmasked one", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const config = presetConfig("tiny");
  const weights = await randomWeights(gpu, config, "f16", { kind: "affine", bits: 4 });
  const shape = sizeKvCache(gpu, config, { memory: null, maxModelLen: 128, maxNumSeqs: 2, kvType: "f16" });
  const cache = new KvCache(gpu, config, shape);
  const options = { maxSlots: 2, maxRows: 16, maxChunk: 4, maxBias: MAX_BIAS, maxBan: MAX_BAN };
  const runner = new BatchRunner(gpu, config, weights, cache, options);
  try {
    const words = maskWords(config.vocabSize);
    assert.throws(() => runner.setMask(1, new Uint32Array(words + 1)), /expected 16 words, got 17/);
    const only = 301;
    const mask = new Uint32Array(words);
    mask[only >>> 5] = 1 << (only & 31);
    const prompt = [5, 17, 200, 3, 44];
    for (const slot of [0, 1]) {
      const settings = slot === 1 ? { ...GREEDY, masked: true } : GREEDY;
      runner.setSlot(slot, settings, { step: 0, prompt, output: [], blocks: cache.allocate(1)! });
    }
    runner.setMask(1, mask);
    runner.setMask(0, new Uint32Array(words)); // allows nothing, but slot 0 is not masked
    const steps: StepSpec[] = [
      {
        kind: "prefill",
        rows: [0, 1].flatMap((slot) => prompt.map((token, pos) => ({ slot, pos, token }))),
        gather: [prompt.length - 1, 2 * prompt.length - 1],
      },
      ...[0, 1, 2].map((k): StepSpec => ({
        kind: "decode",
        rows: [0, 1].map((slot) => ({ slot, pos: prompt.length + k, token: null })),
        gather: [0, 1],
      })),
    ];
    const result = runner.submit(steps, false);
    runner.flush(result);
    const { tokens } = await result;
    const picks = (slot: number) => steps.map((_, k) => tokens[k * options.maxSlots + slot]);
    assert.deepEqual(picks(1), [only, only, only, only]);
    assert.ok(picks(0).every((id) => id < config.vocabSize), `slot 0 picks ${picks(0)}`);
    assert.notDeepEqual(picks(0), picks(1), "the unmasked slot decodes on its own");
  } finally {
    runner.destroy();
    cache.destroy();
    gpu.device.destroy();
  }
});
