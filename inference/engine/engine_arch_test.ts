/**
 * The batched path serves every supported architecture: each tiny-* model's two golden prompts run together
 * through the scheduler (paged f32 KV cache, prefill chunked into 16-row pieces, decode rows sharing
 * forwards) and give PyTorch's 24 greedy ids token for token. This covers what the single-sequence golden
 * test (tests/architectures_golden_test.ts) cannot: paged attention's scale, sliding window and soft cap,
 * paged RoPE with Gemma's local table, biases and q/k norms on pinned GEMM/GEMV paths.
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { schedulerFor } from "../../tests/_engine.ts";

const MODELS = ["tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-mistral-swa", "tiny-gemma3"];

for (const name of MODELS) {
  Deno.test(`${name}: batched greedy decode over the paged cache gives PyTorch's ids`, async () => {
    const dir = sharedPath(`models/${name}`);
    const gpu = await testGpu();
    if (!gpu || !dir) return;
    const served = await schedulerFor(gpu, dir, { maxModelLen: 256, maxRows: 16 });
    try {
      const cases: { ids: number[]; greedy24_ids: number[] }[] =
        JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases;
      const got = await Promise.all(cases.map((c) => served.generate(c.ids, c.greedy24_ids.length)));
      cases.forEach((c, i) => assert.deepEqual(got[i], c.greedy24_ids, `prompt ${i} (${c.ids.length} ids)`));
    } finally {
      served.destroy();
      gpu.device.destroy();
    }
  });
}
