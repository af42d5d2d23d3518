import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import { parseChatRequest, parseCompletionRequest, samplingFromGenerationConfig } from "./protocol.ts";
import { verdict } from "../tests/_walk.ts";

const USER = [{ role: "user", content: "Hi" }];

/** Asserts that `fn` throws a 400 ApiError for `param` whose message matches `message`. */
function assertRejects400(fn: () => unknown, param: string | null, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ApiError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.type, "invalid_request_error");
    assert.equal(err.param, param);
    if (message) assert.match(err.message, message);
    return true;
  });
}

Deno.test("parseChatRequest() fills OpenAI's defaults for a minimal request", () => {
  assert.deepEqual(parseChatRequest({ messages: USER }), {
    request: {
      input: { kind: "chat", messages: USER },
      maxTokens: null,
      stop: [],
      sampling: { temperature: 1, topP: 1, topK: 0, minP: 0, seed: null },
    },
    stream: false,
    includeUsage: false,
    model: null,
    tools: null,
  });
});

Deno.test("parseChatRequest() resolves each field request → server → model → built-in", () => {
  const defaults = {
    server: { temperature: 0.5, seed: 9 },
    model: { temperature: 0.6, topP: 0.8, topK: 20 },
    maxTokens: 100,
  };
  const got = parseChatRequest({ messages: USER, top_k: 5 }, defaults).request;
  assert.deepEqual(got.sampling, { temperature: 0.5, topP: 0.8, topK: 5, minP: 0, seed: 9 });
  assert.equal(got.maxTokens, 100);
  // null means "not given" and falls through as well
  assert.equal(
    parseChatRequest({ messages: USER, temperature: null }, defaults).request.sampling.temperature,
    0.5,
  );
  assert.equal(
    parseChatRequest({ messages: USER, temperature: 0 }, defaults).request.sampling.temperature,
    0,
  );
});

Deno.test("parseChatRequest() reads every supported field", () => {
  const parsed = parseChatRequest({
    model: "x",
    messages: [
      { role: "developer", content: "Be brief" },
      { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }], name: "ann" },
      { role: "assistant", content: null },
      { role: "tool", content: "42" },
    ],
    max_tokens: 9,
    max_completion_tokens: 3,
    temperature: 2,
    top_p: 1,
    top_k: -1,
    min_p: 0.05,
    seed: -7,
    stop: ["\n", "END"],
    stream: true,
    stream_options: { include_usage: true },
    n: 1,
    presence_penalty: 0,
    frequency_penalty: 0,
    logprobs: false,
    response_format: { type: "text" },
    tools: [],
    tool_choice: "none",
    user: "ignored",
    some_future_field: { anything: true },
  });
  assert.deepEqual(parsed.request.input, {
    kind: "chat",
    messages: [
      { role: "system", content: "Be brief" },
      { role: "user", content: "a\nb" },
      { role: "assistant", content: "" },
      { role: "tool", content: "42" },
    ],
  });
  assert.equal(parsed.request.maxTokens, 3);
  assert.deepEqual(parsed.request.stop, ["\n", "END"]);
  // Seeds are taken mod 2^32 (the sampler's RNG is u32): −7 → 2^32 − 7.
  assert.deepEqual(parsed.request.sampling, {
    temperature: 2,
    topP: 1,
    topK: 0,
    minP: 0.05,
    seed: 4294967289,
  });
  assert.equal(parsed.stream, true);
  assert.equal(parsed.includeUsage, true);
  assert.equal(parsed.model, "x");
  assert.deepEqual(parseChatRequest({ messages: USER, stop: "###" }).request.stop, ["###"]);
});

