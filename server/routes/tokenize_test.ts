import assert from "node:assert/strict";
import { FAKE_VOCAB, FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

function setup() {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: {} });
  // deno-lint-ignore no-explicit-any
  const post = async (path: string, body: unknown): Promise<[number, any]> => {
    const res = await app.request(path, {
      method: "POST",
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return [res.status, await res.json()];
  };
  return { engine, post };
}

const codes = (text: string) => Array.from(text, (c) => c.charCodeAt(0));

Deno.test("POST /tokenize answers vLLM's {count, max_model_len, tokens} for a prompt", async () => {
  const { post } = setup();
  assert.deepEqual(await post("/tokenize", { model: "m", prompt: "Hi" }), [200, {
    count: 3,
    max_model_len: 64,
    tokens: [1, ...codes("Hi")],
  }]);
  const [, plain] = await post("/tokenize", { prompt: "Hi", add_special_tokens: false });
  assert.deepEqual(plain.tokens, codes("Hi"));
  const [, strs] = await post("/tokenize", { prompt: "ab", return_token_strs: true });
  assert.deepEqual(strs.token_strs, ["\u0001", "a", "b"]);
});

Deno.test("POST /tokenize renders messages like generation, with vLLM's chat defaults", async () => {
  const { engine, post } = setup();
  const messages = [{ role: "user", content: "Hi" }];
  const [status, body] = await post("/tokenize", { messages });
  assert.equal(status, 200);
  assert.deepEqual(body.tokens, codes("user: Hi\nassistant:"), "generation prompt on, special tokens off");
  const [, bare] = await post("/tokenize", {
    messages,
    add_generation_prompt: false,
    add_special_tokens: true,
  });
  assert.deepEqual(bare.tokens, [1, ...codes("user: Hi\n")]);
  engine.hasChatTemplate = false;
  const [noTemplate, err] = await post("/tokenize", { messages });
  assert.equal(noTemplate, 400);
  assert.equal(err.error.code, "no_chat_template");
});

Deno.test("POST /tokenize and /detokenize reject bad input with a 400 naming the field", async () => {
  const { engine, post } = setup();
  const cases: [string, unknown, string | null][] = [
    ["/tokenize", "[1]", null],
    ["/tokenize", {}, "prompt"],
    ["/tokenize", { prompt: 3 }, "prompt"],
    ["/tokenize", { prompt: "x", model: 1 }, "model"],
    ["/tokenize", { prompt: "x", add_special_tokens: "yes" }, "add_special_tokens"],
    ["/tokenize", { messages: [] }, "messages"],
    ["/tokenize", { messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
    [
      "/tokenize",
      {
        messages: [{ role: "user", content: "x" }],
        continue_final_message: true,
        add_generation_prompt: true,
      },
      "continue_final_message",
    ],
    ["/tokenize", { messages: [{ role: "user", content: "x" }], tools: [{}] }, "tools[0]"],
    ["/tokenize", { messages: [{ role: "user", content: "x" }], chat_template: "{{ x }}" }, "chat_template"],
    [
      "/tokenize",
      { messages: [{ role: "user", content: "x" }], chat_template_kwargs: 1 },
      "chat_template_kwargs",
    ],
    ["/detokenize", {}, "tokens"],
    ["/detokenize", { tokens: "1 2" }, "tokens"],
    ["/detokenize", { tokens: [1, -1] }, "tokens[1]"],
    ["/detokenize", { tokens: [1.5] }, "tokens[0]"],
    ["/detokenize", { tokens: [72, FAKE_VOCAB] }, "tokens[1]"], // the engine's check: outside the vocabulary
  ];
  for (const [path, body, param] of cases) {
    const [status, err] = await post(path, body);
    assert.equal(status, 400, `${path} ${JSON.stringify(body)}`);
    assert.equal(err.error.type, "invalid_request_error");
    assert.equal(err.error.param, param, `${path} ${JSON.stringify(body)}`);
  }
  assert.equal(engine.requests.length, 0);
});

Deno.test("POST /detokenize answers {prompt}", async () => {
  const { post } = setup();
  assert.deepEqual(await post("/detokenize", { model: "m", tokens: codes("Hello") }), [200, {
    prompt: "Hello",
  }]);
  assert.deepEqual(await post("/detokenize", { tokens: [] }), [200, { prompt: "" }]);
});

Deno.test("POST /tokenize is 503 while loading, and 501 for an engine without tokenize()", async () => {
  const { engine, post } = setup();
  engine.state = "loading";
  const [status, err] = await post("/tokenize", { prompt: "x" });
  assert.equal(status, 503);
  assert.equal(err.error.code, "model_loading");
  const fake = new FakeEngine();
  const app = createApp({
    engine: { status: () => fake.status(), generate: (r) => fake.generate(r) },
    config: {},
  });
  const res = await app.request("/detokenize", { method: "POST", body: '{"tokens": [1]}' });
  assert.equal(res.status, 501);
  assert.equal((await res.json()).error.code, "not_implemented");
});

Deno.test("GET /version reports deno.json's version and the runtime", async () => {
  const app = createApp({ engine: new FakeEngine(), config: {} });
  const res = await app.request("/version");
  assert.equal(res.status, 200);
  const body = await res.json();
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  assert.equal(body.version, denoJson.version);
  assert.match(body.version, /^\d+\.\d+\.\d+$/);
  assert.deepEqual(body.deno, {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
  });
  assert.equal(body.build.target, Deno.build.target);
});
