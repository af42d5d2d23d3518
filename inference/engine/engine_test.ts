import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { createEngine, type LoadedModel } from "./engine.ts";
import { loadModel } from "./load_model.ts";
import type { GenerateRequest, TokenEvent } from "./types.ts";

const request: GenerateRequest = {
  input: { kind: "text", prompt: "Once upon a time" },
  // Long enough to outlast the swap below (setModel resolves a few event-loop turns later).
  maxTokens: 200,
  stop: [],
  sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
};

async function rest(it: AsyncIterator<TokenEvent>): Promise<string> {
  let text = "";
  for (let r = await it.next(); !r.done; r = await it.next()) {
    if (r.value.type === "delta") text += r.value.text;
  }
  return text;
}

/** Waits until `cond` holds (the scheduler frees a drained model on its next turn), at most 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

Deno.test("setModel() swaps atomically: the request in flight ends on its model, which is freed after it", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = dir && await testGpu();
  if (!dir || !gpu) return;
  try {
    const logs: string[] = [];
    const freed = () => logs.filter((l) => l.startsWith("[engine] freed model")).map((l) => l.split('"')[1]);
    const load = (name: string): Promise<LoadedModel> => loadModel(gpu, dir, { modelId: name });
    const engine = createEngine("s", { log: (m) => logs.push(m) });
    const a = await load("a");
    await engine.setModel(a);
    const want = await rest(engine.generate(request)[Symbol.asyncIterator]());

    const inFlight = engine.generate(request)[Symbol.asyncIterator]();
    assert.equal((await inFlight.next()).value?.type, "start"); // the request has started on model a
    assert.equal(engine.inFlight(), 1);
    await engine.setModel(await load("b"));
    assert.deepEqual(freed(), [], "a is still in use");
    const lease = engine.lease()!;
    assert.notEqual(lease.model.weights, a.weights, "new requests get model b");
    assert.equal(await rest(inFlight), want, "the request in flight finished on model a");
    await until(() => freed().includes("a"), "a is freed once its last request ended");
    assert.equal(engine.inFlight(), 0);
    assert.equal(await rest(engine.generate(request)[Symbol.asyncIterator]()), want, "b answers the same");
    await engine.setModel(await load("c"));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(freed(), ["a"], "b is leased (a job evaluating it): not freed");
    lease.release();
    await until(() => freed().includes("b"), "b is freed once its lease is released");
    assert.deepEqual(freed(), ["a", "b"]);
  } finally {
    gpu.device.destroy();
  }
});
