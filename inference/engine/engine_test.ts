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

Deno.test("a chat request's tools and template variables reach the model's chat template", async () => {
  const src = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !src) return;
  // stories260K with a chat template of our own (chat_template.jinja wins over tokenizer_config.json).
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
      await Deno.symlink(`${src}/${f}`, `${dir}/${f}`);
    }
    await Deno.writeTextFile(
      `${dir}/chat_template.jinja`,
      "{% if tools %}<tool_call>{% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}" +
        "{{ greeting }}{% for m in messages %}{{ m.content }}{% endfor %}",
    );
    const engine = createEngine("m", { log: () => {} });
    await engine.setModel(await loadModel(gpu, dir, { weightType: "f32" }));
    assert.equal(engine.status().toolCallFormat, "hermes");
    const messages = [{ role: "user", content: "Once upon a time" }];
    const ids = async (extra: object) => (await engine.tokenize({ kind: "chat", messages, ...extra })).ids;
    const words = async (text: string) =>
      (await engine.tokenize({ kind: "text", prompt: text }, { addSpecialTokens: false })).ids;
    assert.deepEqual(await ids({}), await words("Once upon a time"));
    assert.deepEqual(await ids({ templateVars: { greeting: "Hi " } }), await words("Hi Once upon a time"));
    const tools = [{ type: "function", function: { name: "look" } }];
    assert.deepEqual(await ids({ tools }), await words("<tool_call>look Once upon a time"));
  } finally {
    await Deno.remove(dir, { recursive: true });
    gpu.device.destroy();
  }
});
