import assert from "node:assert/strict";
import { logSoftmaxRef } from "../../kernels/core/reference.ts";
import { LOGPROB_RECORD_WORDS } from "../../kernels/ops/mod.ts";
import { forwardLogits } from "../../tests/_golden.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { loadModel } from "./mod.ts";
import { readLogprob } from "./choice.ts";
import { scorePrompts, ScoreQueue } from "./prompt_logprobs.ts";

Deno.test("scorePrompts: each position's next-id logprob and top ids, in one forward or in windows", async () => {
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
  const whole = read((await scorePrompts(gpu, m.config, m.weights, [ids], 3))[0]);
  const windows = read((await scorePrompts(gpu, m.config, m.weights, [ids], 3, { rowsPerForward: 5 }))[0]);
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
  await scorePrompts(gpu, m.config, m.weights, [ids.slice(0, 18)], 3);
  const built = gpu.pipelineCache.size;
  for (const len of [23, 24, 31, 33]) {
    const part = read((await scorePrompts(gpu, m.config, m.weights, [ids.slice(0, len)], 3))[0]);
    assert.equal(gpu.pipelineCache.size, built, `${len} ids built new pipelines`);
    part.forEach((r, t) => assert.deepEqual(r.top.map((x) => x.id), whole[t].top.map((x) => x.id)));
    part.forEach((r, t) =>
      assert.ok(Math.abs(r.logprob! - whole[t].logprob!) < 1e-5, `${len} ids, position ${t}`)
    );
  }
  // A group scores each prompt as it scores alone, bit for bit, whatever its neighbours' lengths (one id:
  // nothing to score), in one forward or in windows.
  const prompts = [ids.slice(0, 23), ids, ids.slice(0, 1), ids.slice(0, 9)];
  for (const rowsPerForward of [256, 5]) {
    const alone = await Promise.all(
      prompts.map(async (p) => (await scorePrompts(gpu, m.config, m.weights, [p], 3, { rowsPerForward }))[0]),
    );
    const grouped = await scorePrompts(gpu, m.config, m.weights, prompts, 3, { rowsPerForward });
    assert.equal(grouped.length, prompts.length);
    grouped.forEach((g, i) =>
      assert.deepEqual(g, alone[i], `prompt ${i}, ${rowsPerForward} rows per forward`)
    );
  }
  gpu.device.destroy();
});

Deno.test("ScoreQueue: what arrives while a group runs goes together in the next, by model, within the id budget", async () => {
  const runs: { key: string; lengths: number[]; top: number }[] = [];
  let release: () => void = () => {};
  const queue = new ScoreQueue<string>(async (key, prompts, top) => {
    runs.push({ key, lengths: prompts.map((p) => p.length), top });
    await new Promise<void>((r) => release = r);
    if (prompts.some((p) => p[0] === -1)) throw new Error("bad group");
    return prompts.map((p) => Uint32Array.of(p.length, top));
  }, 10);
  const ids = (n: number, first = 0) => Array.from({ length: n }, (_, i) => (i === 0 ? first : i));
  const a = queue.score("m", ids(3), 1); // runs at once, alone
  const b = queue.score("m", ids(4), 2);
  const c = queue.score("other", ids(2), 5);
  const d = queue.score("m", ids(5), 0);
  const e = queue.score("m", ids(7), 3); // over the budget with b and d: the group after
  assert.equal(queue.waiting, 4);
  release();
  assert.deepEqual(await a, Uint32Array.of(3, 1));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(runs.at(-1), { key: "m", lengths: [4, 5], top: 2 });
  assert.equal(queue.waiting, 2);
  release();
  assert.deepEqual(await b, Uint32Array.of(4, 2));
  assert.deepEqual(await d, Uint32Array.of(5, 2));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(runs.at(-1), { key: "other", lengths: [2], top: 5 });
  const f = queue.score("m", ids(2, -1), 1); // fails with its group, not later ones
  release();
  assert.deepEqual(await c, Uint32Array.of(2, 5));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(runs.at(-1), { key: "m", lengths: [7, 2], top: 3 });
  release();
  assert.deepEqual(await e.catch((err) => err.message), "bad group");
  await assert.rejects(f, /bad group/);
  const g = queue.score("m", ids(1), 0); // runs at once
  // A prompt whose client went away while it waited leaves the queue unscored (null); aborted before: null.
  const gone = new AbortController();
  const h = queue.score("m", ids(3), 0, gone.signal);
  assert.equal(queue.waiting, 1);
  gone.abort();
  assert.equal(await h, null);
  assert.equal(queue.waiting, 0);
  assert.equal(await queue.score("m", ids(3), 0, gone.signal), null);
  await new Promise((r) => setTimeout(r, 0));
  release();
  assert.deepEqual(await g, Uint32Array.of(1, 0));
  assert.deepEqual(runs.at(-1), { key: "m", lengths: [1], top: 0 }, "the aborted prompt never ran");
  assert.equal(queue.waiting, 0);
});
