/**
 * The whole forward pass against PyTorch: logits of the golden positions within 1e-3 (f32 weights)
 * and the greedy continuations token for token, for stories260K and lq-49m (../shared/models).
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "./_gpu.ts";
import { maxAbsDiff } from "./_assert.ts";
import { forwardLogits, type PackedTensor as Packed, unpackTensor } from "./_golden.ts";
import { loadModel } from "../inference/engine/load_model.ts";
import type { LoadedModel } from "../inference/engine/engine.ts";
import { createSequenceRunner } from "../inference/engine/generate.ts";
import type { WeightType } from "../inference/model/linear.ts";

interface GoldenCase {
  prompt: string;
  ids: number[];
  logits_last: Packed;
  logits_first8?: Packed;
  greedy32_ids: number[];
}

async function greedy(m: LoadedModel, ids: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
  const runner = createSequenceRunner(m.gpu, m.config, m.weights, { maxPrefillRows: 64 });
  for await (const chunk of runner.run(ids, { maxNewTokens: n, sampling })) out.push(...chunk);
  return out;
}

async function checkModel(t: Deno.TestContext, name: string, goldenFile: string, weightType: WeightType) {
  const dir = sharedPath(`models/${name}`);
  const golden = sharedPath(`models/${name}/${goldenFile}`);
  if (!dir || !golden) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const cases: GoldenCase[] = JSON.parse(await Deno.readTextFile(golden)).cases;
  const m = await loadModel(gpu, dir, { weightType });
  for (const c of cases) {
    await t.step(`${name}: "${c.prompt.slice(0, 40)}"`, async () => {
      assert.deepEqual(m.tokenizer.encode(c.prompt, { addSpecialTokens: true }), c.ids, "token ids");
      const vocab = m.config.vocabSize;
      const logits = await forwardLogits(gpu, m.config, m.weights, c.ids);
      const last = logits.subarray((c.ids.length - 1) * vocab, c.ids.length * vocab);
      const errLast = maxAbsDiff(last, unpackTensor(c.logits_last));
      console.log(
        `  ${name} "${c.prompt.slice(0, 24)}…": last-position max |logit diff| ${errLast.toExponential(2)}`,
      );
      assert.ok(errLast <= 1e-3, `last-position logits: max |diff| ${errLast}`);
      if (c.logits_first8) {
        const rows = c.logits_first8.shape[0];
        const errFirst = maxAbsDiff(logits.subarray(0, rows * vocab), unpackTensor(c.logits_first8));
        console.log(`  first ${rows} positions: max |logit diff| ${errFirst.toExponential(2)}`);
        assert.ok(errFirst <= 1e-3, `first ${rows} positions: max |diff| ${errFirst}`);
      }
      assert.deepEqual(await greedy(m, c.ids, c.greedy32_ids.length), c.greedy32_ids, "greedy continuation");
    });
  }
  gpu.device.destroy();
}

Deno.test("stories260K forward matches PyTorch logits and greedy ids", async (t) => {
  await checkModel(t, "stories260K", "golden_hf.json", "f32");
});

Deno.test("lq-49m forward matches PyTorch logits and greedy ids", async (t) => {
  await checkModel(t, "lq-49m", "golden.json", "f32");
});