Deno.test("parseChatRequest() rejects malformed messages", () => {
  assertRejects400(() => parseChatRequest([]), null, /JSON object/);
  assertRejects400(() => parseChatRequest({}), "messages");
  assertRejects400(() => parseChatRequest({ messages: [] }), "messages");
  assertRejects400(() => parseChatRequest({ messages: ["hi"] }), "messages[0]");
  assertRejects400(() => parseChatRequest({ messages: [{ content: "x" }] }), "messages[0].role");
  assertRejects400(() => parseChatRequest({ messages: [{ role: "user" }] }), "messages[0].content");
  const image = [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }];
  assertRejects400(() => parseChatRequest({ messages: image }), "messages[0].content[0]", /"image_url"/);
});

Deno.test("parseChatRequest() rejects out-of-range and unsupported options", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ model: 3 }, "model"],
    [{ temperature: -0.1 }, "temperature"],
    [{ temperature: 2.5 }, "temperature"],
    [{ temperature: "1" }, "temperature"],
    [{ top_p: 0 }, "top_p"],
    [{ top_p: 1.5 }, "top_p"],
    [{ top_k: 1.5 }, "top_k"],
    [{ top_k: -2 }, "top_k"],
    [{ min_p: 1.1 }, "min_p"],
    [{ seed: 0.5 }, "seed"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ max_completion_tokens: 2.5 }, "max_completion_tokens"],
    [{ stop: ["a", "b", "c", "d", "e"] }, "stop"],
    [{ stop: [""] }, "stop"],
    [{ stop: 5 }, "stop"],
    [{ stream: "yes" }, "stream"],
    [{ stream_options: { include_usage: true } }, "stream_options"],
    [{ stream: true, stream_options: { include_usage: 1 } }, "stream_options.include_usage"],
    [{ n: 0 }, "n"],
    [{ n: 1.5 }, "n"],
    [{ presence_penalty: 2.5 }, "presence_penalty"],
    [{ frequency_penalty: "1" }, "frequency_penalty"],
    [{ repetition_penalty: 0 }, "repetition_penalty"],
    [{ logprobs: 1 }, "logprobs"],
    [{ top_logprobs: 3 }, "top_logprobs"],
    [{ logprobs: true, top_logprobs: 21 }, "top_logprobs"],
    [{ logit_bias: { "42": 500 } }, "logit_bias.42"],
    [{ logit_bias: { "tok": 1 } }, "logit_bias.tok"],
    [{ logit_bias: [1] }, "logit_bias"],
    [{ min_tokens: -1 }, "min_tokens"],
    [{ ignore_eos: 1 }, "ignore_eos"],
    [{ stop_token_ids: [-1] }, "stop_token_ids"],
    [{ skip_special_tokens: "no" }, "skip_special_tokens"],
    [{ include_stop_str_in_output: 1 }, "include_stop_str_in_output"],
    [{ truncate_prompt_tokens: 0 }, "truncate_prompt_tokens"],
    [{ truncate_prompt_tokens: -2 }, "truncate_prompt_tokens"],
    [{ truncate_prompt_tokens: 2.5 }, "truncate_prompt_tokens"],
    [{ allowed_token_ids: [] }, "allowed_token_ids"],
    [{ allowed_token_ids: [3, -1] }, "allowed_token_ids"],
    [{ allowed_token_ids: "3" }, "allowed_token_ids"],
    [{ bad_words: "darn" }, "bad_words"],
    [{ use_beam_search: true }, "use_beam_search"],
    [{ add_special_tokens: "yes" }, "add_special_tokens"],
    [{ use_beam_search: "no" }, "use_beam_search"],
    [{ logits_processors: ["my.module:Proc"] }, "logits_processors"],
    [{ return_tokens_as_token_ids: 1 }, "return_tokens_as_token_ids"],
    [{ bad_words: ["darn", " "] }, "bad_words"],
    [{ bad_words: Array(65).fill("darn") }, "bad_words"],
    [{ bad_words: ["x".repeat(257)] }, "bad_words"],
    [{ prompt_logprobs: -1 }, "prompt_logprobs"],
    [{ prompt_logprobs: 21 }, "prompt_logprobs"],
    [{ prompt_logprobs: 2, stream: true }, "prompt_logprobs"],
    [{ cache_salt: "" }, "cache_salt"],
    [{ cache_salt: 7 }, "cache_salt"],
    [{ cache_salt: "x".repeat(1025) }, "cache_salt"],
    [{ seed: "1" }, "seed"],
    [{ response_format: "json" }, "response_format"],
    [{ response_format: { type: "xml" } }, "response_format.type"],
    [{ response_format: { type: "json_schema" } }, "response_format.json_schema"],
    [
      { response_format: { type: "json_schema", json_schema: { name: "a b", schema: {} } } },
      "response_format.json_schema.name",
    ],
    [
      {
        response_format: {
          type: "json_schema",
          json_schema: { name: "a", schema: { type: "string", format: "x" } },
        },
      },
      "response_format.json_schema.schema.format",
    ],
    [
      {
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "a",
            schema: { type: "object", properties: { n: { type: "integer", multipleOf: 3 } } },
          },
        },
      },
      "response_format.json_schema.schema.properties.n.multipleOf",
    ],
    [{ guided_json: "{not json" }, "guided_json"],
    [{ guided_regex: "a(" }, "guided_regex"],
    [{ guided_regex: "" }, "guided_regex"],
    [{ guided_grammar: "root ::= x" }, "guided_grammar"],
    [{ guided_grammar: "" }, "guided_grammar"],
    [{ structured_outputs: { grammar: "root ::= x" } }, "structured_outputs.grammar"],
    [{ structured_outputs: { lark: "start: x" } }, "structured_outputs.lark"],
    [{ grammar: 'root ::= "a' }, "grammar"],
    [{ grammar: ["root ::= x"] }, "grammar"],
    [{ guided_grammar: 'root ::= "a"', guided_regex: "a" }, "guided_grammar"],
    [
      { grammar: 'root ::= "a"', structured_outputs: { grammar: 'root ::= "a"' } },
      "structured_outputs.grammar",
    ],
    [{ structured_outputs: { regex: "(?=a)" } }, "structured_outputs.regex"],
    [{ structured_outputs: { choice: [] } }, "structured_outputs.choice"],
    [{ guided_choice: ["a", 1] }, "guided_choice"],
    [{ guided_choice: ["a"], guided_json: {} }, "guided_choice"],
    [{ response_format: { type: "json_object" }, guided_json: {} }, "guided_json"],
    [{ tools: [{ type: "function", function: { name: "f" } }], tool_choice: "anything" }, "tool_choice"],
    [{
      tools: [{ type: "function", function: { name: "f" } }],
      tool_choice: { type: "function", function: { name: "g" } },
    }, "tool_choice"],
    [{ tool_choice: { type: "function", function: { name: "f" } } }, "tool_choice"],
    [{ tools: { type: "function" } }, "tools"],
    [{ tools: [{ type: "retrieval" }] }, "tools[0]"],
    [{ tools: [{ type: "function", function: { name: "a.b" } }] }, "tools[0].function.name"],
    [
      { tools: [{ type: "function", function: { name: "f", parameters: "{}" } }] },
      "tools[0].function.parameters",
    ],
    [{ parallel_tool_calls: "no" }, "parallel_tool_calls"],
    [{ functions: [{ name: "f" }] }, "functions"],
    [
      { messages: [...USER, { role: "assistant", content: null, tool_calls: [{ id: "c", function: {} }] }] },
      "messages[1].tool_calls[0]",
    ],
    [
      {
        messages: [...USER, { role: "assistant", tool_calls: [{ function: { name: "f", arguments: {} } }] }],
      },
      "messages[1].tool_calls[0].function.arguments",
    ],
    [{ messages: [...USER, { role: "tool", content: "18 C", tool_call_id: 5 }] }, "messages[1].tool_call_id"],
    [{ chat_template_kwargs: [true] }, "chat_template_kwargs"],
    [
      { chat_template_kwargs: { add_generation_prompt: false } },
      "chat_template_kwargs.add_generation_prompt",
    ],
  ];
  for (const [extra, param] of cases) {
    assertRejects400(() => parseChatRequest({ messages: USER, ...extra }), param);
  }
  assertRejects400(
    () => parseChatRequest({ messages: USER, temperature: 9 }),
    "temperature",
    /"temperature" = 9/,
  );
  assertRejects400(() => parseChatRequest({ messages: USER, n: 129 }), "n", /from 1 to 128/);
});

