/**
 * Continuous batching gives each sequence what it would get alone: sequences of different lengths join
 * and leave at different steps (chunked prefill interleaved with decode) and, with `batchInvariant`, their
 * greedy ids and logprobs are the bits of one-at-a-time runs for dense, affine and LUT weights (pinned
 * kernel paths whose sums never depend on the rows, per-row attention splits). By default decode steps of
 * few rows take the GEMVs, whose sums differ by rounding: the same ids wherever the top two logprobs are
 * 1e-3 apart or more. Also: `n = 2` shares its prompt's blocks, and logprobs match a CPU
 * log-softmax of the model's logits.
 */
import assert from "node:assert/strict";
import { collect, engineFor, type Finished, greedy, quantizeInto } from "../../tests/_engine.ts";
import { forwardLogits } from "../../tests/_golden.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { logSoftmaxRef } from "../../kernels/core/reference.ts";
import type { Gpu } from "../../kernels/core/mod.ts";
import type { KvType } from "../../kernels/ops/mod.ts";
import type { GenerateRequest, TokenLogprob } from "./mod.ts";

const PROMPTS: [string, number][] = [
  ["Once upon a time", 24],
  ["The little dog ran to the park and saw a big red ball. He wanted to", 12],
  ["Lily and Ben", 30],
  ["One day, a girl named Sue went to the store with her mom. They wanted to buy some food for dinner", 18],
  ["Tom had a toy car.", 8],
];

/** Batched runs: each request starts once the previous one has its first token (or at once when `burst`). */
async function batched(gpu: Gpu, dir: string, burst: boolean, batchInvariant: boolean): Promise<Finished[]> {
  // Plans bound at install (as on a GPU), unlike the one-at-a-time runs: the same ids either way.
  const { engine } = await engineFor(gpu, dir, {
    maxNumSeqs: 4,
    maxNumBatchedTokens: 16,
    prebuild: true,
    batchInvariant,
  });
  const runs: Promise<Finished[]>[] = [];
  for (const [prompt, max] of PROMPTS) {
    let first!: () => void;
    const started = new Promise<void>((r) => (first = r));
    runs.push(collect(engine, greedy(prompt, max), { onEvent: (ev) => ev.type === "delta" && first() }));
    if (!burst) await started;
  }
  return (await Promise.all(runs)).map((r) => r[0]);
}

async function alone(gpu: Gpu, dir: string, batchInvariant: boolean): Promise<Finished[]> {
  const { engine } = await engineFor(gpu, dir, { maxNumSeqs: 4, maxNumBatchedTokens: 16, batchInvariant });
  const out: Finished[] = [];
  for (const [prompt, max] of PROMPTS) out.push((await collect(engine, greedy(prompt, max)))[0]);
  return out;
}

function assertSame(got: Finished[], want: Finished[], exact: boolean): void {
  want.forEach((w, i) => {
    if (exact) {
      assert.deepEqual(got[i].ids, w.ids, `request ${i} ids`);
      assert.deepEqual(got[i].logprobs, w.logprobs, `request ${i} logprobs, bit for bit`);
      assert.equal(got[i].text, w.text);
      return;
    }
    let compared = 0;
    for (let k = 0; k < w.ids.length; k++) {
      const [a, b] = w.logprobs[k].top;
      if (a.logprob - b.logprob < 1e-3) break; // a near tie: rounding may pick the other token
      assert.equal(got[i].ids[k], w.ids[k], `request ${i} id ${k}`);
      compared++;
    }
    assert.ok(compared >= Math.min(4, w.ids.length), `request ${i}: only ${compared} ids compared`);
  });
}

