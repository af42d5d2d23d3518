/**
 * Each supported architecture's forward pass against PyTorch on a tiny random-weight model (../shared/models/
 * tiny-*, transformers 5.17, f32 without TF32): the logits at every position of two prompts (6 and 61 ids)
 * within 1e-4, and 24 greedy tokens generated with the KV cache (EOS ignored) token for token. The models
 * have no tokenizer, so they load through the config and weights alone.
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "./_gpu.ts";
import { maxAbsDiff } from "./_assert.ts";
import { forwardLogits, type PackedTensor, unpackTensor } from "./_golden.ts";
import { createSequenceRunner } from "../inference/engine/mod.ts";
import { loadModelConfig, uploadModelWeights } from "../inference/model/mod.ts";

interface TinyCase {
  ids: number[];
  logits_all: PackedTensor;
  greedy24_ids: number[];
}

/**
 * f32 logits of these models are O(1–10); f32 accumulation over 64–160 terms and the GPU's own exp/rsqrt
 * differ from PyTorch's CUDA kernels by ~1e-6 per op, so 1e-4 leaves room without hiding a missing term
 * (a missing bias, norm or (1 + w) moves logits by ≥ 1e-2).
 */
const LOGIT_TOL = 1e-4;

async function checkTiny(t: Deno.TestContext, name: string) {
  const dir = sharedPath(`models/${name}`);
  if (!dir) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const config = await loadModelConfig(dir);
  const weights = await uploadModelWeights(gpu, dir, config, { weightType: "f32" });
  const runner = createSequenceRunner(gpu, config, weights, { maxPrefillRows: 64 });
  const cases: TinyCase[] = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases;
  for (const c of cases) {
    await t.step(`${name}: ${c.ids.length} ids`, async () => {
      const got = await forwardLogits(gpu, config, weights, c.ids);
      const want = unpackTensor(c.logits_all);
      assert.equal(got.length, want.length);
      const err = maxAbsDiff(got, want);
      console.log(
        `  ${name} (${c.ids.length} ids): max |logit diff| over every position ${err.toExponential(2)}`,
      );
      assert.ok(err <= LOGIT_TOL, `logits at every position: max |diff| ${err}`);
      const out: number[] = [];
      const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
      for await (const chunk of runner.run(c.ids, { maxNewTokens: c.greedy24_ids.length, sampling })) {
        out.push(...chunk);
      }
      assert.deepEqual(out, c.greedy24_ids, "greedy continuation with the KV cache");
    });
  }
  gpu.device.destroy();
}

for (
  const [name, what] of [
    ["tiny-llama3", "llama3 RoPE scaling, tied embeddings"],
    ["tiny-qwen2", "q/k/v biases"],
    ["tiny-qwen3", "per-head q/k RMSNorm, head_dim ≠ hidden/heads"],
    ["tiny-mistral-swa", "sliding-window attention"],
    ["tiny-gemma3", "Gemma 3: (1 + w) norms, sandwich norms, GeGLU, local/global layers"],
  ]
) {
  Deno.test(`${name} (${what}) matches PyTorch logits and greedy ids`, async (t) => {
    await checkTiny(t, name);
  });
}
