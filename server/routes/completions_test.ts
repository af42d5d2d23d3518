/** startGeneration's limits and stop signal, through the app (the routes' main paths are in app_test.ts). */
import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

function setup(options: { maxPromptTokens?: number; stopSignal?: AbortSignal } = {}) {
  const engine = new FakeEngine();
  const app = createApp({
    engine,
    config: { limits: { maxPromptTokens: options.maxPromptTokens ?? null } },
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

Deno.test("--max-prompt-tokens: a longer prompt gets 400 context_length_exceeded, counted as the engine counts", async () => {
  const { engine, post } = setup({ maxPromptTokens: 10 });
  // the fake counts a BOS plus one id per character for text
  assert.equal((await post("/v1/completions", { prompt: "x".repeat(9) }))[0], 200);
  const [status, body] = await post("/v1/completions", { prompt: "x".repeat(10) });
  assert.equal(status, 400);
  assert.deepEqual(body.error, {
    message: "Prompt has 11 tokens but this server accepts at most 10 (--max-prompt-tokens)",
    type: "invalid_request_error",
    param: "prompt",
    code: "context_length_exceeded",
  });
  // chat counts the rendered template: "user: Hi\nassistant:" is 19 tokens
  const [chatStatus, chat] = await post("/v1/chat/completions", {
    messages: [{ role: "user", content: "Hi" }],
  });
  assert.equal(chatStatus, 400);
  assert.equal(chat.error.param, "messages");
  assert.equal(engine.requests.length, 1, "refused before reaching the engine's queue");
});

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
