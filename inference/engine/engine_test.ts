import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { createEngine, type LoadedModel } from "./engine.ts";
import { loadModel } from "./load_model.ts";
import type { GenerateRequest, TokenEvent } from "./types.ts";

const request: GenerateRequest = {
  input: { kind: "text", prompt: "Once upon a time" },
  maxTokens: 24,
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

Deno.test("setModel() swaps atomically: the request in flight ends on its model, which is freed after it", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = dir && await testGpu();
  if (!dir || !gpu) return;
  try {
    const freed: string[] = [];
    const load = async (name: string): Promise<LoadedModel> => {
      const m = await loadModel(gpu, dir, { modelId: "s" });
      const destroy = m.destroy!;
      return { ...m, destroy: () => (freed.push(name), destroy()) };
    };
    const engine = createEngine("s", { log: () => {} });
    const a = await load("a");
    engine.setModel(a);
    const want = await rest(engine.generate(request)[Symbol.asyncIterator]());

    const inFlight = engine.generate(request)[Symbol.asyncIterator]();
    assert.equal((await inFlight.next()).value?.type, "start"); // the request has started on model a
    assert.equal(engine.inFlight(), 1);
    engine.setModel(await load("b"));
    assert.deepEqual(freed, [], "a is still in use");
    const lease = engine.lease()!;
    assert.notEqual(lease.model.weights, a.weights, "new requests get model b");
    lease.release();
    assert.equal(await rest(inFlight), want, "the request in flight finished on model a");
    assert.deepEqual(freed, ["a"], "a is freed once its last request ended");
    assert.equal(engine.inFlight(), 0);
    assert.equal(await rest(engine.generate(request)[Symbol.asyncIterator]()), want, "b answers the same");
    engine.setModel(await load("c"));
    assert.deepEqual(freed, ["a", "b"], "an idle model is freed at once");
  } finally {
    gpu.device.destroy();
  }
});