Deno.test("batched greedy decode reproduces one-at-a-time greedy decode", async (t) => {
  const model = sharedPath("models/stories260K");
  const calib = sharedPath("data/calib/tinystories_calib_second_half.txt");
  const gpu = await testGpu();
  if (!gpu || !model || !calib) return;
  const tmp = await Deno.makeTempDir();
  try {
    const folders: [string, string][] = [
      ["dense f32", model],
      ["affine 4-bit (q8)", await quantizeInto(gpu, model, tmp, "affine", null)],
      ["LUT 4-bit", await quantizeInto(gpu, model, tmp, "lut", calib)],
    ];
    for (const [name, dir] of folders) {
      let invariant: Finished[] = [];
      await t.step(`${name}, batch-invariant: bit for bit`, async () => {
        invariant = await alone(gpu, dir, true);
        assert.ok(invariant.every((w) => w.ids.length > 0));
        assertSame(await batched(gpu, dir, false, true), invariant, true);
        assertSame(await batched(gpu, dir, true, true), invariant, true);
      });
      await t.step(`${name}, default: the same ids outside near ties`, async () => {
        const want = await alone(gpu, dir, false);
        // Alone, every decode step has one row: the one-row GEMVs ran. The LUT GEMV sums in another order
        // than the batched LUT kernel; on this 64-wide model the dense f32 weights take the GEMV either way
        // (the batched dense kernel is for f16), and the two q8 kernels gave the same bits on it.
        if (name.startsWith("LUT")) {
          assert.notDeepEqual(want.map((w) => w.logprobs), invariant.map((w) => w.logprobs));
        }
        assertSame(await batched(gpu, dir, false, false), want, false);
      });
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
    gpu.device.destroy();
  }
});

Deno.test("n = 2 shares the prompt's blocks and gives two choices", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  // Batch-invariant: the n = 1 run decodes alone, the two choices together.
  const { engine } = await engineFor(gpu, model, {
    maxNumSeqs: 4,
    maxNumBatchedTokens: 64,
    batchInvariant: true,
  });
  // 42 prompt ids: 2 full blocks shared, the last partial block recomputed by the second choice.
  const prompt =
    "Once upon a time there was a little girl named Lily. She loved to play outside in the sun. " +
    "One day she saw a big";
  const single = (await collect(engine, greedy(prompt, 6)))[0];
  let most = 0;
  const two = await collect(engine, greedy(prompt, 6, { n: 2 }), {
    onEvent: () => (most = Math.max(most, engine.counters().kvBlocksUsed)),
  });
  assert.equal(two.length, 2);
  // Greedy: both choices are the n = 1 answer (the tail the second one recomputed gives the same bits).
  assert.deepEqual(two[0].ids, single.ids);
  assert.deepEqual(two[1].ids, single.ids);
  const len = 42 + 6;
  assert.ok(most <= Math.ceil(len / 16) + 1, `${most} blocks used; two unshared sequences need 6`);
  assert.equal(engine.counters().kvBlocksUsed, 0, "all blocks free at the end");
  // Sampled: the choices draw from different RNG streams.
  const sampled = await collect(engine, {
    ...greedy(prompt, 12, { n: 2 }),
    sampling: { temperature: 1, topP: 1, topK: 0, minP: 0, seed: 7 },
  });
  assert.notDeepEqual(sampled[0].ids, sampled[1].ids);
  gpu.device.destroy();
});

Deno.test("logprobs match a CPU log-softmax of the model's logits", async (t) => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  // f32 KV: the paged path against the plain forward, to f32 rounding (1e-4); the f16 cache (the default)
  // rounds K and V to 11 bits, which moves these logprobs by up to ~3e-2 (top-5 entries down to −11).
  // int8 K/V (7 bits and a sign against a scale per head row) moved the picks' logprobs by up to 0.09 and
  // the alternatives' (down to −11) by up to 1.6 (f16: 0.002 and 0.03): its kernels are exact against the
  // f64 reference over the same codes (paged_attention_test.ts), so this is the format's own error, about
  // 40 times f16's on this model of 8-wide heads (greedy ids equal f32's for 48 of 48 ids here).
  for (
    const [kvCacheDtype, tol, topTol] of [["f32", 1e-4, 1e-4], ["f16", 5e-2, 5e-2], [
      "int8",
      0.15,
      2.5,
    ]] as const
  ) {
    await t.step(
      `${kvCacheDtype} KV cache, tolerance ${tol} (alternatives ${topTol})`,
      () => checkLogprobs(gpu, model, kvCacheDtype, tol, "f32", topTol),
    );
  }
  // f16 weights: the engine's prompt rows take the batched dense kernel (linear.ts pinnedPath), the plain
  // forward the tiled GEMM; the same f16 weights summed in f32 in two orders.
  await t.step(
    "f16 weights, f32 KV cache, tolerance 1e-4",
    () => checkLogprobs(gpu, model, "f32", 1e-4, "f16"),
  );
  gpu.device.destroy();
});

