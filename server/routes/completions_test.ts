/** startGeneration's limits and stop signal, through the app (the routes' main paths are in app_test.ts). */
import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

function setup(options: { stopSignal?: AbortSignal } = {}) {
  const engine = new FakeEngine();
  const app = createApp({
    engine,
    config: {},
    logError: () => {}, // the one 500 below is expected
    ...(options.stopSignal ? { stopSignal: options.stopSignal } : {}),
  });
  // deno-lint-ignore no-explicit-any
  const post = async (path: string, body: unknown): Promise<[number, any]> => {
    const res = await app.request(path, { method: "POST", body: JSON.stringify(body) });
    const text = await res.text();
    return [
      res.status,
      res.headers.get("content-type")?.startsWith("text/event-stream") ? text : JSON.parse(text),
    ];
  };
  return { engine, post };
}

Deno.test("max_tokens above the context length is a 400 naming the field; up to it is served", async () => {
  const { engine, post } = setup();
  for (const field of ["max_tokens", "max_completion_tokens"]) {
    const [status, body] = await post("/v1/completions", { prompt: "x", [field]: 65 });
    assert.equal(status, 400);
    assert.equal(body.error.param, field);
    assert.match(body.error.message, /65 tokens: the model's context length is 64/);
  }
  assert.equal((await post("/v1/completions", { prompt: "x", max_tokens: 64 }))[0], 200);
  assert.equal(engine.requests[0].maxTokens, 64);
});

Deno.test("the stop signal cuts in-flight streams with a server_shutting_down event and refuses new ones", async () => {
  const stop = new AbortController();
  const { engine, post } = setup({ stopSignal: stop.signal });
  engine.script = { deltas: ["a", "b", "c", "d", "e", "f"], delayMs: 20 };
  const pending = post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], stream: true });
  setTimeout(() => stop.abort(), 50);
  const [status, text] = await pending;
  assert.equal(status, 200);
  const events = text.split("\n\n").filter((e: string) => e.startsWith("data: ")).map((e: string) =>
    e.slice(6)
  );
  assert.ok(!events.includes("[DONE]"), "a cut stream must not look complete");
  const last = JSON.parse(events.at(-1)!);
  assert.deepEqual(last.error, {
    message: "Cannot finish the request: the server is shutting down",
    type: "server_error",
    param: null,
    code: "server_shutting_down",
  });
  assert.ok(events.length < 6, "cut before the end");
  assert.equal(engine.signals[0]?.aborted, true, "the engine's signal fired too");
  assert.equal(engine.finished, 1);
  const [late, body] = await post("/v1/completions", { prompt: "x" });
  assert.equal(late, 503);
  assert.equal(body.error.code, "server_shutting_down");
});

Deno.test("finished generations leave no listener on the long-lived stop signal", async () => {
  const stop = new AbortController();
  const live = new Set<unknown>();
  const add = stop.signal.addEventListener.bind(stop.signal);
  const remove = stop.signal.removeEventListener.bind(stop.signal);
  stop.signal.addEventListener = (
    type: string,
    fn: EventListenerOrEventListenerObject,
    options?: unknown,
  ) => {
    live.add(fn);
    add(type, fn, options as AddEventListenerOptions);
  };
  stop.signal.removeEventListener = (type: string, fn: EventListenerOrEventListenerObject) => {
    live.delete(fn);
    remove(type, fn);
  };
  const { engine, post } = setup({ stopSignal: stop.signal });
  assert.equal((await post("/v1/completions", { prompt: "x" }))[0], 200);
  assert.equal((await post("/v1/completions", { prompt: "x", stream: true }))[0], 200);
  engine.script = { deltas: [] };
  (engine as { generate: unknown }).generate = async function* () {
    yield* [];
    throw new Error("engine failed before its first event");
  };
  assert.equal((await post("/v1/completions", { prompt: "x" }))[0], 500);
  assert.equal(live.size, 0);
});

Deno.test("a list of prompts: n choices each, numbered p·n + i, usage summed, streamed and not", async () => {
  const { engine, post } = setup();
  engine.script = { deltas: ["Hel", "lo"] };
  const [status, body] = await post("/v1/completions", { prompt: ["ab", "cde", "f"], n: 2, max_tokens: 5 });
  assert.equal(status, 200);
  assert.deepEqual(body.choices.map((c: { index: number }) => c.index), [0, 1, 2, 3, 4, 5]);
  assert.ok(body.choices.every((c: { text: string }) => c.text === "Hello"));
  // The fake counts a BOS plus one id per character: 3 + 4 + 2 prompt tokens, 2 per choice generated.
  assert.deepEqual(body.usage, {
    prompt_tokens: 9,
    completion_tokens: 12,
    total_tokens: 21,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  assert.deepEqual(
    engine.requests.slice(-3).map((r) => r.input),
    ["ab", "cde", "f"].map((prompt) => ({ kind: "text", prompt })),
  );
  const [, sse] = await post("/v1/completions", {
    prompt: [[5, 6], [7]],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = (sse as string).split("\n").filter((l) => l.startsWith("data: {")).map((l) =>
    JSON.parse(l.slice(6))
  );
  const texts = new Map<number, string>();
  for (const ch of chunks) {
    for (const c of ch.choices) texts.set(c.index, (texts.get(c.index) ?? "") + c.text);
  }
  assert.deepEqual([...texts.entries()].sort(), [[0, "Hello"], [1, "Hello"]]);
  const finishes = chunks.flatMap((ch) =>
    ch.choices.filter((c: { finish_reason: unknown }) => c.finish_reason)
  );
  assert.equal(finishes.length, 2);
  assert.equal(chunks.at(-1).usage.prompt_tokens, 3, "token ids pass as they are: 2 + 1");
  assert.ok((sse as string).trimEnd().endsWith("data: [DONE]"));
});

Deno.test("a list of prompts with one the server refuses: the request's 400, and the others cancelled", async () => {
  const { engine, post } = setup();
  engine.maxPromptTokens = 5;
  engine.script = { deltas: ["a", "b", "c"], delayMs: 50 };
  const [status, body] = await post("/v1/completions", { prompt: ["ok", "much too long"] });
  assert.equal(status, 400);
  assert.equal(body.error.code, "context_length_exceeded");
  // The first prompt's generation started and was ended at once.
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(engine.running, 0);
});

Deno.test("stop_reason (vLLM): the stop string or id that ended a choice, on the choice or its finish chunk", async () => {
  const { engine, post } = setup();
  engine.script = { deltas: ["a", "b"], stopReason: "\n\n" };
  const [, whole] = await post("/v1/completions", { prompt: "x", stop: ["\n\n"] });
  assert.equal(whole.choices[0].stop_reason, "\n\n");
  const [, chat] = await post("/v1/chat/completions", { messages: [{ role: "user", content: "x" }] });
  assert.equal(chat.choices[0].stop_reason, "\n\n");
  engine.script = { deltas: ["a"], stopReason: 7 };
  const [, sse] = await post("/v1/completions", { prompt: "x", stream: true });
  const chunks = (sse as string).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) =>
    JSON.parse(e.slice(6))
  );
  assert.deepEqual(chunks.flatMap((c) => c.choices.map((ch: { stop_reason?: unknown }) => ch.stop_reason)), [
    undefined,
    7,
  ]);
  engine.script = { deltas: ["a"] };
  const [, none] = await post("/v1/completions", { prompt: "x" });
  assert.equal("stop_reason" in none.choices[0], false, "EOS or length: none, as vLLM's null");
});