Deno.test("parseCompletionRequest() reads a prompt and the shared fields", () => {
  const parsed = parseCompletionRequest({
    prompt: ["Once upon"],
    max_tokens: 4,
    temperature: 0,
    stream: true,
  });
  assert.deepEqual(parsed.request.input, { kind: "text", prompt: "Once upon" });
  assert.equal(parsed.request.maxTokens, 4);
  assert.equal(parsed.request.sampling.temperature, 0);
  assert.equal(parsed.stream, true);
  assert.equal(parseCompletionRequest({ prompt: "", echo: false, suffix: null }).request.input.kind, "text");
});

Deno.test("parseCompletionRequest(): max_tokens 0 asks for the prompt alone, with echo only", () => {
  const alone = parseCompletionRequest({ prompt: "a", echo: true, max_tokens: 0, logprobs: 1 }).request;
  assert.equal(alone.maxTokens, 0);
  assert.equal(alone.echo, true);
  assert.equal(alone.logprobs, 1);
  // max_completion_tokens wins over max_tokens, as everywhere
  assert.equal(
    parseCompletionRequest({ prompt: "a", echo: true, max_tokens: 0, max_completion_tokens: 3 })
      .request.maxTokens,
    3,
  );
  assertRejects400(() => parseCompletionRequest({ prompt: "a", max_tokens: 0 }), "max_tokens");
  assertRejects400(
    () => parseChatRequest({ messages: [{ role: "user", content: "a" }], max_tokens: 0 }),
    "max_tokens",
  );
});