async function checkLogprobs(
  gpu: Gpu,
  model: string,
  kvCacheDtype: KvType,
  tol: number,
  weightType: "f32" | "f16" = "f32",
  topTol = tol,
) {
  const { engine, model: m } = await engineFor(gpu, model, { kvCacheDtype }, [], weightType);
  const prompt = "The cat sat on the";
  const [got] = await collect(engine, greedy(prompt, 5, { logprobs: 5 }));
  const ids = m.tokenizer.encode(prompt, { addSpecialTokens: true });
  const all = [...ids, ...got.ids];
  const vocab = m.config.vocabSize;
  const logits = await forwardLogits(gpu, m.config, m.weights, all);
  got.logprobs.forEach((entry, k) => {
    const row = ids.length - 1 + k;
    const want = logSoftmaxRef(logits.subarray(row * vocab, (row + 1) * vocab));
    assert.ok(
      Math.abs(entry.logprob! - want[entry.id]) < tol,
      `token ${k}: ${entry.logprob} vs ${want[entry.id]}`,
    );
    const order = Array.from(want.keys()).sort((a, b) => want[b] - want[a]);
    entry.top.forEach((x) =>
      assert.ok(
        Math.abs(x.logprob - want[x.id]) < topTol,
        `token ${k} top ${x.id}: ${x.logprob} vs ${want[x.id]}`,
      )
    );
    if (kvCacheDtype === "f32") {
      assert.deepEqual(entry.top.map((x) => x.id), order.slice(0, 5), `token ${k} top ids`);
      assert.equal(entry.id, order[0], "greedy picks the top token");
    }
  });
  // echo: the same ids as a prompt, every position scored against the same reference (the first unscored),
  // in the prefill that reads them: through the same KV cache, with its format's error (a prompt's ids are
  // any ids, not the likeliest: the alternatives' tolerance).
  const [echoed] = await collect(engine, {
    ...greedy("", 1, { logprobs: 5, echo: true }),
    input: { kind: "tokens", ids: all },
  });
  const scored = echoed.logprobs.slice(0, all.length);
  assert.deepEqual(scored.map((e) => e.id), all);
  assert.equal(scored[0].logprob, null);
  scored.slice(1).forEach((entry, t) => {
    const want = logSoftmaxRef(logits.subarray(t * vocab, (t + 1) * vocab));
    assert.ok(
      Math.abs(entry.logprob! - want[entry.id]) < topTol,
      `prompt ${t + 1}: ${entry.logprob} vs ${want[entry.id]}`,
    );
    const order = Array.from(want.keys()).sort((a, b) => want[b] - want[a]);
    entry.top.forEach((x) =>
      assert.ok(Math.abs(x.logprob - want[x.id]) < topTol, `prompt ${t + 1} top ${x.id}`)
    );
    if (kvCacheDtype === "f32") assert.deepEqual(entry.top.map((x) => x.id), order.slice(0, 5));
  });
  // prompt_logprobs beside echo: one scoring serves both, each cut to its own alternatives; the prompt event
  // comes before any delta and carries each token's rank.
  const events: string[] = [];
  let promptEvent: TokenLogprob[] = [];
  const [both] = await collect(engine, {
    ...greedy("", 1, { logprobs: 5, echo: true }),
    promptLogprobs: 2,
    input: { kind: "tokens", ids: all },
  }, {
    onEvent: (ev) => {
      events.push(ev.type);
      if (ev.type === "prompt") promptEvent = ev.logprobs ?? [];
    },
  });
  assert.deepEqual(events.slice(0, 3), ["start", "prompt", "delta"]);
  assert.deepEqual(both.logprobs.slice(0, all.length), scored, "echo logprobs as without prompt_logprobs");
  assert.deepEqual(promptEvent.map((e) => e.id), all);
  assert.equal(promptEvent[0].logprob, null);
  promptEvent.slice(1).forEach((entry, t) => {
    assert.equal(entry.logprob, scored[t + 1].logprob);
    assert.deepEqual(entry.top, scored[t + 1].top.slice(0, 2));
    const want = logSoftmaxRef(logits.subarray(t * vocab, (t + 1) * vocab));
    // ids at least as likely, give or take the tolerance between the two forwards
    const w = want[entry.id];
    const [lo, hi] = [
      want.filter((v) => v > w + topTol).length + 1,
      want.filter((v) => v >= w - topTol).length,
    ];
    assert.ok(
      entry.rank! >= lo && entry.rank! <= hi,
      `prompt ${t + 1}: rank ${entry.rank} not in [${lo}, ${hi}]`,
    );
  });
  // Echoes sent together share prefill steps (their rows in the same score passes), each scored as it is
  // alone: its own length, its own alternatives.
  const together = await Promise.all([5, 1, 3].map((top, k) =>
    collect(engine, {
      ...greedy("", 1, { logprobs: top, echo: true }),
      maxTokens: 0,
      input: { kind: "tokens", ids: all.slice(0, all.length - 2 * k) },
    })
  ));
  together.forEach(([r], k) => {
    const len = all.length - 2 * k;
    const top = [5, 1, 3][k];
    assert.equal(r.logprobs.length, len, `echo ${k}: every prompt id, nothing generated`);
    r.logprobs.forEach((entry, t) => {
      assert.equal(entry.id, all[t]);
      assert.deepEqual(entry.top.map((x) => x.id), scored[t].top.slice(0, top).map((x) => x.id));
      if (t > 0) assert.ok(Math.abs(entry.logprob! - scored[t].logprob!) < 1e-5, `echo ${k}, position ${t}`);
    });
  });
}

