/**
 * End to end: starts the real server (`main.ts`) on a free loopback port with real models and talks
 * to it over HTTP, as a client would.
 */
import assert from "node:assert/strict";
import { IN_CI, sharedPath, testGpu } from "./_gpu.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts main.ts and waits for /health to say ready. */
async function startServer(model: string, extra: string[] = []) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--model", model, "--port", String(port), ...extra],
    env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const logs: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs.push(chunk);
  };
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 300_000;
  let sawLoading = false;
  for (;;) {
    const res = await fetch(`${base}/health`).catch(() => null);
    if (res) {
      const body = await res.json();
      if (res.status === 200) break;
      assert.equal(res.status, 503, `health: ${JSON.stringify(body)}`);
      sawLoading = true;
    }
    if (Date.now() > deadline) throw new Error(`server did not become ready:\n${logs.join("")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    base,
    sawLoading,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await done;
    },
  };
}

/** Parses an SSE body into the JSON payloads of its data lines (plus the raw "[DONE]"). */
function sseEvents(text: string): (Record<string, unknown> | "[DONE]")[] {
  return text.split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).trim())
    .map((data) => data === "[DONE]" ? "[DONE]" : JSON.parse(data));
}

Deno.test("server answers lq-49m chat completions, streaming and not", async (t) => {
  const model = sharedPath("models/lq-49m");
  const golden = sharedPath("models/lq-49m/golden.json");
  if (!model || !golden || !(await gpuAvailable())) return;
  const chat = JSON.parse(await Deno.readTextFile(golden)).chat;
  const server = await startServer(model, ["--dtype", "f32"]);
  try {
    const request = { model: "lq-49m", messages: chat.messages, temperature: 0, max_tokens: 64 };
    await t.step("non-streaming greedy reply equals PyTorch's and stops on <|im_end|>", async () => {
      const res = await fetch(`${server.base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(request),
      });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.object, "chat.completion");
      assert.equal(body.choices[0].message.role, "assistant");
      assert.equal(body.choices[0].message.content, chat.greedy_reply_text_skip_special);
      assert.equal(body.choices[0].finish_reason, "stop");
      assert.equal(body.usage.prompt_tokens, chat.ids.length);
      assert.equal(body.usage.completion_tokens, chat.greedy_reply_ids.length);
      assert.equal(body.usage.total_tokens, chat.ids.length + chat.greedy_reply_ids.length);
    });
    await t.step("streaming sends role, deltas, finish, usage and [DONE]", async () => {
      const res = await fetch(`${server.base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
      const events = sseEvents(await res.text());
      assert.equal(events.at(-1), "[DONE]");
      // deno-lint-ignore no-explicit-any -- SSE payloads are checked field by field below
      const chunks = events.slice(0, -1) as Record<string, any>[];
      assert.equal(chunks[0].choices[0].delta.role, "assistant");
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
      assert.equal(text, chat.greedy_reply_text_skip_special);
      const finish = chunks.find((c) => c.choices[0]?.finish_reason);
      assert.equal(finish?.choices[0].finish_reason, "stop");
      const usage = chunks.at(-1)!;
      assert.deepEqual(usage.choices, []);
      assert.equal(usage.usage.completion_tokens, chat.greedy_reply_ids.length);
    });
    await t.step("max_tokens cuts with finish_reason length", async () => {
      const res = await fetch(`${server.base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...request, max_tokens: 3 }),
      });
      const body = await res.json();
      assert.equal(body.choices[0].finish_reason, "length");
      assert.equal(body.usage.completion_tokens, 3);
    });
    await t.step(
      "response_format json_schema: JSON of the schema (masks from the engine's mask thread)",
      async () => {
        const schema = {
          type: "object",
          properties: {
            name: { type: "string", maxLength: 8 },
            age: { type: "integer", minimum: 0, maximum: 120 },
          },
          required: ["name", "age"],
        };
        const res = await fetch(`${server.base}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            ...request,
            max_tokens: 80,
            response_format: { type: "json_schema", json_schema: { name: "person", schema } },
          }),
        });
        assert.equal(res.status, 200);
        const body = await res.json();
        assert.equal(body.choices[0].finish_reason, "stop", body.choices[0].message.content);
        const value = JSON.parse(body.choices[0].message.content);
        assert.deepEqual(Object.keys(value), ["name", "age"]);
        assert.ok(typeof value.name === "string" && [...value.name].length <= 8);
        assert.ok(Number.isInteger(value.age) && value.age >= 0 && value.age <= 120);
      },
    );
    await t.step("a bad request gets an OpenAI-shaped 400 and the server keeps serving", async () => {
      const res = await fetch(`${server.base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: "nope" }),
      });
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error.type, "invalid_request_error");
      assert.equal((await fetch(`${server.base}/health`)).status, 200);
    });
  } finally {
    await server.stop();
  }
});

