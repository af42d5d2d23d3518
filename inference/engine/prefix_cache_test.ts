/**
 * Prefix caching in the engine: a prompt that starts with the ids of an earlier one (a shared start, the
 * same prompt again, a conversation's next turn with the earlier answer in it) takes that prompt's full
 * blocks from the cache, reports them as cached tokens, and, with the batch-invariant kernels, gets the
 * bits it gets with caching off.
 */
import assert from "node:assert/strict";
import { collect, engineFor, greedy } from "../../tests/_engine.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { type EngineHandle, type GenerateRequest, loadModel } from "./mod.ts";

const START = "Once upon a time there was a little girl named Lily. She loved to play outside in the sun. " +
  "One day she saw a big";

/** The one choice of a request, run to the end. */
const run = async (engine: EngineHandle, request: GenerateRequest) => (await collect(engine, request))[0];

Deno.test("a prompt with an earlier prompt's start reuses its blocks and gets the same bits", async (t) => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const batch = { maxNumSeqs: 4, maxNumBatchedTokens: 64, batchInvariant: true };
  const { engine } = await engineFor(gpu, model, batch);
  const { engine: plain } = await engineFor(gpu, model, { ...batch, prefixCaching: false });
  const ids = async (text: string) => (await engine.tokenize({ kind: "text", prompt: text })).ids;
  const start = await ids(START);
  const blocks = (n: number) => Math.floor(n / 16) * 16;

  const check = async (request: GenerateRequest, cached: number) => {
    const got = await run(engine, request);
    const want = await run(plain, request);
    assert.equal(got.cached, cached, "cached tokens");
    assert.equal(want.cached, 0, "nothing cached with caching off");
    assert.deepEqual(got.ids, want.ids);
    assert.deepEqual(got.logprobs, want.logprobs, "bit for bit");
    return got;
  };

  await t.step("a first prompt finds nothing; the same prompt again all but its last block", async () => {
    await check(greedy(START, 8), 0);
    assert.equal(engine.counters().kvBlocksUsed, 0);
    assert.ok(engine.counters().kvBlocksCached >= start.length / 16 - 1);
    await check(greedy(START, 8), blocks(start.length - 1));
  });

  await t.step("a prompt that shares only the start takes the blocks the start fills", async () => {
    const other = START + " red ball in the garden and ran to get it.";
    const otherIds = await ids(other);
    let common = 0;
    while (otherIds[common] === start[common]) common++;
    await check(greedy(other, 8), blocks(common));
  });

  await t.step("batch-invariant: a conversation's next turn reuses its earlier prompt's blocks", async () => {
    // Decode rows run other kernels than prompt rows: the blocks the answer filled are not cached.
    const first = await check(greedy(START, 40, { ignoreEos: true }), blocks(start.length - 1));
    const turn = [...start, ...first.ids, ...(await ids(" Then she went home."))];
    await check({ ...greedy("", 8), input: { kind: "tokens", ids: turn } }, blocks(start.length));
  });

  await t.step(
    "a burst of the same prompt and of prompts sharing its start, run together",
    async () => {
      const other = START + " red ball in the garden and ran to get it.";
      const burst = [START, START, other, START, other].map((p) => greedy(p, 6));
      const got = await Promise.all(burst.map((r) => run(engine, r)));
      const want = await Promise.all(burst.map((r) => run(plain, r)));
      got.forEach((g, i) => {
        assert.deepEqual(g.ids, want[i].ids, `request ${i}`);
        assert.deepEqual(g.logprobs, want[i].logprobs, `request ${i}, bit for bit`);
      });
      assert.equal(engine.counters().kvBlocksUsed, 0, "every block let go");
    },
  );

  const c = engine.counters();
  assert.ok(c.prefixCacheHitsTotal > 0 && c.prefixCacheHitsTotal < c.prefixCacheQueriesTotal);
  assert.equal(plain.counters().prefixCacheHitsTotal, 0);
  assert.equal(plain.counters().kvBlocksCached, 0);
  gpu.device.destroy();
});

Deno.test("by default an answer's blocks are cached too; a salt or a swapped-in model keeps prefixes apart", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !model) return;
  const batch = { maxNumSeqs: 4, maxNumBatchedTokens: 64 };
  const { engine } = await engineFor(gpu, model, batch);
  const { engine: plain } = await engineFor(gpu, model, { ...batch, prefixCaching: false });
  const start = (await engine.tokenize({ kind: "text", prompt: START })).ids;
  const first = await run(engine, greedy(START, 40, { ignoreEos: true }));
  const turn = [...start, ...first.ids, ...(await engine.tokenize({ kind: "text", prompt: " Then" })).ids];
  const request = { ...greedy("", 12), input: { kind: "tokens" as const, ids: turn } };
  const got = await run(engine, request);
  // The answer's last id was sampled but never fed back: the blocks before its position are full.
  assert.equal(got.cached, Math.floor((start.length + first.ids.length - 1) / 16) * 16);
  // Decode rows wrote those blocks, prompt rows write them with caching off: the same ids outside near ties.
  const want = await run(plain, request);
  let compared = 0;
  for (; compared < want.ids.length; compared++) {
    const [a, b] = want.logprobs[compared].top;
    if (a.logprob - b.logprob < 1e-3) break;
    assert.equal(got.ids[compared], want.ids[compared], `id ${compared}`);
  }
  assert.ok(compared >= 4, `only ${compared} ids compared`);

  // A request's cache_salt keeps its blocks apart from requests without it, or with another salt.
  const salted = (salt: string) => ({ ...request, cacheSalt: salt });
  assert.equal((await run(engine, salted("a"))).cached, 0, "an unsalted run's blocks are not shared");
  const all = Math.floor((turn.length - 1) / 16) * 16; // its own prompt's blocks, all but the last id
  assert.equal((await run(engine, salted("a"))).cached, all, "the same salt shares them");
  assert.equal((await run(engine, salted("b"))).cached, 0, "another salt does not");

  // The same folder loaded again shares the cache (same layout) but not its prefixes.
  await engine.setModel(await loadModel(gpu, model, { weightType: "f32" }));
  assert.equal((await run(engine, request)).cached, 0, "the new model computes its own blocks");
  assert.ok((await run(engine, request)).cached > 0, "and then reuses them");
  gpu.device.destroy();
});
