import assert from "node:assert/strict";
import { logSoftmaxRef } from "../../kernels/core/reference.ts";
import { LOGPROB_RECORD_WORDS } from "../../kernels/ops/mod.ts";
import { forwardLogits } from "../../tests/_golden.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { loadModel } from "./mod.ts";
import { readLogprob } from "./choice.ts";
import { scorePrompt } from "./prompt_logprobs.ts";

Deno.test("scorePrompt: each position's next-id logprob and top ids, in one forward or in windows", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const m = await loadModel(gpu, dir, { weightType: "f32" });
  const ids = m.tokenizer.encode(
    "Once upon a time there was a little girl named Lily. She loved to play outside in the sun with her dog.",
    { addSpecialTokens: true },
  );
  const vocab = m.config.vocabSize;
  const logits = await forwardLogits(gpu, m.config, m.weights, ids);
  /** A scored prompt's records as TokenLogprobs: entry t for ids[t + 1]. */
  const read = (words: Uint32Array) =>
    Array.from(
      { length: words.length / LOGPROB_RECORD_WORDS },
      (_, t) =>
        readLogprob(
          m.tokenizer,
          ids[t + 1],
          words.subarray(t * LOGPROB_RECORD_WORDS, (t + 1) * LOGPROB_RECORD_WORDS),
        ),
    );
  const whole = read(await scorePrompt(gpu, m.config, m.weights, ids, 3));
  const windows = read(await scorePrompt(gpu, m.config, m.weights, ids, 3, { rowsPerForward: 5 }));
  assert.equal(whole.length, ids.length - 1);
  for (const got of [whole, windows]) {
    got.forEach((r, t) => {
      const want = logSoftmaxRef(logits.subarray(t * vocab, (t + 1) * vocab));
      assert.ok(
        Math.abs(r.logprob! - want[ids[t + 1]]) < 1e-4,
        `position ${t}: ${r.logprob} vs ${want[ids[t + 1]]}`,
      );
      const order = Array.from(want.keys()).sort((a, b) => want[b] - want[a]);
      assert.deepEqual(r.top.map((x) => x.id), order.slice(0, 3), `position ${t} top ids`);
    });
  }
  // Prompts of other lengths in the same row bucket (18–33 ids, 17–32 positions scored: forwards of 32 rows)
  // build no pipelines, and padding changes no record: a prefix scores as it does inside the longer prompt.
  assert.ok(ids.length >= 33);
  await scorePrompt(gpu, m.config, m.weights, ids.slice(0, 18), 3);
  const built = gpu.pipelineCache.size;
  for (const len of [23, 24, 31, 33]) {
    const part = read(await scorePrompt(gpu, m.config, m.weights, ids.slice(0, len), 3));
    assert.equal(gpu.pipelineCache.size, built, `${len} ids built new pipelines`);
    part.forEach((r, t) => assert.deepEqual(r.top.map((x) => x.id), whole[t].top.map((x) => x.id)));
    part.forEach((r, t) =>
      assert.ok(Math.abs(r.logprob! - whole[t].logprob!) < 1e-5, `${len} ids, position ${t}`)
    );
  }
  gpu.device.destroy();
});