Deno.test("server completes stories260K text through /v1/completions like PyTorch", async () => {
  const model = sharedPath("models/stories260K");
  const golden = sharedPath("models/stories260K/golden_hf.json");
  if (!model || !golden || !(await gpuAvailable())) return;
  const c = JSON.parse(await Deno.readTextFile(golden)).cases[0];
  const server = await startServer(model);
  try {
    const res = await fetch(`${server.base}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: c.prompt, temperature: 0, max_tokens: c.greedy32_ids.length }),
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.object, "text_completion");
    assert.equal(c.prompt + body.choices[0].text, c.full_text.replace(/^<s> /, ""));
    assert.equal(body.choices[0].finish_reason, "length");
    // Concurrent requests queue on the one GPU and never interleave: each gets its own whole answer.
    const cases = JSON.parse(await Deno.readTextFile(golden)).cases.slice(0, 3);
    const answers = await Promise.all(cases.map(async (g: typeof c) => {
      const res = await fetch(`${server.base}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          prompt: g.prompt,
          temperature: 0,
          max_tokens: g.greedy32_ids.length,
          stream: true,
        }),
      });
      const events = sseEvents(await res.text());
      assert.equal(events.at(-1), "[DONE]");
      // deno-lint-ignore no-explicit-any -- SSE payloads, checked field by field
      return (events.slice(0, -1) as any[]).map((e) => e.choices[0]?.text ?? "").join("");
    }));
    cases.forEach((g: typeof c, i: number) => {
      assert.equal(g.prompt + answers[i], g.full_text.replace(/^<s> /, ""), `concurrent request ${i}`);
    });
    const chat = await fetch(`${server.base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(chat.status, 400, "a base model without a chat template refuses chat");
    assert.equal((await chat.json()).error.code, "no_chat_template");
  } finally {
    await server.stop();
  }
});

Deno.test("--chat-template gives a base model chat: its template renders every chat", async () => {
  const model = sharedPath("models/stories260K");
  if (!model || !(await gpuAvailable())) return;
  const template =
    "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}. {% endif %}";
  const server = await startServer(model, ["--chat-template", template]);
  const post = (path: string, body: unknown) =>
    fetch(`${server.base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  try {
    const messages = [{ role: "user", content: "Once upon a time" }];
    // /tokenize renders chats as generation does: the template's text, then the tokenizer.
    const chat = await (await post("/tokenize", { messages, add_special_tokens: true })).json();
    const text = await (await post("/tokenize", { prompt: "Once upon a time. " })).json();
    assert.deepEqual(chat.tokens, text.tokens);
    const res = await post("/v1/chat/completions", { messages, temperature: 0, max_tokens: 4 });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.usage.completion_tokens, 4);
    assert.equal(body.usage.prompt_tokens, chat.count - 1, "chat prompts get no BOS of their own (vLLM)");
  } finally {
    await server.stop();
  }
});

async function gpuAvailable(): Promise<boolean> {
  const gpu = await testGpu();
  gpu?.device.destroy();
  if (!gpu && IN_CI) throw new Error("CI needs a WebGPU adapter");
  return gpu !== null;
}
