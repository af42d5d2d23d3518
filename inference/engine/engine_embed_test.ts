/**
 * Embeddings through the engine (stories260K): an input's last-token embedding is the final-normed hidden
 * state that the LM head turns into the last row's logits, the same bits whatever runs beside it or however
 * the prompt is cut into pieces (batch-invariant kernels), and the sequence frees what it held.
 */
import assert from "node:assert/strict";
import { collect, engineFor, greedy } from "../../tests/_engine.ts";
import { forwardLogits } from "../../tests/_golden.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { loadLlamaWeights } from "../model/weights.ts";
import { EngineInputError } from "./mod.ts";

const TEXTS = [
  "Once upon a time",
  "The little dog ran to the park and saw a big red ball.",
  "Lily and Ben went to the beach. They built a big sand castle with a flag on top. Then a wave came.",
];

Deno.test("embed: the last token's final-normed hidden state, in any pieces, beside generation", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const options = { kvCacheDtype: "f32", batchInvariant: true, maxNumSeqs: 4 } as const;
  const { engine, model: m } = await engineFor(gpu, dir, options);
  const { config, tokenizer } = m;
  const host = await loadLlamaWeights(dir, config);
  const head = host.lmHead.data; // (vocab, dim)

  const before = engine.counters();
  const alone: Float32Array[] = [];
  for (const prompt of TEXTS) {
    const got = await engine.embed({ kind: "text", prompt });
    const ids = tokenizer.encode(prompt, { addSpecialTokens: true });
    assert.equal(got.promptTokens, ids.length);
    assert.equal(got.embedding.length, config.dim);
    // The LM head over the embedding gives the reference forward's last row of logits.
    const logits = await forwardLogits(gpu, config, m.weights, ids);
    const last = logits.subarray((ids.length - 1) * config.vocabSize);
    let worst = 0;
    for (let v = 0; v < config.vocabSize; v++) {
      let sum = 0;
      for (let d = 0; d < config.dim; d++) sum += head[v * config.dim + d] * got.embedding[d];
      worst = Math.max(worst, Math.abs(sum - last[v]));
    }
    assert.ok(worst < 1e-3, `${prompt}: logits from the embedding off by ${worst}`);
    alone.push(got.embedding);
  }
  const after = engine.counters();
  assert.equal(after.generatedTokensTotal, before.generatedTokensTotal, "an embedding samples nothing");
  assert.equal(
    after.running + after.waiting + after.kvBlocksUsed,
    0,
    "its sequence ended and freed its blocks",
  );

  // Together and beside a generation: the same bits, and the generation's ids as alone.
  const [text] = await collect(engine, greedy("Tom had a toy car.", 16));
  const [together, [beside]] = await Promise.all([
    Promise.all(TEXTS.map((prompt) => engine.embed({ kind: "text", prompt }))),
    collect(engine, greedy("Tom had a toy car.", 16)),
  ]);
  together.forEach((r, i) => assert.deepEqual(r.embedding, alone[i], `input ${i} together`));
  assert.deepEqual(beside.ids, text.ids);

  // Pieces of 16 rows (the longest input takes three): the same bits. Token ids embed as the text's.
  const small = await engineFor(gpu, dir, { ...options, maxNumBatchedTokens: 16 });
  const ids = tokenizer.encode(TEXTS[2], { addSpecialTokens: true });
  assert.ok(ids.length > 32);
  const pieces = await small.engine.embed({ kind: "tokens", ids });
  assert.deepEqual(pieces.embedding, alone[2]);
  const cut = await small.engine.embed({ kind: "tokens", ids: [99, ...ids] }, {
    truncatePromptTokens: ids.length,
  });
  assert.deepEqual(cut.embedding, alone[2], "truncate_prompt_tokens keeps the last ids");

  await assert.rejects(
    () => engine.embed({ kind: "tokens", ids: [] }),
    (err) => err instanceof EngineInputError && err.param === "input",
  );
  await assert.rejects(
    () => engine.embed({ kind: "tokens", ids: [1, config.vocabSize] }),
    (err) => err instanceof EngineInputError && err.param === "input[1]",
  );
  const long = Array.from({ length: config.seqLen + 1 }, () => ids[1]);
  await assert.rejects(
    () => engine.embed({ kind: "tokens", ids: long }),
    (err) => err instanceof EngineInputError && err.code === "context_length_exceeded",
  );
  gpu.device.destroy();
});
