/**
 * The engine as a server needs it: a client that goes away frees its slot and KV blocks at once (queued,
 * prefilling or decoding); a full queue is an EngineBusyError (429) and a request that cannot fit the
 * context an EngineInputError (400), both before queuing; a queued streaming request gets its headers
 * before its first token; logit_bias and penalties reach the sampler; a choice's text keeps the special
 * tokens asked for (keepSpecialTokens) and no others; a model swapped in while serving
 * takes new requests while the old one finishes its own and is then freed.
 */
import assert from "node:assert/strict";
import { collect, engineFor, type Finished, greedy } from "../../tests/_engine.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { createApp } from "../../server/app.ts";
import { EngineBusyError, type EngineHandle, EngineInputError, loadModel, type TokenEvent } from "./mod.ts";

const LONG = "Once upon a time there was a little girl named Lily.";

/** Resolves once `engine` reports `want` (polled), or throws after `ms`. */
async function until(
  engine: EngineHandle,
  want: (c: ReturnType<EngineHandle["counters"]>) => boolean,
  ms = 60_000,
) {
  const deadline = Date.now() + ms;
  while (!want(engine.counters())) {
    if (Date.now() > deadline) {
      throw new Error(`counters never matched: ${JSON.stringify(engine.counters())}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("--scheduling-policy priority admits waiting requests lowest value first, then by arrival", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 1, schedulingPolicy: "priority" });
  try {
    // One slot: a long request holds it while the others queue; their first ids then come in admission order.
    const holder = new AbortController();
    let held = 0;
    const running = collect(engine, greedy(LONG, 200, { ignoreEos: true }), {
      signal: holder.signal,
      onEvent: (ev) => ev.type === "delta" && held++,
    });
    await until(engine, () => held >= 1);
    const order: string[] = [];
    const queued = ([["b", 5], ["c", -1], ["d", 0], ["e", -1]] as const).map(([name, priority]) =>
      collect(engine, greedy(LONG, 2, { priority }), {
        onEvent: (ev) => ev.type === "delta" && !order.includes(name) && order.push(name),
      })
    );
    await until(engine, (c) => c.waiting === 4);
    holder.abort();
    await Promise.all([running, ...queued]);
    assert.deepEqual(order, ["c", "e", "d", "b"]);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("--scheduling-policy priority: a full KV cache preempts the higher value, even admitted first", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  // 10 blocks of 16 positions: two sequences of ~110 positions need 14, so one is preempted on the way.
  const bytes = 10 * 16 * 2 * 5 * 32 * 2; // blocks · positions · (K, V) · layers · kvDim · f16
  const { engine } = await engineFor(gpu, model, {
    maxNumSeqs: 2,
    kvCacheMemory: { bytes },
    schedulingPolicy: "priority",
  });
  try {
    assert.equal(engine.counters().kvBlocksTotal, 10);
    const ended: string[] = [];
    const run = (name: string, priority: number, onEvent?: (ev: TokenEvent) => void) =>
      collect(engine, greedy(LONG, 100, { ignoreEos: true, priority }), {
        onEvent: (ev) => {
          if (ev.type === "end") ended.push(name);
          onEvent?.(ev);
        },
      });
    let started!: () => void;
    const aDecodes = new Promise<void>((r) => (started = r));
    const a = run("a", 5, (ev) => ev.type === "delta" && started());
    await aDecodes;
    const b = run("b", 0);
    await Promise.all([a, b]);
    assert.ok(engine.counters().preemptionsTotal > 0, "the cache ran out");
    // The most recently admitted (b) would go first by arrival alone; by priority a does, and b ends first.
    assert.deepEqual(ended, ["b", "a"]);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("first come first served (the default) refuses a nonzero priority, naming it", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 1 });
  try {
    await assert.rejects(
      collect(engine, greedy(LONG, 2, { priority: 1 })),
      (e: unknown) => e instanceof EngineInputError && e.param === "priority",
    );
    assert.equal((await collect(engine, greedy(LONG, 2, { priority: 0 })))[0].ids.length, 2);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("cancelling frees the slot and blocks; the queue bound and context checks come first", async (t) => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 1, maxQueued: 1, maxModelLen: 128 });
  await t.step("a decoding request that goes away frees its slot and blocks within a step", async () => {
    const ac = new AbortController();
    let tokens = 0;
    const run = collect(engine, greedy(LONG, 100), {
      signal: ac.signal,
      onEvent: (ev) => ev.type === "delta" && tokens++,
    });
    await until(engine, () => tokens >= 2);
    assert.equal(engine.counters().running, 1);
    assert.ok(engine.counters().kvBlocksUsed > 0);
    ac.abort();
    await run;
    const c = engine.counters();
    assert.equal(c.running, 0, "slot freed");
    assert.equal(c.kvBlocksUsed, 0, "blocks freed");
  });
  await t.step("a queued request that goes away leaves the queue; a full queue answers busy", async () => {
    const first = new AbortController();
    const running = collect(engine, greedy(LONG, 100), { signal: first.signal });
    await until(engine, (c) => c.running === 1);
    const queued = new AbortController();
    const waiting = collect(engine, greedy(LONG, 5), { signal: queued.signal });
    await until(engine, (c) => c.waiting === 1);
    await assert.rejects(collect(engine, greedy(LONG, 5)), EngineBusyError);
    queued.abort();
    await waiting;
    assert.equal(engine.counters().waiting, 0);
    first.abort();
    await running;
    assert.deepEqual([engine.counters().running, engine.counters().kvBlocksUsed], [0, 0]);
  });
  await t.step("a prompt or max_tokens beyond the context is refused before queuing", async () => {
    const tooLong = greedy("a b c d e f g h ".repeat(40), 1);
    await assert.rejects(
      collect(engine, tooLong),
      (e: unknown) =>
        e instanceof EngineInputError && e.code === "context_length_exceeded" && e.param === "prompt",
    );
    const tooMany = greedy(LONG, 200, { maxTokensStrict: true });
    await assert.rejects(
      collect(engine, tooMany),
      (e: unknown) => e instanceof EngineInputError && e.param === "max_tokens",
    );
    // A default max_tokens is capped instead: the answer ends with "length" at the context.
    const capped = await collect(engine, greedy(LONG, 200));
    assert.equal(capped[0].finish, "length");
    await assert.rejects(
      collect(engine, greedy(LONG, 4, { n: 2 })),
      (e: unknown) => e instanceof EngineInputError && e.param === "n",
    );
  });
  gpu.device.destroy();
});

Deno.test("a full KV cache preempts and recomputes; every request still completes", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const prompts = ["Once upon a time", "Tom had a toy car.", "Lily and Ben went", "The sun was hot"];
  const { engine: roomy } = await engineFor(gpu, model, { maxNumSeqs: 4 });
  const want: Finished[] = [];
  for (const p of prompts) want.push((await collect(roomy, greedy(p, 40)))[0]);
  // 12 blocks of 16 positions: four sequences of ~45 positions need 12 plus the admission watermark.
  const bytes = 12 * 16 * 2 * 5 * 32 * 2; // blocks · positions · (K, V) · layers · kvDim · f16
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 4, kvCacheMemory: { bytes } });
  assert.equal(engine.counters().kvBlocksTotal, 12);
  let most = 0;
  const got = await Promise.all(
    prompts.map((p) =>
      collect(engine, greedy(p, 40), { onEvent: () => (most = Math.max(most, engine.counters().running)) })
    ),
  );
  got.forEach(([g], i) => {
    assert.equal(g.finish, "length");
    assert.equal(g.ids.length, 40);
    // A recomputed prefix runs through the GEMM where it was decoded by the GEMV: equal up to near ties.
    for (let k = 0; k < 40; k++) {
      const [a, b] = want[i].logprobs[k].top;
      if (a.logprob - b.logprob < 1e-3) break;
      assert.equal(g.ids[k], want[i].ids[k], `request ${i} id ${k}`);
    }
  });
  assert.ok(most >= 2, "requests ran together");
  assert.ok(engine.counters().preemptionsTotal > 0, "the cache ran out and a sequence was recomputed");
  assert.deepEqual([engine.counters().running, engine.counters().kvBlocksUsed], [0, 0]);
  gpu.device.destroy();
});

Deno.test("a scored prompt and an embedding under a full KV cache: read again if preempted, the same answers", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const text = "Once upon a time there was a little girl named Lily. She loved to play outside in the sun " +
    "with her dog. One day they went to the park and saw a big tree.";
  const options = { maxNumSeqs: 5, maxNumBatchedTokens: 16, batchInvariant: true } as const;
  const { engine: roomy, model: m } = await engineFor(gpu, model, options);
  const ids = m.tokenizer.encode(text, { addSpecialTokens: true });
  assert.ok(ids.length > 48 && ids.length <= 64, `${ids.length} ids: 4 blocks`);
  const echo = { ...greedy("", 0, { logprobs: 2, echo: true }), input: { kind: "tokens" as const, ids } };
  const [scored] = await collect(roomy, echo);
  const vector = (await roomy.embed({ kind: "tokens", ids })).embedding;
  // 12 blocks: three streams of ~45 positions (3 blocks each at the end) and two prompts of 4 blocks each
  // admitted after them: the streams' growth preempts the latest admitted mid-prefill (on lavapipe, every
  // run: the embedding, 16 of its ids read), which is then read again from its start. Whether it is
  // preempted depends on timing, so the test asserts the answers, not the preemption.
  const bytes = 12 * 16 * 2 * 5 * 32 * 2; // blocks · positions · (K, V) · layers · kvDim · f16
  const { engine } = await engineFor(gpu, model, { ...options, kvCacheMemory: { bytes } });
  let started!: () => void;
  const first = new Promise<void>((r) => (started = r));
  const streams = ["Tom had a toy car.", "Lily and Ben went", "The sun was hot"].map((p) =>
    collect(engine, greedy(p, 40), { onEvent: (ev) => ev.type === "delta" && started() })
  );
  await first;
  const [[again], { embedding: got }] = await Promise.all([
    collect(engine, echo),
    engine.embed({ kind: "tokens", ids }),
    ...streams,
  ]);
  assert.deepEqual(again.logprobs, scored.logprobs, "the scored prompt's records");
  assert.deepEqual(got, vector, "the embedding");
  const c = engine.counters();
  assert.deepEqual([c.running, c.waiting, c.kvBlocksUsed], [0, 0, 0]);
  gpu.device.destroy();
});

Deno.test("a queued streaming request has its headers before its first token", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 1 });
  const app = createApp({ engine, config: {} });
  const post = (body: unknown, signal?: AbortSignal) =>
    app.request("/v1/completions", {
      method: "POST",
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
  const ac = new AbortController();
  const first = await post({ prompt: LONG, max_tokens: 300, stream: true }, ac.signal);
  await until(engine, (c) => c.running === 1);
  const second = await post({ prompt: LONG, max_tokens: 3, stream: true });
  assert.equal(second.status, 200);
  assert.match(second.headers.get("content-type") ?? "", /text\/event-stream/);
  assert.equal(engine.counters().waiting, 1, "the response is out while the request still waits for a slot");
  ac.abort();
  await first.body?.cancel();
  const text = await second.text();
  assert.ok(text.trimEnd().endsWith("data: [DONE]"), text);
  assert.equal(engine.counters().running, 0);
  gpu.device.destroy();
});

Deno.test("logit_bias and penalties reach the sampler", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine, model: m } = await engineFor(gpu, model, {});
  const x = m.tokenizer.encode(" dog", { addSpecialTokens: false }).at(-1)!;
  const [biased] = await collect(engine, greedy(LONG, 6, { logitBias: [[x, 100]] }));
  assert.deepEqual(biased.ids, Array(6).fill(x));
  // A banned first pick changes the first id.
  const plain = (await collect(engine, greedy(LONG, 24)))[0].ids;
  const [banned] = await collect(engine, greedy(LONG, 4, { logitBias: [[plain[0], -100]] }));
  assert.notEqual(banned.ids[0], plain[0]);
  // Presence and frequency penalties make greedy decode repeat itself less.
  const repeats = (ids: number[]) => ids.length - new Set(ids).size;
  const [fresh] = await collect(
    engine,
    greedy(LONG, 24, { penalties: { presence: 2, frequency: 2, repetition: 1 } }),
  );
  assert.ok(repeats(fresh.ids) < repeats(plain), `${repeats(fresh.ids)} repeats vs ${repeats(plain)}`);
  // repetition_penalty < 1 rewards seen tokens: the output repeats prompt tokens more.
  const prompt = new Set(m.tokenizer.encode(LONG, { addSpecialTokens: true }));
  const seen = (ids: number[]) => ids.filter((id) => prompt.has(id)).length;
  const [rep] = await collect(
    engine,
    greedy(LONG, 20, { penalties: { presence: 0, frequency: 0, repetition: 0.5 } }),
  );
  assert.ok(seen(rep.ids) >= seen(plain), `${seen(rep.ids)} vs ${seen(plain)}`);
  gpu.device.destroy();
});

Deno.test("keepSpecialTokens keeps those special tokens' text in a choice's text; the others stay out", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const { engine, model: m } = await engineFor(gpu, model, {});
  // stories260K's special tokens are <s> and </s> (EOS); a bias makes greedy decoding write <s>.
  const bos = m.tokenizer.tokenToId("<s>")!;
  assert.ok(m.tokenizer.specialTokenIds.has(bos));
  const forced = { logitBias: [[bos, 100]] as [number, number][] };
  const [skipped] = await collect(engine, greedy(LONG, 3, forced));
  assert.deepEqual([skipped.ids, skipped.text], [[bos, bos, bos], ""]);
  const [kept] = await collect(engine, greedy(LONG, 3, { ...forced, keepSpecialTokens: ["<s>"] }));
  assert.equal(kept.text, "<s><s><s>");
  const [other] = await collect(engine, greedy(LONG, 3, { ...forced, keepSpecialTokens: ["</s>"] }));
  assert.equal(other.text, "");
  gpu.device.destroy();
});

Deno.test("a model swapped in while serving takes new requests; the old one finishes and is freed", async () => {
  const model = sharedPath("models/stories260K");
  const bf16 = sharedPath("models/stories260K-bf16");
  const gpu = await testGpu();
  if (!gpu || !model || !bf16) return;
  const logs: string[] = [];
  // Plans are bound at install here as on a GPU, so the swap below binds while the old model streams.
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 2, prebuild: true }, logs);
  const oldAlone = (await collect(engine, greedy(LONG, 200)))[0];
  const weightsBefore = engine.counters().gpuBytes.weights;
  let tokens = 0;
  const old = collect(engine, greedy(LONG, 200), { onEvent: (ev) => ev.type === "delta" && tokens++ });
  await until(engine, () => tokens >= 1);
  const next = await loadModel(gpu, bf16, { weightType: "f16" });
  const atSwap = tokens;
  await engine.setModel(next);
  assert.ok(logs.filter((l) => l.includes("step plans")).length === 2, logs.join("\n"));
  assert.ok(tokens > atSwap, "the old model kept streaming while the new one bound its step plans");
  const fresh = await collect(engine, greedy(LONG, 10));
  assert.deepEqual((await old)[0].ids, oldAlone.ids, "the admitted request finished on the old model");
  await until(engine, (c) => c.gpuBytes.weights < weightsBefore);
  assert.ok(logs.some((l) => l.includes("freed model")), logs.join("\n"));
  assert.equal(fresh[0].ids.length, 10);
  assert.deepEqual(
    (await collect(engine, greedy(LONG, 10)))[0].ids,
    fresh[0].ids,
    "new requests use the new model",
  );
  gpu.device.destroy();
});