Deno.test("parseCompletionRequest() takes a list of prompts, strings or token ids, each an input", () => {
  const texts = parseCompletionRequest({ prompt: ["a", "b"], n: 2 });
  assert.deepEqual(texts.inputs, [{ kind: "text", prompt: "a" }, { kind: "text", prompt: "b" }]);
  assert.deepEqual(texts.request.input, { kind: "text", prompt: "a" });
  assert.equal(texts.request.n, 2);
  const ids = parseCompletionRequest({ prompt: [[1, 2], [3]] });
  assert.deepEqual(ids.inputs, [{ kind: "tokens", ids: [1, 2] }, { kind: "tokens", ids: [3] }]);
  assert.equal(parseCompletionRequest({ prompt: ["one"] }).inputs, undefined, "a list of one is one prompt");
});

Deno.test("parseCompletionRequest() takes a prompt of token ids, alone or as the one prompt of a list", () => {
  for (const prompt of [[1, 403, 407], [[1, 403, 407]]]) {
    assert.deepEqual(parseCompletionRequest({ prompt }).request.input, {
      kind: "tokens",
      ids: [1, 403, 407],
    });
  }
  assert.deepEqual(parseCompletionRequest({ prompt: ["hi"] }).request.input, { kind: "text", prompt: "hi" });
});

Deno.test("parseCompletionRequest() rejects what it cannot serve", () => {
  assertRejects400(() => parseCompletionRequest({}), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: [] }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: ["a", [1]] }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: Array(257).fill("a") }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: [1, -2] }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: [1.5] }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: ["a", 1] }), "prompt");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", echo: 1 }), "echo");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", suffix: "z" }), "suffix");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", best_of: 2 }), "best_of");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", logprobs: 21 }), "logprobs");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", logprobs: true }), "logprobs");
  assertRejects400(() => parseCompletionRequest({ prompt: "a", n: 0 }), "n");
});

