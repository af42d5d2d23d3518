/**
 * The batched path serves every supported architecture: each tiny-* model's two golden prompts run together
 * through the scheduler (paged f32 KV cache, prefill chunked into 16-row pieces, decode rows sharing
 * forwards) and give PyTorch's 24 greedy ids token for token. This covers what the single-sequence golden
 * test (tests/architectures_golden_test.ts) cannot: paged attention's scale, sliding window and soft cap,
 * paged RoPE with Gemma's local table, biases and q/k norms on pinned GEMM/GEMV paths.
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { loadModelConfig, uploadModelWeights } from "../model/mod.ts";
import { MAX_BAN, MAX_BIAS } from "./engine.ts";
import { BatchRunner } from "./batch_runner.ts";
import { KvCache, sizeKvCache } from "./kv_cache.ts";
import { Scheduler } from "./scheduler.ts";
import { GREEDY_SLOT, type SlotSettings } from "../../kernels/ops/mod.ts";

const GREEDY: SlotSettings = GREEDY_SLOT;

const MODELS = ["tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-mistral-swa", "tiny-gemma3"];

for (const name of MODELS) {
  Deno.test(`${name}: batched greedy decode over the paged cache gives PyTorch's ids`, async () => {
    const dir = sharedPath(`models/${name}`);
    const gpu = await testGpu();
    if (!gpu || !dir) return;
    const config = await loadModelConfig(dir);
    const weights = await uploadModelWeights(gpu, dir, config, { weightType: "f32" });
    const shape = sizeKvCache(gpu, config, { memory: null, maxModelLen: 256, maxNumSeqs: 4, kvType: "f32" });
    const cache = new KvCache(gpu, config, shape);
    const runner = new BatchRunner(gpu, config, weights, cache, {
      maxSlots: 4,
      maxRows: 16,
      maxChunk: 8,
      maxBias: MAX_BIAS,
      maxBan: MAX_BAN,
    });
    try {
      const scheduler = new Scheduler();
      const entry = scheduler.addModel(runner, () => {});
      const cases: { ids: number[]; greedy24_ids: number[] }[] =
        JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases;
      const runs = cases.map((c) =>
        new Promise<number[]>((resolve, reject) => {
          const out: number[] = [];
          scheduler.add(entry, [{
            prompt: c.ids,
            limit: c.greedy24_ids.length,
            settings: GREEDY,
            sink: {
              token(id) {
                out.push(id);
                if (out.length === c.greedy24_ids.length) resolve(out);
                return false;
              },
              fail: reject,
            },
          }]);
        })
      );
      const got = await Promise.all(runs);
      cases.forEach((c, i) => assert.deepEqual(got[i], c.greedy24_ids, `prompt ${i} (${c.ids.length} ids)`));
    } finally {
      runner.destroy();
      cache.destroy();
      gpu.device.destroy();
    }
  });
}
