import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

function setup() {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: { servedModelName: "served" } });
  // deno-lint-ignore no-explicit-any
  const post = async (body: unknown): Promise<[number, any]> => {
    const res = await app.request("/v1/embeddings", {
      method: "POST",
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return [res.status, await res.json()];
  };
  return { engine, post };
}

/** The fake's embedding of ids, L2-normalised (tests/_fake_engine.ts: count, first id, last id, 0). */
function unit(ids: number[]): number[] {
  const v = Float32Array.of(ids.length, ids[0], ids.at(-1)!, 0);
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return Array.from(v.map((x) => x / norm));
}

Deno.test("POST /v1/embeddings answers OpenAI's list of normalised embeddings, with usage", async () => {
  const { engine, post } = setup();
  const [status, body] = await post({ model: "m", input: "Hi" });
  assert.equal(status, 200);
  assert.deepEqual(body, {
    object: "list",
    data: [{ object: "embedding", index: 0, embedding: unit([1, 72, 105]) }],
    model: "served",
    usage: { prompt_tokens: 3, total_tokens: 3 },
  });
  // A list of strings, or of token-id lists: one embedding each, in order; usage sums them.
  const [, list] = await post({ input: ["a", "bcd"] });
  assert.deepEqual(list.data.map((d: { index: number }) => d.index), [0, 1]);
  assert.deepEqual(list.data[1].embedding, unit([1, 98, 99, 100]));
  assert.equal(list.usage.prompt_tokens, 6);
  const [, ids] = await post({ input: [[5, 6], [7]] });
  assert.deepEqual(ids.data.map((d: { embedding: number[] }) => d.embedding), [unit([5, 6]), unit([7])]);
  assert.deepEqual(engine.embedded.slice(-2), [{ kind: "tokens", ids: [5, 6] }, {
    kind: "tokens",
    ids: [7],
  }]);
  // A long list (more than a request keeps in the engine at once): every input, in order.
  const many = Array.from({ length: 300 }, (_, i) => [i + 1]);
  const [, all] = await post({ input: many });
  assert.deepEqual(all.data.map((d: { embedding: number[] }) => d.embedding), many.map(unit));
});

Deno.test("POST /v1/embeddings: base64, dimensions and vLLM's token options", async () => {
  const { post } = setup();
  const [, b64] = await post({ input: "Hi", encoding_format: "base64" });
  const bytes = Buffer.from(b64.data[0].embedding, "base64");
  const floats = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  assert.deepEqual(Array.from(floats), unit([1, 72, 105]), "little-endian f32 bytes");
  // dimensions: the first k values, normalised again
  const [, two] = await post({ input: "Hi", dimensions: 2 });
  const norm = Math.hypot(3, 1);
  assert.deepEqual(two.data[0].embedding, Array.from(Float32Array.of(3 / norm, 1 / norm)));
  const [, plain] = await post({ input: "Hi", add_special_tokens: false });
  assert.deepEqual(plain.data[0].embedding, unit([72, 105]));
  const [, cut] = await post({ input: [9, 8, 7, 6], truncate_prompt_tokens: 2 });
  assert.deepEqual(cut.data[0].embedding, unit([7, 6]));
  assert.equal(cut.usage.prompt_tokens, 2);
});

Deno.test("POST /v1/embeddings: vLLM's chat form renders messages without the generation prompt", async () => {
  const { engine, post } = setup();
  const messages = [{ role: "user", content: "Hi" }];
  const [status, body] = await post({ messages });
  assert.equal(status, 200);
  const text = "user: Hi\n"; // the fake's template, no "assistant:" and no BOS
  const ids = Array.from(text, (ch) => ch.charCodeAt(0));
  assert.deepEqual(body.data[0].embedding, unit(ids));
  assert.equal(body.usage.prompt_tokens, text.length);
  const [, prompted] = await post({ messages, add_generation_prompt: true, add_special_tokens: true });
  assert.deepEqual(
    prompted.data[0].embedding,
    unit([1, ...Array.from(text + "assistant:", (ch) => ch.charCodeAt(0))]),
  );
  assert.equal((await post({ messages, input: "x" }))[1].error.param, "messages");
  assert.equal((await post({ messages: [] }))[1].error.param, "messages");
  engine.hasChatTemplate = false;
  assert.equal((await post({ messages }))[1].error.code, "no_chat_template");
});

Deno.test("POST /v1/embeddings: bad input is a 400 naming the field", async () => {
  const { engine, post } = setup();
  const cases: [unknown, string][] = [
    [{}, "input"],
    [{ input: "" }, "input"],
    [{ input: [] }, "input"],
    [{ input: ["a", ""] }, "input"],
    [{ input: ["a", [1]] }, "input"],
    [{ input: [[1], []] }, "input"],
    [{ input: [-1] }, "input"],
    [{ input: Array.from({ length: 2049 }, () => "a") }, "input"],
    [{ input: "a", encoding_format: "float16" }, "encoding_format"],
    [{ input: "a", dimensions: 0 }, "dimensions"],
    [{ input: "a", dimensions: 1.5 }, "dimensions"],
    [{ input: "a", dimensions: 5 }, "dimensions"], // the fake's embeddings have 4 values
    [{ input: "a", model: 3 }, "model"],
    [{ input: "a", user: 3 }, "user"],
    [{ input: "a", add_special_tokens: "yes" }, "add_special_tokens"],
    [{ input: "a", truncate_prompt_tokens: 0 }, "truncate_prompt_tokens"],
    [{ input: "a".repeat(80) }, "input"], // past the fake's context of 64
    [{ input: ["a", "a".repeat(80)] }, "input[1]"], // in a list: that input
  ];
  for (const [body, param] of cases) {
    const [status, err] = await post(body);
    assert.equal(status, 400, JSON.stringify(body));
    assert.equal(err.error.param, param, JSON.stringify(body));
  }
  const [status] = await post("[1]");
  assert.equal(status, 400);
  engine.state = "loading";
  assert.equal((await post({ input: "a" }))[0], 503, "not before the model is ready");
});