Deno.test("a scored prompt is read once, by the prefill that serves it, in any pieces, beside decoding streams", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const text = "Once upon a time there was a little girl named Lily. She loved to play outside in the sun " +
    "with her dog. One day, Lily and her dog went to the park. They saw a big tree with red apples on it. " +
    "Lily wanted to pick an apple, but the tree was too tall.";
  // Whole prompts in one forward (two passes of the LM head over its rows), or 16-row pieces; batch-invariant
  // kernels, so the rows' bits do not depend on the piece they fall in.
  const big = await engineFor(gpu, model, { kvCacheDtype: "f32", batchInvariant: true, maxNumSeqs: 4 });
  const small = await engineFor(gpu, model, {
    kvCacheDtype: "f32",
    batchInvariant: true,
    maxNumSeqs: 4,
    maxNumBatchedTokens: 16,
  });
  const ids = big.model.tokenizer.encode(text, { addSpecialTokens: true });
  assert.ok(ids.length > 64 && ids.length <= 128, `${ids.length} ids: two passes of 64 rows`);
  const vocab = big.model.config.vocabSize;
  const logits = await forwardLogits(gpu, big.model.config, big.model.weights, ids);
  const harness = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
    ...greedy("", 1, { logprobs: 3, echo: true }),
    input: { kind: "tokens", ids },
    ...extra,
  });

  // lm-evaluation-harness's loglikelihood request: the prompt is read once, its last row samples the id.
  const before = big.engine.counters();
  const deltas: number[] = [];
  const [one] = await collect(big.engine, harness(), {
    onEvent: (ev) => ev.type === "delta" && deltas.push(ev.tokens ?? 0),
  });
  const after = big.engine.counters();
  assert.deepEqual(deltas, [0, 1], "the echo is its own delta, before the generated id's");
  assert.equal(after.promptTokensTotal - before.promptTokensTotal, ids.length, "each prompt id read once");
  assert.equal(after.generatedTokensTotal - before.generatedTokensTotal, 1);
  assert.equal(after.running + after.waiting, 0);
  const scored = one.logprobs.slice(0, ids.length);
  assert.deepEqual(scored.map((e) => e.id), ids);
  assert.equal(scored[0].logprob, null);
  scored.slice(1).forEach((entry, t) => {
    const want = logSoftmaxRef(logits.subarray(t * vocab, (t + 1) * vocab));
    assert.ok(Math.abs(entry.logprob! - want[entry.id]) < 1e-4, `position ${t + 1}: ${entry.logprob}`);
    const order = Array.from(want.keys()).sort((a, b) => want[b] - want[a]);
    assert.deepEqual(entry.top.map((x) => x.id), order.slice(0, 3), `position ${t + 1} alternatives`);
  });
  const last = logSoftmaxRef(logits.subarray((ids.length - 1) * vocab, ids.length * vocab));
  assert.equal(one.ids.at(-1), last.indexOf(Math.max(...last)), "the id sampled after the prompt: greedy");

  // The same bits from 16-row pieces, and while two streams decode beside it (their ids as alone).
  const streams = (e: typeof small.engine) =>
    Promise.all(["Tom had a toy car.", "Lily and Ben"].map((p) => collect(e, greedy(p, 24))));
  const streamsAlone = await streams(small.engine);
  const [pieces] = await collect(small.engine, harness());
  assert.deepEqual(pieces.logprobs, one.logprobs, "16-row pieces: the same records");
  const [beside, decoded] = await Promise.all([
    new Promise((r) => setTimeout(r, 50)).then(() => collect(small.engine, harness())),
    streams(small.engine),
  ]);
  assert.deepEqual(beside[0].logprobs, one.logprobs, "beside decoding streams: the same records");
  decoded.forEach(([d], i) => assert.deepEqual(d.ids, streamsAlone[i][0].ids, `stream ${i}`));

  // n = 2: both choices echo the one scoring; max_tokens 0: the prompt alone, nothing sampled.
  const two = await collect(big.engine, harness({ n: 2 }));
  two.forEach((c) => assert.deepEqual(c.logprobs, one.logprobs));
  const mark = big.engine.counters();
  const alone = await collect(big.engine, harness({ n: 2, maxTokens: 0 }));
  const end = big.engine.counters();
  alone.forEach((c) => {
    assert.deepEqual(c.logprobs, scored);
    assert.equal(c.finish, "length");
  });
  assert.equal(end.generatedTokensTotal, mark.generatedTokensTotal, "max_tokens 0 samples nothing");
  assert.equal(end.promptTokensTotal - mark.promptTokensTotal, ids.length);
  assert.equal(end.running + end.waiting + end.kvBlocksUsed, 0, "its sequence ended and freed its blocks");

  // A prompt of one id has nothing to score: its entry is null, and the id after it is sampled as ever.
  const [single] = await collect(big.engine, harness({ input: { kind: "tokens", ids: [ids[0]] } }));
  assert.deepEqual(single.logprobs.map((e) => e.logprob === null), [true, false]);
  // A scored prompt takes no cached prefix (its logprobs come from its rows), though the cache holds it.
  const hits = big.engine.counters().prefixCacheHitsTotal;
  await collect(big.engine, { ...greedy("", 1), input: { kind: "tokens", ids } });
  assert.ok(big.engine.counters().prefixCacheHitsTotal > hits, "an unscored request reads the cached prefix");
  const hits2 = big.engine.counters().prefixCacheHitsTotal;
  const [again] = await collect(big.engine, harness());
  assert.equal(big.engine.counters().prefixCacheHitsTotal, hits2, "the scored one does not");
  assert.deepEqual(again.logprobs, one.logprobs);
  gpu.device.destroy();
});
