import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

function setup() {
  const engine = new FakeEngine();
  const lines: string[] = [];
  const app = createApp({ engine, config: {}, logRequest: (line) => lines.push(line) });
  const post = (path: string, body: unknown, init: RequestInit = {}) =>
    app.request(path, { method: "POST", body: JSON.stringify(body), ...init });
  // deno-lint-ignore no-explicit-any
  const logged = (): any[] => lines.map((l) => JSON.parse(l));
  return { app, engine, lines, logged, post };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("x-request-id: the client's sane id is echoed, anything else is replaced by a UUID", async () => {
  const { app, logged } = setup();
  const idOf = async (id?: string) => {
    const res = await app.request("/v1/models", id === undefined ? {} : { headers: { "x-request-id": id } });
    await res.body?.cancel(); // the line is written when the body ends
    return res.headers.get("x-request-id");
  };
  assert.equal(await idOf("trace-42_a.b:c"), "trace-42_a.b:c");
  const generated = await idOf();
  assert.match(generated!, UUID);
  assert.notEqual(await idOf(), generated, "a fresh id per request");
  for (const insane of ["has space", "x".repeat(129), "<script>", ""]) {
    assert.match((await idOf(insane))!, UUID, JSON.stringify(insane));
  }
  assert.equal(logged()[0].id, "trace-42_a.b:c");
  // errors carry the id too
  const res = await app.request("/nope", { headers: { "x-request-id": "err-1" } });
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("x-request-id"), "err-1");
});

Deno.test("one JSON line per request with tokens, TTFT and duration", async () => {
  const { engine, logged, post } = setup();
  engine.script = { deltas: ["a", "b", "c"], delayMs: 15 };
  const res = await post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }] }, {
    headers: { "x-request-id": "chat-1" },
  });
  assert.equal(res.status, 200);
  await res.json();
  const [line] = logged();
  assert.deepEqual(Object.keys(line), [
    "ts",
    "id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "ttft_ms",
    "finish_reason",
  ]);
  assert.ok(Math.abs(Date.parse(line.ts) - Date.now()) < 60_000);
  assert.equal(line.id, "chat-1");
  assert.equal(line.method, "POST");
  assert.equal(line.route, "/v1/chat/completions");
  assert.equal(line.status, 200);
  assert.equal(line.prompt_tokens, "user: Hi\nassistant:".length);
  assert.equal(line.completion_tokens, 3);
  assert.equal(line.finish_reason, "stop");
  assert.ok(line.ttft_ms >= 14, `ttft ${line.ttft_ms}`);
  assert.ok(line.duration_ms >= 3 * 14 && line.duration_ms >= line.ttft_ms, `duration ${line.duration_ms}`);
});

Deno.test("a stream is logged when its body ends, with the values at the end", async () => {
  const { engine, lines, logged, post } = setup();
  engine.script = { deltas: ["a", "b"], delayMs: 10, finishReason: "length" };
  const res = await post("/v1/completions", { prompt: "xy", stream: true });
  assert.equal(res.status, 200);
  assert.equal(lines.length, 0, "headers are out, the stream is not: nothing logged yet");
  await res.text();
  const [line] = logged();
  assert.equal(line.completion_tokens, 2);
  assert.equal(line.prompt_tokens, 3); // BOS + 2
  assert.equal(line.finish_reason, "length");
  assert.ok(line.duration_ms >= 19);
  assert.equal(line.aborted, undefined);
});

Deno.test("n choices: completion tokens add up, the finish reason is choice 0's", async () => {
  const fake = new FakeEngine();
  const lines: string[] = [];
  const app = createApp({
    engine: {
      status: () => fake.status(),
      async *generate() {
        yield { type: "start", promptTokens: 4 };
        yield { type: "delta", text: "a", index: 0 };
        yield { type: "delta", text: "b", index: 1 };
        yield {
          type: "end",
          finishReason: "length",
          promptTokens: 4,
          completionTokens: 3,
          cachedTokens: 0,
          index: 1,
        };
        yield {
          type: "end",
          finishReason: "stop",
          promptTokens: 4,
          completionTokens: 2,
          cachedTokens: 0,
          index: 0,
        };
      },
    },
    config: {},
    logRequest: (line) => lines.push(line),
  });
  const res = await app.request("/v1/completions", { method: "POST", body: '{"prompt": "x", "n": 2}' });
  assert.equal((await res.json()).choices.length, 2);
  const line = JSON.parse(lines[0]);
  assert.deepEqual([line.prompt_tokens, line.completion_tokens, line.finish_reason], [4, 5, "stop"]);
  assert.equal(line.cached_tokens, 0, "the engine's count; null where it gives none");
});

Deno.test("a client that leaves mid-stream is logged once, as aborted", async () => {
  const { engine, logged, post } = setup();
  engine.script = { deltas: ["a", "b", "c", "d"], delayMs: 30 };
  const client = new AbortController();
  const res = await post("/v1/completions", { prompt: "x", stream: true }, { signal: client.signal });
  const reader = res.body!.getReader();
  await reader.read();
  client.abort();
  await reader.cancel();
  for (let i = 0; i < 100 && engine.finished === 0; i++) await new Promise((r) => setTimeout(r, 5));
  const all = logged();
  assert.equal(all.length, 1);
  assert.equal(all[0].aborted, true);
  assert.equal(all[0].status, 200);
});

Deno.test("errors are logged with their status; probes and scrapes are not", async () => {
  const { app, engine, logged, post } = setup();
  // the line is written when the body ends, so each body is read
  await (await app.request("/health")).text();
  await (await app.request("/metrics")).text();
  await (await app.request("/v1/nothing-here")).text();
  await (await post("/v1/completions", { prompt: 3 })).text();
  engine.state = "loading"; // a 503 probe while loading is expected, not news
  await (await app.request("/health")).text();
  assert.deepEqual(logged().map((l) => [l.route, l.path, l.status]), [
    ["unmatched", "/v1/nothing-here", 404],
    ["/v1/completions", "/v1/completions", 400],
  ]);
  assert.equal(logged()[1].prompt_tokens, null);
});

Deno.test("without logRequest nothing is written, ids are still set", async () => {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: {} });
  const res = await app.request("/v1/models");
  assert.match(res.headers.get("x-request-id")!, UUID);
});