Deno.test("parse*Request() reads n, logprobs, penalties, logit_bias and vLLM's extensions", () => {
  const chat = parseChatRequest({
    messages: USER,
    n: 3,
    logprobs: true,
    top_logprobs: 5,
    presence_penalty: 0.5,
    frequency_penalty: -1,
    repetition_penalty: 1.2,
    logit_bias: { "42": 5, "7": -100 },
    min_tokens: 4,
    ignore_eos: true,
    stop_token_ids: [2, 3],
    cache_salt: "tenant-secret",
    max_tokens: 8,
    skip_special_tokens: false,
    include_stop_str_in_output: true,
    truncate_prompt_tokens: 100,
    allowed_token_ids: [5, 9],
    bad_words: [],
    prompt_logprobs: 0,
  }).request;
  assert.equal(chat.promptLogprobs, 0, "0 asks for each prompt token's own logprob");
  assert.equal(chat.badWords, undefined, "an empty bad_words bans nothing");
  assert.equal(chat.n, 3);
  assert.equal(chat.logprobs, 5);
  assert.deepEqual(chat.penalties, { presence: 0.5, frequency: -1, repetition: 1.2 });
  assert.deepEqual(chat.logitBias, [[7, -100], [42, 5]]); // integer keys come in ascending order
  assert.equal(chat.minTokens, 4);
  assert.equal(chat.ignoreEos, true);
  assert.deepEqual(chat.stopTokenIds, [2, 3]);
  assert.equal(chat.cacheSalt, "tenant-secret");
  assert.deepEqual(
    [chat.skipSpecialTokens, chat.includeStopStr, chat.truncatePromptTokens, chat.allowedTokenIds],
    [false, true, 100, [5, 9]],
  );
  // vLLM's add_special_tokens, include_reasoning and documents
  assert.equal(
    parseCompletionRequest({ prompt: "a", add_special_tokens: false }).request.addSpecialTokens,
    false,
  );
  assert.equal(parseChatRequest({ messages: USER }).request.addSpecialTokens, undefined);
  assert.equal(parseChatRequest({ messages: USER, include_reasoning: false }).includeReasoning, false);
  assert.equal(parseChatRequest({ messages: USER, include_reasoning: true }).includeReasoning, undefined);
  assertRejects400(() => parseChatRequest({ messages: USER, include_reasoning: 0 }), "include_reasoning");
  const docs = [{ title: "Paris", text: "The capital of France." }];
  const rag = parseChatRequest({ messages: USER, documents: docs, chat_template_kwargs: { x: 1 } }).request;
  assert.deepEqual(rag.input.kind === "chat" && rag.input.templateVars, { x: 1, documents: docs });
  assertRejects400(() => parseChatRequest({ messages: USER, documents: [{ title: 3 }] }), "documents");
  // vLLM's defaults of fields that change the answer pass; the rest are refused above and below
  const vllmOff = { use_beam_search: false, logits_processors: [], return_tokens_as_token_ids: false };
  assert.equal(parseCompletionRequest({ prompt: "a", ...vllmOff }).tokensAsIds, undefined);
  assert.equal(parseChatRequest({ messages: USER, return_tokens_as_token_ids: true }).tokensAsIds, true);
  assertRejects400(
    () => parseChatRequest({ messages: USER, chat_template: "{{ messages }}" }),
    "chat_template",
  );
  assertRejects400(
    () => parseChatRequest({ messages: USER, chat_template_kwargs: { chat_template: "x" } }),
    "chat_template_kwargs.chat_template",
  );
  const banned = parseCompletionRequest({ prompt: "a", bad_words: ["darn", " heck"] }).request;
  assert.deepEqual(banned.badWords, ["darn", " heck"]);
  const vllmDefaults = { skip_special_tokens: true, include_stop_str_in_output: false };
  const asVllm = parseCompletionRequest({ prompt: "a", ...vllmDefaults, truncate_prompt_tokens: -1 }).request;
  assert.deepEqual(
    [asVllm.skipSpecialTokens, asVllm.includeStopStr, asVllm.truncatePromptTokens],
    [undefined, undefined, -1],
  );
  const vars = parseChatRequest({ messages: USER, chat_template_kwargs: { enable_thinking: false } }).request;
  assert.deepEqual(vars.input, { kind: "chat", messages: USER, templateVars: { enable_thinking: false } });
  assert.equal(chat.maxTokensStrict, true);
  assert.equal(parseChatRequest({ messages: USER, logprobs: true }).request.logprobs, 0);
  assert.equal(parseChatRequest({ messages: USER, logprobs: false }).request.logprobs, undefined);
  const text = parseCompletionRequest({ prompt: "a", logprobs: 2, n: 2, best_of: 2 }).request;
  assert.equal(text.logprobs, 2);
  assert.equal(text.n, 2);
  // Defaults stay out of the request; a default max_tokens is capped later, not checked.
  const plain = parseCompletionRequest({ prompt: "a" }, { maxTokens: 50 }).request;
  assert.deepEqual(
    [plain.n, plain.logprobs, plain.penalties, plain.logitBias, plain.maxTokensStrict, plain.maxTokens],
    [undefined, undefined, undefined, undefined, undefined, 50],
  );
  // Any integer seed is accepted and mapped to a u32; never a 500.
  for (const [seed, want] of [[-1, 4294967295], [2 ** 63 - 1, 0], [2 ** 32 + 5, 5], [123, 123]]) {
    assert.equal(parseCompletionRequest({ prompt: "a", seed }).request.sampling.seed, want, `seed ${seed}`);
  }
});

