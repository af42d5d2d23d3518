import assert from "node:assert/strict";
import {
  type Engine,
  EngineInputError,
  type EngineStatus,
  type GenerateRequest,
  type TokenEvent,
  type TokenLogprob,
} from "../inference/engine/types.ts";
import { createApp } from "./app.ts";

/** What the fake engine does for one request. */
interface Script {
  deltas: string[];
  finishReason?: "stop" | "length";
  /** Thrown before any event (like a prompt that is too long). */
  throwAtStart?: Error;
  /** Thrown after this many deltas. */
  throwAfter?: { deltas: number; error: Error };
  /** After the deltas, wait until the request's signal aborts. */
  hangUntilAbort?: boolean;
  /** The scored prompt a request with promptLogprobs gets (its second token's text ends in the request's number). */
  prompt?: TokenLogprob[];
}

/** Scripted Engine: no GPU; records what the server asked of it. */
class FakeEngine implements Engine {
  state: EngineStatus["state"] = "ready";
  detail = "";
  hasChatTemplate = true;
  script: Script = { deltas: ["Hel", "lo", " world"] };
  requests: GenerateRequest[] = [];
  signals: (AbortSignal | undefined)[] = [];
  finished = 0;

  status(): EngineStatus {
    return {
      state: this.state,
      detail: this.detail,
      modelId: "fake-model",
      contextLength: 64,
      hasChatTemplate: this.hasChatTemplate,
    };
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent> {
    const number = this.requests.push(request);
    this.signals.push(signal);
    const s = this.script;
    try {
      if (s.throwAtStart) throw s.throwAtStart;
      yield { type: "start", promptTokens: 7 };
      if (request.returnTokenIds) yield { type: "prompt", ids: [100 + number, 101, 102] };
      if (s.prompt && request.promptLogprobs !== undefined) {
        yield {
          type: "prompt",
          logprobs: s.prompt.map((e, t) => t === 1 ? { ...e, token: e.token + number } : e),
        };
      }
      for (const [i, text] of s.deltas.entries()) {
        if (s.throwAfter?.deltas === i) throw s.throwAfter.error;
        await Promise.resolve(); // let the server interleave like a real decode loop
        yield { type: "delta", text, ...(request.returnTokenIds ? { ids: [10 + i] } : {}) };
      }
      if (s.hangUntilAbort) {
        if (!signal?.aborted) await new Promise((resolve) => signal?.addEventListener("abort", resolve));
        throw new DOMException("aborted", "AbortError");
      }
      yield {
        type: "end",
        finishReason: s.finishReason ?? "stop",
        promptTokens: 7,
        completionTokens: s.deltas.length,
      };
    } finally {
      this.finished++; // the queue slot a real engine frees here
    }
  }
}

function setup(servedModelName: string | null = "served") {
  const engine = new FakeEngine();
  const logged: string[] = [];
  const app = createApp({
    engine,
    config: { servedModelName, maxTokensDefault: null },
    samplingDefaults: { topP: 0.9 },
    generationDefaults: { topP: 0.5, topK: 40, temperature: 0.7 },
    logError: (message) => logged.push(message),
  });
  const post = (path: string, body: unknown, init: RequestInit = {}) =>
    app.request(path, {
      method: "POST",
      body: typeof body === "string" ? body : JSON.stringify(body),
      headers: { "content-type": "application/json" },
      ...init,
    });
  return { app, engine, logged, post };
}

const CHAT = { model: "anything", messages: [{ role: "user", content: "Hi" }] };

/** The JSON payloads of an SSE body; "[DONE]" stays a string. */
function sseData(text: string): unknown[] {
  return text.split("\n\n").filter((e) => e.trim() !== "").map((event) => {
    const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
    return data === "[DONE]" ? data : JSON.parse(data);
  });
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function errorOf(res: Response, status: number): Promise<Json["error"]> {
  assert.equal(res.status, status);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  return body.error;
}

Deno.test("POST /v1/chat/completions answers a chat.completion with usage", async () => {
  const { engine, post } = setup();
  const res = await post("/v1/chat/completions", { ...CHAT, temperature: 0, max_tokens: 5 });
  assert.equal(res.status, 200);
  const body: Json = await res.json();
  assert.match(body.id, /^chatcmpl-[0-9a-f]{32}$/);
  assert.equal(body.object, "chat.completion");
  assert.equal(body.model, "served");
  assert.ok(Number.isInteger(body.created) && Math.abs(body.created - Date.now() / 1000) < 60);
  assert.deepEqual(body.choices, [{
    index: 0,
    message: { role: "assistant", content: "Hello world" },
    finish_reason: "stop",
    logprobs: null,
  }]);
  assert.deepEqual(body.usage, {
    prompt_tokens: 7,
    completion_tokens: 3,
    total_tokens: 10,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  // request → server defaults → generation_config, field by field
  assert.deepEqual(engine.requests[0], {
    input: { kind: "chat", messages: [{ role: "user", content: "Hi" }] },
    maxTokens: 5,
    maxTokensStrict: true,
    stop: [],
    sampling: { temperature: 0, topP: 0.9, topK: 40, minP: 0, seed: null },
  });
  assert.ok(engine.signals[0] instanceof AbortSignal);
});

Deno.test("POST /v1/chat/completions streams role, deltas, finish, usage, then [DONE]", async () => {
  const { engine, post } = setup();
  engine.script = { deltas: ["a", "", "b\nc"], finishReason: "length" };
  const res = await post("/v1/chat/completions", {
    ...CHAT,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events: Json[] = sseData(await res.text());
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1);
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.model, "served");
  }
  assert.deepEqual(chunks[0].choices, [{
    index: 0,
    delta: { role: "assistant", content: "" },
    finish_reason: null,
    logprobs: null,
  }]);
  // the empty delta is dropped; the newline survives SSE framing
  assert.deepEqual(chunks.slice(1, 3).map((c) => c.choices[0].delta), [{ content: "a" }, {
    content: "b\nc",
  }]);
  assert.deepEqual(chunks[3].choices, [{ index: 0, delta: {}, finish_reason: "length", logprobs: null }]);
  assert.deepEqual(chunks.slice(0, 4).map((c) => c.usage), [null, null, null, null]);
  assert.deepEqual(chunks[4].choices, []);
  assert.deepEqual(chunks[4].usage, {
    prompt_tokens: 7,
    completion_tokens: 3,
    total_tokens: 10,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  assert.equal(chunks.length, 5);
});

Deno.test("POST /v1/chat/completions streams no usage unless asked", async () => {
  const { post } = setup();
  const events: Json[] = sseData(
    await (await post("/v1/chat/completions", { ...CHAT, stream: true })).text(),
  );
  assert.equal(events.length, 1 + 3 + 1 + 1);
  assert.ok(events.slice(0, -1).every((c) => !("usage" in c) && c.choices.length === 1));
  assert.equal(events[4].choices[0].finish_reason, "stop");
});

Deno.test("POST /v1/completions answers text_completion, streaming and not", async () => {
  const { engine, post } = setup(null);
  const body: Json = await (await post("/v1/completions", { prompt: "Once", max_tokens: 3, stop: "\n" }))
    .json();
  assert.match(body.id, /^cmpl-/);
  assert.equal(body.object, "text_completion");
  assert.equal(body.model, "fake-model"); // no served name: the engine's model id
  assert.deepEqual(body.choices, [{ index: 0, text: "Hello world", finish_reason: "stop", logprobs: null }]);
  assert.equal(body.usage.total_tokens, 10);
  assert.deepEqual(engine.requests[0].input, { kind: "text", prompt: "Once" });
  assert.deepEqual(engine.requests[0].stop, ["\n"]);

  const res = await post("/v1/completions", {
    prompt: ["Once"],
    stream: true,
    stream_options: { include_usage: true },
  });
  const events: Json[] = sseData(await res.text());
  assert.equal(events.at(-1), "[DONE]");
  assert.deepEqual(events.slice(0, 3).map((c) => c.choices[0].text), ["Hel", "lo", " world"]);
  assert.deepEqual(events[3].choices, [{ index: 0, text: "", finish_reason: "stop", logprobs: null }]);
  assert.deepEqual(events[4].choices, []);
  assert.equal(events[4].usage.completion_tokens, 3);
  assert.ok(events.slice(0, -1).every((c) => c.object === "text_completion"));
});

Deno.test("GET /v1/models lists the served model", async () => {
  const { app } = setup();
  const body: Json = await (await app.request("/v1/models")).json();
  assert.equal(body.object, "list");
  assert.equal(body.data.length, 1);
  assert.equal(body.data[0].id, "served");
  assert.equal(body.data[0].object, "model");
  assert.equal(body.data[0].max_model_len, 64);
  assert.equal((await (await app.request("/v1/models/served")).json()).id, "served");
  const err = await errorOf(await app.request("/v1/models/other/name"), 404);
  assert.equal(err.code, "model_not_found");
});

Deno.test("GET /health is 503 with the detail until the engine is ready, and after it fails", async () => {
  const { app, engine, post } = setup();
  engine.state = "loading";
  engine.detail = "loading layer 3/8";
  let res = await app.request("/health");
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { status: "loading", detail: "loading layer 3/8" });
  const err = await errorOf(await post("/v1/chat/completions", CHAT), 503);
  assert.equal(err.code, "model_loading");
  assert.match(err.message, /loading layer 3\/8/);
  assert.equal(engine.requests.length, 0);

  engine.state = "ready";
  res = await app.request("/health");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
  assert.equal((await post("/v1/chat/completions", CHAT)).status, 200);

  engine.state = "error";
  engine.detail = "device lost";
  assert.equal((await app.request("/health")).status, 503);
  assert.equal((await errorOf(await post("/v1/completions", { prompt: "x" }), 503)).code, "engine_failed");
});

Deno.test("invalid requests get 400 invalid_request_error naming the field", async () => {
  const { engine, post } = setup();
  const cases: [unknown, string | null][] = [
    ["{not json", null],
    [{ model: "m" }, "messages"],
    [{ ...CHAT, n: 0 }, "n"],
    [{ ...CHAT, temperature: 3 }, "temperature"],
    [{ messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
  ];
  for (const [body, param] of cases) {
    const err = await errorOf(await post("/v1/chat/completions", body), 400);
    assert.equal(err.type, "invalid_request_error");
    assert.equal(err.param, param, JSON.stringify(body));
  }
  assert.equal((await errorOf(await post("/v1/completions", { prompt: 3 }), 400)).param, "prompt");
  assert.equal(engine.requests.length, 0);
});

Deno.test("unknown routes get a 404 in OpenAI's shape", async () => {
  const { app } = setup();
  const err = await errorOf(await app.request("/v1/images/generations", { method: "POST" }), 404);
  assert.equal(err.type, "not_found_error");
  assert.match(err.message, /POST \/v1\/images\/generations/);
});

Deno.test("an engine that cannot embed answers /v1/embeddings with a 501", async () => {
  const { post } = setup();
  const err = await errorOf(await post("/v1/embeddings", { input: "Hi" }), 501);
  assert.equal(err.code, "not_implemented");
});

Deno.test("chat on a model without a chat template is a 400 before the engine is called", async () => {
  const { engine, post } = setup();
  engine.hasChatTemplate = false;
  assert.equal((await errorOf(await post("/v1/chat/completions", CHAT), 400)).code, "no_chat_template");
  assert.equal(engine.requests.length, 0);
});

Deno.test("EngineInputError becomes a 400, also for a streaming request", async () => {
  const { engine, post } = setup();
  engine.script = {
    deltas: [],
    throwAtStart: new EngineInputError("Prompt is too long: 99 > 64", "messages"),
  };
  for (const stream of [false, true]) {
    const err = await errorOf(await post("/v1/chat/completions", { ...CHAT, stream }), 400);
    assert.equal(err.message, "Prompt is too long: 99 > 64");
    assert.equal(err.param, "messages");
  }
});

Deno.test("an unexpected engine error is logged, hidden behind a 500, and the app keeps serving", async () => {
  const { engine, logged, post } = setup();
  engine.script = { deltas: [], throwAtStart: new Error("GPU buffer 0x1234 exploded") };
  const err = await errorOf(await post("/v1/completions", { prompt: "x" }), 500);
  assert.equal(err.type, "server_error");
  assert.doesNotMatch(err.message, /0x1234/);
  assert.deepEqual(logged, ["POST /v1/completions failed"]);
  engine.script = { deltas: ["ok"] };
  assert.equal((await (await post("/v1/completions", { prompt: "x" })).json()).choices[0].text, "ok");
});

Deno.test("an error mid-stream ends the stream with one error event and no [DONE]", async () => {
  const { engine, logged, post } = setup();
  engine.script = { deltas: ["a", "b"], throwAfter: { deltas: 1, error: new Error("secret detail") } };
  const res = await post("/v1/chat/completions", { ...CHAT, stream: true });
  assert.equal(res.status, 200);
  const events: Json[] = sseData(await res.text());
  assert.deepEqual(events.slice(0, 2).map((c) => c.choices[0].delta), [{ role: "assistant", content: "" }, {
    content: "a",
  }]);
  assert.equal(events.length, 3);
  assert.equal(events[2].error.type, "server_error");
  assert.doesNotMatch(JSON.stringify(events[2]), /secret/);
  assert.deepEqual(logged, ["Generation failed mid-stream"]);
  assert.equal(engine.finished, 1);
  engine.script = { deltas: ["fine"] };
  assert.equal((await (await post("/v1/chat/completions", CHAT)).json()).choices[0].message.content, "fine");
});

Deno.test("a client that goes away mid-stream aborts the engine's signal and frees its slot", async () => {
  const { engine, logged, post } = setup();
  engine.script = { deltas: ["a"], hangUntilAbort: true };
  const client = new AbortController();
  const res = await post("/v1/chat/completions", { ...CHAT, stream: true }, { signal: client.signal });
  const reader = res.body!.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  assert.match(first, /"role":"assistant"/);
  client.abort();
  await reader.cancel();
  for (let i = 0; i < 100 && engine.finished === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(engine.signals[0]?.aborted, true);
  assert.equal(engine.finished, 1);
  assert.deepEqual(logged, []);
});

Deno.test("prompt_logprobs (vLLM): scored prompts in vLLM's shape, per prompt; not with stream", async () => {
  const { engine, post } = setup();
  const top = (id: number, token: string, logprob: number) => ({ id, token, logprob });
  engine.script = {
    deltas: ["!"],
    prompt: [
      { id: 5, token: "Hi", logprob: null, top: [] },
      { id: 7, token: " there", logprob: -1.5, rank: 2, top: [top(9, " you", -0.5), top(7, " there", -1.5)] },
      { id: 8, token: "?", logprob: -Infinity, rank: 40, top: [top(3, ".", -0.1)] },
    ],
  };
  const res = await post("/v1/chat/completions", { ...CHAT, prompt_logprobs: 2 });
  assert.equal(res.status, 200);
  const body: Json = await res.json();
  assert.equal(engine.requests[0].promptLogprobs, 2);
  // the token first, then its alternatives (itself not repeated), ranked by place; −inf clamped as vLLM does
  assert.deepEqual(body.prompt_logprobs, [
    null,
    {
      "7": { logprob: -1.5, rank: 2, decoded_token: " there1" },
      "9": { logprob: -0.5, rank: 1, decoded_token: " you" },
    },
    {
      "8": { logprob: -9999, rank: 40, decoded_token: "?" },
      "3": { logprob: -0.1, rank: 1, decoded_token: "." },
    },
  ]);
  assert.equal(body.choices[0].prompt_logprobs, undefined, "chat has it once, beside choices");
  // completions: every choice carries its own prompt's
  const batchRes = await post("/v1/completions", { prompt: ["a", "b"], prompt_logprobs: 0 });
  const batch: Json = await batchRes.json();
  assert.deepEqual(batch.choices.map((ch: Json) => ch.prompt_logprobs.length), [3, 3]);
  const own = batch.choices.map((ch: Json) => ch.prompt_logprobs[1]["7"].decoded_token);
  assert.deepEqual(own, [" there2", " there3"]);
  assert.deepEqual(engine.requests.slice(1).map((r) => r.promptLogprobs), [0, 0]);
  assert.equal(batch.prompt_logprobs, undefined);
  // none asked, none sent
  const plain: Json = await (await post("/v1/completions", { prompt: "a" })).json();
  assert.equal("prompt_logprobs" in plain.choices[0], false);
  const streamed = await errorOf(
    await post("/v1/chat/completions", { ...CHAT, prompt_logprobs: 1, stream: true }),
    400,
  );
  assert.equal(streamed.param, "prompt_logprobs");
  for (const bad of [-1, 21, 1.5, "2"]) {
    const err = await errorOf(await post("/v1/completions", { prompt: "a", prompt_logprobs: bad }), 400);
    assert.equal(err.param, "prompt_logprobs");
  }
});

Deno.test("return_token_ids (vLLM): the prompt's ids and each choice's, whole or as they stream", async () => {
  const { post } = setup();
  const chat: Json = await (await post("/v1/chat/completions", { ...CHAT, return_token_ids: true })).json();
  assert.deepEqual(chat.prompt_token_ids, [101, 101, 102]);
  assert.deepEqual(chat.choices[0].token_ids, [10, 11, 12]);
  const text: Json = await (await post("/v1/completions", { prompt: ["a", "b"], return_token_ids: true }))
    .json();
  assert.deepEqual(text.choices.map((ch: Json) => ch.prompt_token_ids[0]), [102, 103]);
  assert.deepEqual(text.choices.map((ch: Json) => ch.token_ids), [[10, 11, 12], [10, 11, 12]]);
  const plain: Json = await (await post("/v1/completions", { prompt: "a" })).json();
  assert.equal("token_ids" in plain.choices[0], false);
  // streamed: the prompt's ids once, with the first chunk after them; every id once, in order
  for (const path of ["/v1/chat/completions", "/v1/completions"]) {
    const body = path.includes("chat") ? CHAT : { prompt: "a" };
    const res = await post(path, { ...body, stream: true, return_token_ids: true });
    const chunks = sseData(await res.text()).filter((d): d is Json => d !== "[DONE]");
    const promptIds = chunks.flatMap((ch) =>
      path.includes("chat")
        ? (ch.prompt_token_ids ?? [])
        : ch.choices.flatMap((c: Json) => c.prompt_token_ids ?? [])
    );
    assert.equal(promptIds.length, 3, path);
    const own = chunks.flatMap((ch) => ch.choices.flatMap((c: Json) => c.token_ids ?? []));
    assert.deepEqual(own, [10, 11, 12], path);
  }
});
