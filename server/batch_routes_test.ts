/**
 * The OpenAI shapes of what batching adds: `n` choices (also streamed, by index), logprobs in the chat
 * and completions shapes, usage over all choices, and a full queue as 429 with Retry-After. The engine is
 * scripted (no GPU).
 */
import assert from "node:assert/strict";
import {
  type Engine,
  EngineBusyError,
  type GenerateRequest,
  type TokenEvent,
  type TokenLogprob,
} from "../inference/engine/types.ts";
import { createApp } from "./app.ts";

const lp = (id: number, token: string, logprob: number): TokenLogprob => ({
  id,
  token,
  logprob,
  top: [{ id, token, logprob }, { id: id + 1, token: "é", logprob: logprob - 1 }],
});

/** Two choices interleaved, as the batched engine sends them. */
const EVENTS: TokenEvent[] = [
  { type: "start", promptTokens: 4 },
  { type: "delta", index: 1, text: "B", logprobs: [lp(5, "B", -0.5)] },
  { type: "delta", index: 0, text: "A", logprobs: [lp(3, "A", -0.25)] },
  { type: "delta", index: 0, text: "a", logprobs: [lp(4, "a", -1)] },
  { type: "end", index: 0, finishReason: "length", promptTokens: 4, completionTokens: 2 },
  { type: "delta", index: 1, text: "!", logprobs: [lp(6, "!", -2)] },
  { type: "end", index: 1, finishReason: "stop", promptTokens: 4, completionTokens: 2 },
];

function setup(events: TokenEvent[] | Error) {
  const requests: GenerateRequest[] = [];
  const engine: Engine = {
    status: () => ({ state: "ready", detail: "", modelId: "m", contextLength: 64, hasChatTemplate: true }),
    async *generate(request) {
      requests.push(request);
      if (events instanceof Error) throw events;
      for (const ev of events) yield ev;
    },
  };
  const app = createApp({ engine, config: {} });
  const post = (path: string, body: unknown) =>
    app.request(path, { method: "POST", body: JSON.stringify(body) });
  return { post, requests };
}

function sse(text: string) {
  return text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6))
    .filter((d) => d !== "[DONE]").map((d) => JSON.parse(d));
}

Deno.test("chat: n choices with logprobs.content, usage summed over choices", async () => {
  const { post, requests } = setup(EVENTS);
  const res = await post("/v1/chat/completions", {
    messages: [{ role: "user", content: "hi" }],
    n: 2,
    logprobs: true,
    top_logprobs: 2,
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(requests[0].n, 2);
  assert.equal(requests[0].logprobs, 2);
  assert.deepEqual(body.choices.map((c: { message: { content: string } }) => c.message.content), [
    "Aa",
    "B!",
  ]);
  assert.deepEqual(body.choices.map((c: { finish_reason: string }) => c.finish_reason), ["length", "stop"]);
  assert.deepEqual(body.usage, {
    prompt_tokens: 4,
    completion_tokens: 4,
    total_tokens: 8,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  const content = body.choices[1].logprobs.content;
  assert.deepEqual(content[0], {
    token: "B",
    logprob: -0.5,
    bytes: [66],
    top_logprobs: [{ token: "B", logprob: -0.5, bytes: [66] }, {
      token: "é",
      logprob: -1.5,
      bytes: [195, 169],
    }],
  });
  assert.equal(content.length, 2);
});

Deno.test("chat stream: a role chunk per choice, deltas by index, usage after the last finish", async () => {
  const { post } = setup(EVENTS);
  const res = await post("/v1/chat/completions", {
    messages: [{ role: "user", content: "hi" }],
    n: 2,
    stream: true,
    stream_options: { include_usage: true },
    logprobs: true,
  });
  const chunks = sse(await res.text());
  assert.deepEqual(chunks.slice(0, 2).map((c) => [c.choices[0].index, c.choices[0].delta.role]), [
    [0, "assistant"],
    [1, "assistant"],
  ]);
  const text = (i: number) =>
    chunks.filter((c) => c.choices[0]?.index === i).map((c) => c.choices[0].delta.content ?? "").join("");
  assert.deepEqual([text(0), text(1)], ["Aa", "B!"]);
  assert.equal(
    chunks.find((c) => c.choices[0]?.delta.content === "B").choices[0].logprobs.content[0].token,
    "B",
  );
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, {
    prompt_tokens: 4,
    completion_tokens: 4,
    total_tokens: 8,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  assert.equal(chunks.filter((c) => c.usage).length, 1);
});

Deno.test("completions: the legacy logprobs shape, streamed and not", async () => {
  const { post } = setup(EVENTS);
  const body = await (await post("/v1/completions", { prompt: "x", n: 2, logprobs: 1 })).json();
  assert.deepEqual(body.choices[0].logprobs, {
    tokens: ["A", "a"],
    token_logprobs: [-0.25, -1],
    top_logprobs: [{ A: -0.25, é: -1.25 }, { a: -1, é: -2 }],
    text_offset: [0, 1],
  });
  const chunks = sse(
    await (await post("/v1/completions", { prompt: "x", n: 2, logprobs: 0, stream: true })).text(),
  );
  const second = chunks.filter((c) => c.choices[0]?.index === 1 && c.choices[0].logprobs);
  assert.deepEqual(
    second.map((c) => c.choices[0].logprobs.text_offset),
    [[0], [1]],
    "offsets continue across chunks",
  );
  assert.equal(
    (await (await post("/v1/completions", { prompt: "x", n: 2 })).json()).choices[0].logprobs,
    null,
  );
});

Deno.test("a full queue answers 429 with Retry-After, streaming or not", async () => {
  const { post } = setup(new EngineBusyError("Cannot queue the request: 8 sequences are already waiting", 2));
  for (const stream of [false, true]) {
    const res = await post("/v1/completions", { prompt: "x", stream });
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "2");
    const body = await res.json();
    assert.equal(body.error.type, "rate_limit_error");
    assert.equal(body.error.code, "queue_full");
  }
});