Deno.test("parse*Request() compiles response_format, structured_outputs.json and guided_json", () => {
  const user = { messages: [{ role: "user", content: "Hi" }] };
  assert.equal(parseChatRequest({ ...user, response_format: { type: "text" } }).request.grammar, undefined);
  assert.ok(parseChatRequest({ ...user, response_format: { type: "json_object" } }).request.grammar);
  const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
  const rf = { type: "json_schema", json_schema: { name: "thing", schema, strict: true } };
  assert.ok(parseChatRequest({ ...user, response_format: rf }).request.grammar);
  assert.ok(parseCompletionRequest({ prompt: "x", response_format: rf }).request.grammar);
  assert.ok(parseCompletionRequest({ prompt: "x", structured_outputs: { json: schema } }).request.grammar);
  assert.ok(parseCompletionRequest({ prompt: "x", guided_json: JSON.stringify(schema) }).request.grammar);
  assert.ok(parseCompletionRequest({ prompt: "x", guided_choice: ["yes", "no"] }).request.grammar);
  assert.ok(parseCompletionRequest({ prompt: "x", guided_regex: "\\d{3}" }).request.grammar);
  assert.ok(parseChatRequest({ ...user, structured_outputs: { regex: "[a-z]+" } }).request.grammar);
  assert.ok(parseChatRequest({ ...user, structured_outputs: { choice: ["a", "b"] } }).request.grammar);
});

Deno.test("parse*Request() compiles GBNF grammars: structured_outputs.grammar, guided_grammar and grammar", () => {
  const user = { messages: [{ role: "user", content: "Hi" }] };
  const gbnf = 'root ::= "yes" | "no" | [0-9]{3}';
  for (
    const field of [{ structured_outputs: { grammar: gbnf } }, { guided_grammar: gbnf }, { grammar: gbnf }]
  ) {
    assert.ok(parseChatRequest({ ...user, ...field }).request.grammar, JSON.stringify(field));
    assert.ok(parseCompletionRequest({ prompt: "x", ...field }).request.grammar, JSON.stringify(field));
  }
  // llama-server's clients send an empty grammar for none.
  assert.equal(parseCompletionRequest({ prompt: "x", grammar: "" }).request.grammar, undefined);
  // A parse error is a 400 naming the field, with the line and column.
  assertRejects400(
    () => parseChatRequest({ ...user, guided_grammar: 'root ::= item+\nitem ::= "a" | ite' }),
    "guided_grammar",
    /line 2, column 16: undefined rule "ite"/,
  );
  assertRejects400(
    () => parseCompletionRequest({ prompt: "x", structured_outputs: { grammar: 'root ::= ("a" "b"' } }),
    "structured_outputs.grammar",
    /line 1, column 10: "\(" is not closed/,
  );
  assertRejects400(
    () => parseCompletionRequest({ prompt: "x", grammar: 'root ::= root "a" | "b"' }),
    "grammar",
    /line 1, column 10: rule "root" is left-recursive/,
  );
});

