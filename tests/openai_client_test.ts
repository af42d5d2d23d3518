/**
 * The real server (real engine, real models, keys on) on a loopback port, driven by the official `openai`
 * package as a client would: completions on stories260K (a base model), chat on lq-49m, streaming with
 * include_usage, errors as the SDK's typed errors, auth, embeddings, plus /tokenize, /metrics and curl.
 */
import assert from "node:assert/strict";
import OpenAI, { AuthenticationError, BadRequestError, PermissionDeniedError } from "openai";
import { createEngine, loadModel } from "../inference/engine/mod.ts";
import { createApp } from "../server/app.ts";
import type { Gpu } from "../kernels/core/mod.ts";
import { parsePrometheus, sampleValue } from "./_prometheus.ts";
import { sharedPath, testGpu } from "./_gpu.ts";

const API_KEY = "sk-test-plain";
const ADMIN_KEY = "sk-test-admin";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Loads a model into a real engine and serves it with keys on; logs go to `lines`. */
async function serve(gpu: Gpu, dir: string, name: string) {
  const engine = createEngine(name, { log: () => {} });
  await engine.setModel(await loadModel(gpu, dir, { weightType: "f32", modelId: name }));
  const lines: string[] = [];
  const app = createApp({
    engine,
    config: { servedModelName: name, auth: { apiKeys: [API_KEY], adminKeys: [ADMIN_KEY] } },
    logRequest: (line) => lines.push(line),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const root = `http://127.0.0.1:${server.addr.port}`;
  const client = (apiKey = API_KEY) => new OpenAI({ apiKey, baseURL: `${root}/v1`, maxRetries: 0 });
  const post = (path: string, body: unknown) =>
    fetch(`${root}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify(body),
    });
  return { root, client, post, lines, stop: () => server.shutdown() };
}

async function rejection<T extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => T,
): Promise<T> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err}`);
    return err;
  }
  throw new Error(`expected ${type.name}, got a success`);
}

Deno.test("the openai package talks to leanserve: completions, streaming, errors, keys, tokenize, metrics", async (t) => {
  const dir = sharedPath("models/stories260K");
  const goldenPath = sharedPath("models/stories260K/golden_hf.json");
  if (!dir || !goldenPath) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const golden = JSON.parse(await Deno.readTextFile(goldenPath)).cases[0];
  const s = await serve(gpu, dir, "stories260K");
  try {
    const openai = s.client();
    let greedy = "";
    let badRequestId = "";
    await t.step("completions.create: greedy text is PyTorch's, with usage", async () => {
      const res = await openai.completions.create({
        model: "stories260K",
        prompt: golden.prompt,
        max_tokens: 8,
        temperature: 0,
      });
      greedy = res.choices[0].text;
      assert.ok(greedy.length > 0 && golden.greedy32_text.startsWith(greedy), JSON.stringify(greedy));
      assert.equal(res.choices[0].finish_reason, "length");
      assert.equal(res.model, "stories260K");
      assert.deepEqual(res.usage, {
        prompt_tokens: golden.ids.length,
        completion_tokens: 8,
        total_tokens: golden.ids.length + 8,
        prompt_tokens_details: { cached_tokens: 0 },
      });
    });
    await t.step(
      "completions.create with stream and include_usage: same text, a final usage chunk",
      async () => {
        const stream = await openai.completions.create({
          model: "stories260K",
          prompt: golden.prompt,
          max_tokens: 8,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = "";
        const chunks = [];
        for await (const chunk of stream) {
          chunks.push(chunk);
          text += chunk.choices[0]?.text ?? "";
        }
        assert.equal(text, greedy);
        const last = chunks.at(-1)!;
        assert.deepEqual(last.choices, []);
        assert.equal(last.usage?.completion_tokens, 8);
        assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
      },
    );
    await t.step(
      "a bad field is a BadRequestError with status, type, param, and the request id",
      async () => {
        const err = await rejection(
          openai.completions.create({ model: "x", prompt: "Hi", temperature: 5 }),
          BadRequestError,
        );
        assert.equal(err.status, 400);
        assert.equal(err.type, "invalid_request_error");
        assert.equal(err.param, "temperature");
        assert.match(err.requestID ?? "", UUID);
        badRequestId = err.requestID!;
        const tooLong = await rejection(
          openai.completions.create({ model: "x", prompt: "Hi", max_tokens: 100_000 }),
          BadRequestError,
        );
        assert.equal(tooLong.param, "max_tokens");
      },
    );
    await t.step(
      "a wrong key is an AuthenticationError; the admin API with a plain key a PermissionDeniedError",
      async () => {
        const err = await rejection(s.client("sk-wrong").models.list(), AuthenticationError);
        assert.equal(err.status, 401);
        assert.equal(err.code, "invalid_api_key");
        const denied = await rejection(openai.post("/quantize", { body: {} }), PermissionDeniedError);
        assert.equal(denied.status, 403);
        assert.equal(denied.code, "admin_key_required");
        // the admin key passes the check (what the route then answers is the admin API's business)
        const admin = await fetch(`${s.root}/v1/quantize`, {
          method: "POST",
          headers: { authorization: `Bearer ${ADMIN_KEY}` },
          body: "{}",
        });
        await admin.body?.cancel();
        assert.ok(![401, 403].includes(admin.status), `admin key got ${admin.status}`);
        assert.equal((await openai.models.list()).data[0].id, "stories260K");
      },
    );
    await t.step("/tokenize and /detokenize agree with Hugging Face's tokenizer", async () => {
      const tok = await (await s.post("/tokenize", { prompt: golden.prompt })).json();
      assert.deepEqual(tok, { count: golden.ids.length, max_model_len: 512, tokens: golden.ids });
      const detok = await (await s.post("/detokenize", { tokens: golden.ids })).json();
      assert.equal(detok.prompt, golden.decoded);
      const bad = await s.post("/detokenize", { tokens: [1, 512] });
      assert.equal(bad.status, 400);
      assert.equal((await bad.json()).error.param, "tokens[1]");
    });
    await t.step("curl sees the request id header and the key check", async () => {
      const curl = async (...args: string[]) =>
        new TextDecoder().decode(
          (await new Deno.Command("curl", { args: ["-sS", "-i", ...args] }).output()).stdout,
        );
      const ok = await curl(
        "-H",
        `Authorization: Bearer ${API_KEY}`,
        "-H",
        "x-request-id: curl-1",
        `${s.root}/v1/models`,
      );
      assert.match(ok, /^HTTP\/1\.1 200/);
      assert.match(ok, /\r\nx-request-id: curl-1\r\n/i);
      assert.match(await curl(`${s.root}/v1/models`), /^HTTP\/1\.1 401/);
      assert.match(await curl(`${s.root}/health`), /^HTTP\/1\.1 200/);
    });
    await t.step(
      "/metrics: strict exposition with the generations and the engine's real GPU bytes",
      async () => {
        const m = parsePrometheus(await (await fetch(`${s.root}/metrics`)).text());
        assert.equal(
          sampleValue(m, "leanserve_requests_total", { route: "/v1/completions", status: "200" }),
          2,
        );
        assert.equal(sampleValue(m, "leanserve_generation_tokens_total"), 16);
        assert.equal(sampleValue(m, "leanserve_time_to_first_token_seconds_count"), 2);
        assert.equal(sampleValue(m, "leanserve_prompt_tokens_total"), 2 * golden.ids.length);
        assert.equal(sampleValue(m, "leanserve_requests_running"), 0);
        // The default paged cache holds max-num-seqs (64) sequences of 512 positions: 2048 blocks of 16,
        // each 5 layers × K and V × kvDim 32 × 2 bytes (f16 cache) per position.
        assert.equal(sampleValue(m, "leanserve_kv_cache_blocks", { state: "used" }), 0);
        assert.equal(sampleValue(m, "leanserve_kv_cache_blocks", { state: "free" }), 64 * 512 / 16);
        assert.equal(
          sampleValue(m, "leanserve_gpu_bytes", { kind: "kv_cache" }),
          64 * 512 * 5 * 2 * 32 * 2,
        );
        const weights = sampleValue(m, "leanserve_gpu_bytes", { kind: "weights" })!;
        assert.ok(
          weights >= 260_000 * 4 && weights < 400_000 * 4,
          `weights ${weights} bytes for ~260K f32 params`,
        );
        assert.ok(sampleValue(m, "leanserve_gpu_bytes", { kind: "scratch" })! > 0);
        const info = {
          block_size: "16",
          num_gpu_blocks: String(64 * 512 / 16),
          cache_dtype: "f16",
          max_model_len: "512",
          enable_prefix_caching: "true",
        };
        assert.equal(sampleValue(m, "leanserve_cache_config_info", info), 1);
        assert.equal(sampleValue(m, "leanserve_request_success_total", { finished_reason: "length" }), 2);
      },
    );
    await t.step("one JSON log line per request, with the request id the client saw", () => {
      const logged = s.lines.map((l) => JSON.parse(l));
      const completions = logged.filter((l) => l.route === "/v1/completions" && l.status === 200);
      assert.equal(completions.length, 2);
      assert.ok(
        completions.every((l) => l.completion_tokens === 8 && l.ttft_ms > 0 && l.duration_ms >= l.ttft_ms),
      );
      const bad = logged.find((l) => l.id === badRequestId);
      assert.equal(bad?.status, 400);
      assert.equal(bad?.route, "/v1/completions");
    });
    await t.step("echo with logprobs: the prompt's tokens scored as generation scores them", async () => {
      const gen = await openai.completions.create({
        model: "stories260K",
        prompt: golden.ids,
        max_tokens: 7,
        temperature: 0,
        logprobs: 1,
      });
      const genLp = gen.choices[0].logprobs!;
      // The same ids again, now as the prompt's tail (the greedy ids PyTorch produced), echoed and scored.
      const ids = [...golden.ids, ...golden.greedy32_ids.slice(0, 6)];
      const res = await openai.completions.create({
        model: "stories260K",
        prompt: ids,
        max_tokens: 1,
        temperature: 0,
        logprobs: 1,
        echo: true,
      });
      const lp = res.choices[0].logprobs!;
      assert.equal(lp.tokens!.length, ids.length + 1);
      assert.equal(lp.token_logprobs![0], null);
      assert.equal(lp.top_logprobs![0], null);
      const { prompt } = await (await s.post("/detokenize", { tokens: ids })).json();
      assert.ok(res.choices[0].text.startsWith(prompt), "the decoded ids come first");
      for (let i = 0; i < 6; i++) {
        const at = golden.ids.length + i;
        assert.equal(lp.tokens![at], genLp.tokens![i]);
        assert.ok(Math.abs(lp.token_logprobs![at]! - genLp.token_logprobs![i]!) < 1e-3, `position ${at}`);
        assert.ok(lp.tokens![at] in lp.top_logprobs![at]!, "greedy ids are each position's best");
      }
      // the one greedy id (lm-evaluation-harness's loglikelihood request, answered from the scoring forward)
      // is generation's seventh
      assert.equal(lp.tokens![ids.length], genLp.tokens![6]);
      assert.ok(Math.abs(lp.token_logprobs![ids.length]! - genLp.token_logprobs![6]!) < 1e-3);
      assert.equal(res.usage?.completion_tokens, 1);
      // A text prompt comes back as sent, then the greedy text.
      const text = await openai.completions.create({
        model: "stories260K",
        prompt: golden.prompt,
        max_tokens: 8,
        temperature: 0,
        echo: true,
      });
      assert.equal(text.choices[0].text, golden.prompt + greedy);
      // max_tokens 0: the prompt alone, scored (as OpenAI's legacy API and vLLM answer it)
      const alone = await openai.completions.create({
        model: "stories260K",
        prompt: ids,
        max_tokens: 0,
        logprobs: 1,
        echo: true,
      });
      assert.equal(alone.choices[0].text, prompt);
      assert.deepEqual(alone.choices[0].logprobs!.token_logprobs, lp.token_logprobs!.slice(0, ids.length));
      assert.equal(alone.choices[0].finish_reason, "length");
      assert.equal(alone.usage?.completion_tokens, 0);
      // lm-evaluation-harness's batch: a list of prompts in one request, scored in one group, each as alone
      const batch = [ids, ids.slice(0, 9), golden.ids.slice(0, 5), ids.slice(3)];
      const harness = (prompt: number[] | number[][]) =>
        openai.completions.create({
          model: "stories260K",
          prompt,
          max_tokens: 1,
          temperature: 0,
          logprobs: 1,
          echo: true,
        });
      const together = await harness(batch);
      const apart = await Promise.all(batch.map((p) => harness(p)));
      assert.equal(together.choices.length, batch.length);
      together.choices.forEach((c, i) => {
        const one = apart[i].choices[0];
        assert.equal(c.index, i);
        assert.equal(c.text, one.text);
        assert.deepEqual(c.logprobs!.tokens, one.logprobs!.tokens);
        c.logprobs!.token_logprobs!.forEach((v, t) => {
          const w = one.logprobs!.token_logprobs![t];
          assert.ok(v === w || Math.abs(v! - w!) < 1e-5, `prompt ${i}, token ${t}: ${v} vs ${w}`);
        });
      });
      assert.equal(together.usage?.completion_tokens, batch.length);
    });
    await t.step(
      "prompt_logprobs (vLLM): each prompt token's logprob and rank, as echo scores them",
      async () => {
        const ids = [...golden.ids, ...golden.greedy32_ids.slice(0, 6)];
        const echoed = await openai.completions.create({
          model: "stories260K",
          prompt: ids,
          max_tokens: 1,
          temperature: 0,
          logprobs: 2,
          echo: true,
        });
        const lp = echoed.choices[0].logprobs!;
        // The SDK sends fields it does not know as they are, and returns them on the choice.
        const res = await openai.completions.create(
          {
            model: "stories260K",
            prompt: ids,
            max_tokens: 1,
            temperature: 0,
            prompt_logprobs: 2,
          } as Parameters<typeof openai.completions.create>[0] & { prompt_logprobs: number },
        );
        const scored = ((res as OpenAI.Completion).choices[0] as unknown as {
          prompt_logprobs:
            (Record<string, { logprob: number; rank: number; decoded_token: string }> | null)[];
        }).prompt_logprobs;
        assert.equal(scored.length, ids.length);
        assert.equal(scored[0], null);
        for (let t = 1; t < ids.length; t++) {
          const own = scored[t]![ids[t]];
          assert.equal(own.decoded_token, lp.tokens![t]);
          assert.ok(Math.abs(own.logprob - lp.token_logprobs![t]!) < 1e-6, `position ${t}`);
          assert.ok(own.rank >= 1);
          // the alternatives are echo's top two, ranked by place
          const alts = Object.entries(scored[t]!).filter(([id]) => Number(id) !== ids[t]);
          for (const [, alt] of alts) assert.equal(lp.top_logprobs![t]![alt.decoded_token], alt.logprob);
          assert.ok(alts.every(([, alt]) => alt.rank === 1 || alt.rank === 2));
        }
        // the greedy tail: each id was its position's likeliest
        for (let t = golden.ids.length; t < ids.length; t++) assert.equal(scored[t]![ids[t]].rank, 1);
        const err = await rejection(
          openai.completions.create(
            {
              model: "stories260K",
              prompt: ids,
              max_tokens: 1,
              stream: true,
              prompt_logprobs: 1,
            } as Parameters<typeof openai.completions.create>[0] & { prompt_logprobs: number },
          ),
          BadRequestError,
        );
        assert.equal(err.param, "prompt_logprobs");
      },
    );
    await t.step("return_tokens_as_token_ids (vLLM): logprobs name each token by its id", async () => {
      const res = await openai.completions.create(
        {
          model: "stories260K",
          prompt: golden.ids,
          max_tokens: 4,
          temperature: 0,
          logprobs: 2,
          return_tokens_as_token_ids: true,
        } as OpenAI.CompletionCreateParamsNonStreaming & { return_tokens_as_token_ids: boolean },
      );
      const lp = res.choices[0].logprobs!;
      assert.deepEqual(lp.tokens, golden.greedy32_ids.slice(0, 4).map((id: number) => `token_id:${id}`));
      for (const top of lp.top_logprobs!) {
        assert.ok(Object.keys(top!).every((k) => /^token_id:\d+$/.test(k)), JSON.stringify(top));
      }
      assert.ok(greedy.startsWith(res.choices[0].text), "the text stays text");
    });
    // Last: the log and metrics steps above count the earlier requests.
    await t.step(
      "completions.create with a prompt of token ids: the same text; an id past the vocabulary is a 400",
      async () => {
        const res = await openai.completions.create({
          model: "stories260K",
          prompt: golden.ids,
          max_tokens: 8,
          temperature: 0,
        });
        assert.equal(res.choices[0].text, greedy);
        assert.equal(res.usage?.prompt_tokens, golden.ids.length);
        const err = await rejection(
          openai.completions.create({ model: "stories260K", prompt: [1, 403, 100_000], max_tokens: 2 }),
          BadRequestError,
        );
        assert.equal(err.param, "prompt[2]");
      },
    );
    await t.step(
      "completions.create with a list of prompts: each choice is its prompt's own answer",
      async () => {
        const other = "Lily had a red ball";
        const alone = await openai.completions.create({
          model: "stories260K",
          prompt: other,
          max_tokens: 8,
          temperature: 0,
        });
        const res = await openai.completions.create({
          model: "stories260K",
          prompt: [golden.prompt, other],
          max_tokens: 8,
          temperature: 0,
        });
        assert.deepEqual(res.choices.map((c) => [c.index, c.text]), [[0, greedy], [
          1,
          alone.choices[0].text,
        ]]);
        assert.equal(res.usage?.prompt_tokens, golden.ids.length + alone.usage!.prompt_tokens);
        assert.equal(res.usage?.completion_tokens, 16);
      },
    );
    await t.step("stream_options.continuous_usage_stats: every chunk carries the usage so far", async () => {
      const stream = await openai.completions.create({
        model: "stories260K",
        prompt: golden.prompt,
        max_tokens: 8,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true, continuous_usage_stats: true },
      } as OpenAI.CompletionCreateParamsStreaming);
      const usages = [];
      for await (const chunk of stream) usages.push(chunk.usage!);
      assert.ok(
        usages.every((u) => u.prompt_tokens === golden.ids.length),
        "the prompt from the first chunk on",
      );
      const done = usages.map((u) => u.completion_tokens);
      assert.ok(done.every((c, i) => i === 0 || c >= done[i - 1]), `nondecreasing: ${done}`);
      assert.ok(done.some((c) => c > 0 && c < 8), `counts as tokens arrive: ${done}`);
      assert.equal(usages.at(-1)!.completion_tokens, 8);
      assert.equal(usages.at(-1)!.total_tokens, golden.ids.length + 8);
    });
    await t.step("embeddings.create: unit vectors of the model's width, base64 as float", async () => {
      const texts = [golden.prompt, "Lily and Ben went to the park."];
      // The package asks for base64 and decodes it; float is the JSON list.
      const b64 = await openai.embeddings.create({ model: "stories260K", input: texts });
      const float = await openai.embeddings.create({
        model: "stories260K",
        input: texts,
        encoding_format: "float",
      });
      assert.equal(b64.object, "list");
      assert.equal(b64.model, "stories260K");
      const ids = await Promise.all(
        texts.map(async (prompt) => (await (await s.post("/tokenize", { prompt })).json()).count),
      );
      assert.deepEqual(b64.usage, { prompt_tokens: ids[0] + ids[1], total_tokens: ids[0] + ids[1] });
      assert.deepEqual(b64.data.map((d) => d.embedding), float.data.map((d) => d.embedding));
      for (const { embedding } of b64.data) {
        assert.equal(embedding.length, 64, "stories260K's hidden size");
        assert.ok(Math.abs(Math.hypot(...embedding) - 1) < 1e-5);
      }
      assert.notDeepEqual(b64.data[0].embedding, b64.data[1].embedding);
      const alone = await openai.embeddings.create({
        model: "stories260K",
        input: texts[1],
        encoding_format: "float",
      });
      const [a, b] = [alone.data[0].embedding, float.data[1].embedding];
      assert.ok(a.every((x, i) => Math.abs(x - b[i]) < 1e-5), "alone as in a batch");
      const short = await openai.embeddings.create({ model: "stories260K", input: texts[1], dimensions: 8 });
      assert.equal(short.data[0].embedding.length, 8);
      const err = await rejection(
        openai.embeddings.create({ model: "stories260K", input: "" }),
        BadRequestError,
      );
      assert.equal(err.param, "input");
    });
  } finally {
    await s.stop();
    gpu.device.destroy();
  }
});

Deno.test("the openai package chats with lq-49m, streaming with usage", async (t) => {
  const dir = sharedPath("models/lq-49m");
  const goldenPath = sharedPath("models/lq-49m/golden.json");
  if (!dir || !goldenPath) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const chat = JSON.parse(await Deno.readTextFile(goldenPath)).chat;
  const s = await serve(gpu, dir, "lq-49m");
  try {
    const openai = s.client();
    let reply = "";
    await t.step("chat.completions.create: PyTorch's greedy reply begins the same", async () => {
      const res = await openai.chat.completions.create({
        model: "lq-49m",
        messages: chat.messages,
        max_tokens: 4,
        temperature: 0,
      });
      reply = res.choices[0].message.content ?? "";
      assert.equal(res.choices[0].message.role, "assistant");
      assert.ok(
        reply.length > 0 && chat.greedy_reply_text_skip_special.startsWith(reply),
        JSON.stringify(reply),
      );
      assert.equal(res.usage?.prompt_tokens, chat.ids.length);
      assert.equal(res.usage?.completion_tokens, 4);
      assert.equal(res.usage?.prompt_tokens_details?.cached_tokens, 0, "a first request finds no prefix");
    });
    await t.step("chat streaming with include_usage: role first, same text, usage last", async () => {
      const stream = await openai.chat.completions.create({
        model: "lq-49m",
        messages: chat.messages,
        max_tokens: 4,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      assert.equal(chunks[0].choices[0].delta.role, "assistant");
      assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""), reply);
      assert.equal(chunks.at(-1)!.usage?.total_tokens, chat.ids.length + 4);
      // The same conversation again: its full blocks of 16 ids come from the prefix cache, and its
      // last id is prefilled (its row gives the first sampled id).
      const cached = Math.floor((chat.ids.length - 1) / 16) * 16;
      assert.ok(cached > 0);
      assert.equal(chunks.at(-1)!.usage?.prompt_tokens_details?.cached_tokens, cached);
    });
    await t.step("continue_final_message: the answer goes on from the client's start of it", async () => {
      const messages = [...chat.messages, { role: "assistant", content: "Once upon a time, " }];
      const body = { messages, continue_final_message: true, add_generation_prompt: false };
      const res = await openai.chat.completions.create({
        model: "lq-49m",
        max_tokens: 6,
        temperature: 0,
        ...body,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      // The same ids as a raw completion of the prompt /tokenize renders for it.
      const tok = await (await s.post("/tokenize", body)).json();
      assert.ok(tok.tokens.length > chat.ids.length);
      const raw = await openai.completions.create({
        model: "lq-49m",
        prompt: tok.tokens,
        max_tokens: 6,
        temperature: 0,
      });
      assert.equal(res.choices[0].message.content, raw.choices[0].text);
      assert.equal(res.usage?.prompt_tokens, tok.tokens.length);
      const both = await s.post("/v1/chat/completions", { ...body, add_generation_prompt: true });
      assert.equal(both.status, 400);
      assert.equal((await both.json()).error.param, "continue_final_message");
      const notAssistant = await s.post("/v1/chat/completions", { ...body, messages: chat.messages });
      assert.equal(notAssistant.status, 400);
      assert.equal((await notAssistant.json()).error.param, "continue_final_message");
    });
    await t.step("/tokenize renders the chat template exactly as transformers does", async () => {
      const tok = await (await s.post("/tokenize", { messages: chat.messages })).json();
      assert.deepEqual(tok.tokens, chat.ids);
      assert.equal(tok.max_model_len, 1024);
    });
    await t.step(
      "/v1/embeddings of messages: the template's ids, without the generation prompt",
      async () => {
        const ids =
          (await (await s.post("/tokenize", { messages: chat.messages, add_generation_prompt: false }))
            .json()).tokens;
        const fromChat = await (await s.post("/v1/embeddings", { messages: chat.messages })).json();
        const fromIds = await (await s.post("/v1/embeddings", { input: ids })).json();
        assert.equal(fromChat.usage.prompt_tokens, ids.length);
        assert.equal(fromChat.data[0].embedding.length, 512, "lq-49m's hidden size");
        assert.deepEqual(fromChat.data[0].embedding, fromIds.data[0].embedding);
      },
    );
    await t.step("response_format json_schema: the reply parses and fits the schema", async () => {
      const person = {
        type: "object",
        properties: { name: { type: "string", maxLength: 24 }, age: { type: "integer" } },
        required: ["name", "age"],
        additionalProperties: false,
      };
      const res = await openai.chat.completions.create({
        model: "lq-49m",
        messages: [{ role: "user", content: "Describe a person as JSON with their name and age." }],
        max_tokens: 80,
        temperature: 0,
        response_format: {
          type: "json_schema",
          json_schema: { name: "person", schema: person, strict: true },
        },
      });
      const content = res.choices[0].message.content ?? "";
      assert.equal(res.choices[0].finish_reason, "stop", content);
      const value = JSON.parse(content);
      assert.deepEqual(Object.keys(value), ["name", "age"]);
      assert.ok(typeof value.name === "string" && value.name.length <= 24 && Number.isInteger(value.age));
    });
    await t.step(
      "responses.create: PyTorch's greedy reply as output_text; text.format json_schema holds",
      async () => {
        const res = await openai.responses.create({
          model: "lq-49m",
          input: chat.messages,
          max_output_tokens: 4,
          temperature: 0,
        });
        assert.equal(res.output_text, reply, "the chat turn's answer");
        assert.equal(res.status, "incomplete");
        assert.equal(res.usage?.input_tokens, chat.ids.length);
        const scored = await openai.responses.create({
          model: "lq-49m",
          input: chat.messages,
          max_output_tokens: 4,
          temperature: 0,
          include: ["message.output_text.logprobs"],
          top_logprobs: 2,
        });
        const part = scored.output.find((o) => o.type === "message")!;
        assert.ok(part.type === "message" && part.content[0].type === "output_text");
        const lps = part.content[0].logprobs!;
        assert.equal(lps.map((l) => l.token).join(""), reply);
        assert.ok(
          lps.every((l) => l.top_logprobs.length === 2 && l.top_logprobs[0].logprob >= l.logprob - 1e-6),
        );
        const person = {
          type: "object",
          properties: { name: { type: "string", maxLength: 24 }, age: { type: "integer" } },
          required: ["name", "age"],
          additionalProperties: false,
        };
        const shaped = await openai.responses.create({
          model: "lq-49m",
          input: "Describe a person as JSON with their name and age.",
          max_output_tokens: 80,
          temperature: 0,
          text: { format: { type: "json_schema", name: "person", schema: person, strict: true } },
        });
        assert.equal(shaped.status, "completed", shaped.output_text);
        const value = JSON.parse(shaped.output_text);
        assert.deepEqual(Object.keys(value), ["name", "age"]);
      },
    );
    await t.step("response_format json_object, streamed: the deltas join into one JSON object", async () => {
      const stream = await openai.chat.completions.create({
        model: "lq-49m",
        messages: [{ role: "user", content: "List three colors as a JSON object." }],
        max_tokens: 120,
        temperature: 0,
        stream: true,
        response_format: { type: "json_object" },
      });
      let text = "";
      let finish: string | null = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, "stop", text);
      const value = JSON.parse(text);
      assert.ok(typeof value === "object" && value !== null && !Array.isArray(value), text);
    });
    await t.step("response_format with a keyword leanserve cannot enforce: a 400 naming it", async () => {
      const err = await rejection(
        openai.chat.completions.create({
          model: "lq-49m",
          messages: chat.messages,
          response_format: {
            type: "json_schema",
            json_schema: {
              name: "x",
              schema: { type: "object", properties: { d: { type: "string", format: "iri" } } },
            },
          },
        }),
        BadRequestError,
      );
      assert.equal(err.param, "response_format.json_schema.schema.properties.d.format");
    });
    await t.step(
      "a GBNF grammar (structured_outputs, llama-server's grammar): the reply matches it",
      async () => {
        const grammar = 'root ::= answer "."?\nanswer ::= "yes" | "no" | [0-9]{3}';
        const body = {
          model: "lq-49m",
          messages: [{ role: "user", content: "Is the sky blue? Answer yes or no." }],
          max_tokens: 8,
          temperature: 0,
          structured_outputs: { grammar },
        };
        const res = await openai.chat.completions.create(
          body as OpenAI.ChatCompletionCreateParamsNonStreaming,
        );
        const content = res.choices[0].message.content ?? "";
        assert.match(content, /^(yes|no|[0-9]{3})\.?$/);
        assert.equal(res.choices[0].finish_reason, "stop", content);
        const plain = await s.post("/v1/chat/completions", {
          ...body,
          structured_outputs: undefined,
          grammar,
        });
        assert.equal((await plain.json()).choices[0].message.content, content);
        const bad = await s.post("/v1/chat/completions", {
          ...body,
          structured_outputs: { grammar: "root ::= maybe" },
        });
        assert.equal(bad.status, 400);
        const { error } = await bad.json();
        assert.equal(error.param, "structured_outputs.grammar");
        assert.match(error.message, /line 1, column 10: undefined rule "maybe"/);
      },
    );
    await t.step("tools: a 400 naming them, since lq-49m's template renders no tool calls", async () => {
      const err = await rejection(
        openai.chat.completions.create({
          model: "lq-49m",
          messages: chat.messages,
          tools: [{ type: "function", function: { name: "get_weather" } }],
        }),
        BadRequestError,
      );
      assert.equal(err.param, "tools");
      const tok = await s.post("/tokenize", {
        messages: chat.messages,
        tools: [{ type: "function", function: { name: "get_weather" } }],
      });
      assert.equal(tok.status, 400);
      assert.equal((await tok.json()).error.param, "tools");
    });
  } finally {
    await s.stop();
    gpu.device.destroy();
  }
});