Deno.test("parse*Request() reads a grammar without ::= as Lark, in the same fields", () => {
  const user = { messages: [{ role: "user", content: "Hi" }] };
  // "::=" in a comment does not make it GBNF (vLLM's grammar_is_likely_lark).
  const lark = 'start: "yes" | "no" | INT  // not root ::= …\n%import common.INT\n%ignore " "';
  for (
    const field of [{ structured_outputs: { grammar: lark } }, { guided_grammar: lark }, { grammar: lark }]
  ) {
    const { grammar } = parseChatRequest({ ...user, ...field }).request;
    assert.ok(grammar && verdict(grammar, " 42 ") === "canEnd", JSON.stringify(field));
    assert.ok(parseCompletionRequest({ prompt: "x", ...field }).request.grammar, JSON.stringify(field));
  }
  // A bad Lark grammar is a 400 naming the field, with the line and column.
  assertRejects400(
    () => parseChatRequest({ ...user, guided_grammar: "start: item\nitem: /(?=a)a/" }),
    "guided_grammar",
    /Lark grammar at line 2, column 8: in the regex: lookaround "\(\?=…\)" is not supported/,
  );
  assertRejects400(
    () => parseCompletionRequest({ prompt: "x", structured_outputs: { grammar: 'root: "a"' } }),
    "structured_outputs.grammar",
    /line 1, column 1: the grammar has no "start" rule/,
  );
});

Deno.test("samplingFromGenerationConfig() maps HF fields and rejects bad values", () => {
  assert.deepEqual(samplingFromGenerationConfig(null), {});
  assert.deepEqual(samplingFromGenerationConfig({ bos_token_id: 1, eos_token_id: 2 }), {});
  assert.deepEqual(
    samplingFromGenerationConfig({ do_sample: true, temperature: 0.6, top_p: 0.9, top_k: 50, min_p: 0.1 }),
    { temperature: 0.6, topP: 0.9, topK: 50, minP: 0.1 },
  );
  assert.throws(() => samplingFromGenerationConfig({ top_p: 0 }), /generation_config\.json.*"top_p" = 0/);
  assert.throws(() => samplingFromGenerationConfig([]), /generation_config\.json/);
});

Deno.test("priority (vLLM's): any integer reaches the engine, 0 stays the default, anything else is a 400", () => {
  const chat = (priority: unknown) =>
    parseChatRequest({ messages: [{ role: "user", content: "x" }], priority });
  assert.equal(chat(-3).request.priority, -3);
  assert.equal(chat(2 ** 40).request.priority, 2 ** 40);
  assert.equal("priority" in chat(0).request, false);
  assert.equal(parseCompletionRequest({ prompt: "x", priority: 7 }).request.priority, 7);
  assertRejects400(() => chat(1.5), "priority");
  assertRejects400(() => chat("high"), "priority");
});

Deno.test("stream_options.continuous_usage_stats rides on include_usage; a non-boolean is a 400", () => {
  const parse = (so: Record<string, unknown>) =>
    parseCompletionRequest({ prompt: "x", stream: true, stream_options: so });
  assert.equal(parse({ include_usage: true, continuous_usage_stats: true }).continuousUsage, true);
  assert.equal(
    parse({ continuous_usage_stats: true }).continuousUsage,
    undefined,
    "without include_usage: none",
  );
  assertRejects400(() => parse({ continuous_usage_stats: "yes" }), "stream_options.continuous_usage_stats");
});
