import assert from "node:assert/strict";
import { join } from "node:path";
import { compileChatTemplate, loadChatTemplate } from "./chat_template.ts";
import { sharedPath } from "../../tests/_gpu.ts";

Deno.test("loadChatTemplate() renders lq-49m's ChatML exactly as transformers did", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const golden = JSON.parse(await Deno.readTextFile(join(dir, "golden.json"))).chat;
  const template = await loadChatTemplate(dir);
  assert.ok(template);
  const got = template.render(golden.messages, { addGenerationPrompt: golden.add_generation_prompt });
  assert.equal(got, golden.rendered);
  // without the generation prompt the assistant header is gone; without a system turn the default one appears
  assert.ok(!template.render(golden.messages).endsWith("<|im_start|>assistant\n"));
  assert.ok(
    template.render([{ role: "user", content: "x" }]).startsWith("<|im_start|>system\nYou are a helpful AI"),
  );
});

Deno.test("loadChatTemplate() renders Qwen3's template, thinking switch included", async () => {
  const dir = sharedPath("tokenizers/qwen3");
  if (!dir) return;
  const template = await loadChatTemplate(dir);
  assert.ok(template);
  const messages = [
    { role: "system", content: "Be terse." },
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "<think>\nadd\n</think>\n\n4" },
    { role: "user", content: "3+3?" },
  ];
  const text = template.render(messages, { addGenerationPrompt: true });
  assert.ok(
    text.startsWith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"),
    text,
  );
  // earlier turns lose their reasoning; the prompt ends with the assistant header
  assert.ok(text.includes("<|im_start|>assistant\n4<|im_end|>\n"), text);
  assert.ok(text.endsWith("<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n"), text);
  const noThink = template.render(messages, { addGenerationPrompt: true, extra: { enable_thinking: false } });
  assert.equal(noThink, text + "<think>\n\n</think>\n\n");
});

Deno.test("Qwen3's template renders tools, an assistant's call and the tool's answer in the hermes form", async () => {
  const dir = sharedPath("tokenizers/qwen3");
  if (!dir) return;
  const template = await loadChatTemplate(dir);
  assert.ok(template);
  assert.equal(template.toolCallFormat, "hermes");
  // Qwen3 knows <think> blocks; its generation prompt leaves the model to open one.
  assert.deepEqual(template.thinking, { opensInPrompt: false });
  const tools = [{
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  }];
  const call = {
    id: "call_1",
    type: "function" as const,
    function: { name: "get_weather", arguments: { city: "Paris" } },
  };
  const messages = [
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: "", tool_calls: [call] },
    { role: "tool", content: "18 C", tool_call_id: "call_1" },
  ];
  // What the template's source writes (json.dumps spacing for `tojson`, as transformers renders it).
  const want = "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user " +
    "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", ' +
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n' +
    "</tools>\n\nFor each function call, return a json object with function name and arguments within " +
    "<tool_call></tool_call> XML tags:\n<tool_call>\n" +
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
    "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n" +
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
    "<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
  assert.equal(template.render(messages, { addGenerationPrompt: true, tools }), want);
  // No tools, or an empty list: the plain system-less prompt.
  const plain = template.render([messages[0]], { addGenerationPrompt: true, tools: [] });
  assert.equal(plain, "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n");
});

Deno.test("loadChatTemplate() returns null for a base model without a template", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  assert.equal(await loadChatTemplate(dir), null);
});

Deno.test("loadChatTemplate() prefers chat_template.jinja and picks the default of a named list", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = {
      bos_token: { content: "<s>", lstrip: false },
      eos_token: "</s>",
      chat_template: [
        { name: "tool_use", template: "TOOLS" },
        { name: "default", template: "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}" },
      ],
    };
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    const listed = await loadChatTemplate(dir);
    assert.equal(listed?.render([{ role: "user", content: "hi" }]), "<s>hi</s>");
    assert.equal(listed?.render([{ role: "user", content: "hi" }], { bosToken: "[B]" }), "[B]hi</s>");

    await Deno.writeTextFile(join(dir, "chat_template.jinja"), "J:{{ messages | length }}");
    assert.equal((await loadChatTemplate(dir))?.render([{ role: "user", content: "a" }]), "J:1");
    await Deno.remove(join(dir, "chat_template.jinja"));

    config.chat_template = [{ name: "tool_use", template: "TOOLS" }];
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    await assert.rejects(loadChatTemplate(dir), /no "default" among "tool_use"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileChatTemplate() reports syntax errors and the template's own exceptions", () => {
  assert.throws(() => compileChatTemplate("{% for m in messages %}"), /Cannot compile the chat template/);
  const t = compileChatTemplate(
    "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok",
  );
  assert.equal(t.render([{ role: "user", content: "a" }]), "ok");
  assert.throws(
    () => t.render([{ role: "assistant", content: "a" }]),
    /^Error: Cannot render the chat template: .*Conversation must start with user/,
  );
});

Deno.test("compileChatTemplate() sees a generation prompt that opens a <think> block", () => {
  const r1 = compileChatTemplate(
    "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}A: <think>\n{% endif %}" +
      "{# answers: ...</think> #}",
  );
  assert.deepEqual(r1.thinking, { opensInPrompt: true });
  assert.equal(compileChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}").thinking, null);
});

Deno.test("a Llama 3.1-style template (tools under Environment: ipython, calls as name/parameters) is llama3_json", () => {
  // The parts of Meta's Llama 3.1 template that say how tools and calls look (abridged).
  const source = `{{- bos_token }}{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
{%- for message in messages %}{%- if 'tool_calls' in message %}{%- set tool_call = message.tool_calls[0].function %}
{{- '{"name": "' + tool_call.name + '", ' }}{{- '"parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}
{%- else %}{{- message.content }}{%- endif %}{%- endfor %}`;
  const t = compileChatTemplate(source);
  assert.equal(t.toolCallFormat, "llama3_json");
  const out = t.render(
    [{
      role: "assistant",
      content: "",
      tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: { x: 1 } } }],
    }],
    { tools: [{ type: "function", function: { name: "f" } }] },
  );
  assert.ok(out.includes('{"name": "f", "parameters": {"x": 1}}'), out);
});

Deno.test("a Mistral template (calls after [TOOL_CALLS] as one JSON list) is mistral", () => {
  // The parts of Mistral's v0.3 template that say how tools and calls look (abridged).
  const source = `{%- for message in messages %}{%- if message.role == "user" %}
{%- if tools is not none %}{{- "[AVAILABLE_TOOLS] " + tools | tojson + "[/AVAILABLE_TOOLS]" }}{%- endif %}
{{- "[INST] " + message.content + "[/INST]" }}{%- elif message.tool_calls is defined %}{{- "[TOOL_CALLS] [" }}
{%- for tool_call in message.tool_calls %}{{- '{"name": "' + tool_call.function.name + '", "arguments": ' }}
{{- tool_call.function.arguments | tojson + "}" }}{%- if not loop.last %}{{- ", " }}{%- endif %}{%- endfor %}
{{- "]" + eos_token }}{%- endif %}{%- endfor %}`;
  const t = compileChatTemplate(source, { eosToken: "</s>" });
  assert.equal(t.toolCallFormat, "mistral");
  const out = t.render(
    [{
      role: "assistant",
      content: "",
      tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: { x: 1 } } }],
    }],
    { tools: [{ type: "function", function: { name: "f" } }] },
  );
  assert.ok(out.includes('[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}]</s>'), out);
});

Deno.test("a Mistral tokenizer v11 template (each call [TOOL_CALLS]name[ARGS]{…}, [CALL_ID] or not) is mistral_args", () => {
  // The parts of Mistral Small 3.2's template that say how tools and calls look (abridged); other templates
  // of tokenizer v11 on may put `[CALL_ID]` and the call's id before [ARGS].
  const template = (callId: string) =>
    `{%- if tools %}{{- "[AVAILABLE_TOOLS]" + tools | tojson + "[/AVAILABLE_TOOLS]" }}{%- endif %}
{%- for message in messages %}{%- if message.role == "user" %}{{- "[INST]" + message.content + "[/INST]" }}
{%- elif message.role == "assistant" %}{{- message.content }}{%- for tool in message.tool_calls %}
{%- set arguments = tool.function.arguments %}{%- if arguments is not string %}{%- set arguments = arguments | tojson %}
{%- endif %}{{- "[TOOL_CALLS]" + tool.function.name + ${callId}"[ARGS]" + arguments }}{%- endfor %}{{- eos_token }}
{%- elif message.role == "tool" %}{{- "[TOOL_RESULTS]" + message.content + "[/TOOL_RESULTS]" }}{%- endif %}
{%- endfor %}`;
  const messages = [
    { role: "user", content: "Weather?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [
        { id: "a1b2c3d4e", type: "function" as const, function: { name: "f", arguments: { x: 1 } } },
        { id: "f5g6h7i8j", type: "function" as const, function: { name: "g", arguments: "{}" } },
      ],
    },
    { role: "tool", content: "18 C", tool_call_id: "a1b2c3d4e" },
  ];
  const tools = [{ type: "function", function: { name: "f" } }];
  const small = compileChatTemplate(template(""), { eosToken: "</s>" });
  assert.equal(small.toolCallFormat, "mistral_args");
  assert.equal(
    small.render(messages, { tools }),
    '[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "f"}}][/AVAILABLE_TOOLS][INST]Weather?[/INST]' +
      '[TOOL_CALLS]f[ARGS]{"x": 1}[TOOL_CALLS]g[ARGS]{}</s>[TOOL_RESULTS]18 C[/TOOL_RESULTS]',
  );
  const withIds = compileChatTemplate(template('"[CALL_ID]" + tool.id + '), { eosToken: "</s>" });
  assert.equal(withIds.toolCallFormat, "mistral_args");
  assert.ok(withIds.render(messages, { tools }).includes('[TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{"x": 1}'));
});

Deno.test("continueFinalMessage ends the text after the final message's content, as transformers does", () => {
  const chatml = compileChatTemplate(
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
  );
  const chat = (answer: string) => [{ role: "user", content: "Hi" }, { role: "assistant", content: answer }];
  const opts = { continueFinalMessage: true, addGenerationPrompt: true };
  // The template keeps the trailing space: the text ends with it (the model goes on after "Sure, ").
  assert.equal(
    chatml.render(chat("Sure, "), opts),
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nSure, ",
  );
  // The last occurrence counts: the same words earlier in the chat do not cut it short.
  const twice = [{ role: "user", content: "Say ok" }, { role: "assistant", content: "ok" }];
  assert.ok(chatml.render([...twice, ...twice], opts).endsWith("<|im_start|>assistant\nok"));
  // A template that trims contents: the text ends at the trimmed content.
  const trimming = compileChatTemplate(
    "{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\n{% endfor %}",
  );
  assert.equal(trimming.render(chat("  Sure,  "), opts), "[user] Hi\n[assistant] Sure,");
  // A content the template does not show, or an empty one, cannot be continued.
  const hiding = compileChatTemplate("{% for m in messages %}{{ m.role }}\n{% endfor %}");
  assert.throws(() => hiding.render(chat("Sure"), opts), /Cannot continue the final message/);
  assert.throws(() => chatml.render(chat(""), opts), /Cannot continue the final message/);
});

Deno.test("loadChatTemplate() with --chat-template: a file or the template itself replaces the folder's", async () => {
  const dir = sharedPath("models/stories260K"); // a base model: no template of its own
  const chatml = sharedPath("models/lq-49m");
  if (!dir || !chatml) return;
  assert.equal(await loadChatTemplate(dir), null);
  const inline = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}" +
    "{% if add_generation_prompt %}[assistant] {% endif %}";
  const messages = [{ role: "user", content: "Hi" }];
  const given = await loadChatTemplate(dir, inline);
  assert.equal(given?.render(messages, { addGenerationPrompt: true }), "[user] Hi\n[assistant] ");
  // A file's text, over a folder's own template (lq-49m's ChatML), with the folder's special tokens.
  const file = await Deno.makeTempFile({ suffix: ".jinja" });
  try {
    await Deno.writeTextFile(file, "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}");
    const fromFile = await loadChatTemplate(chatml, file);
    assert.equal(fromFile?.render(messages), "<|im_start|>Hi<|im_end|>");
  } finally {
    await Deno.remove(file);
  }
  await assert.rejects(
    () => loadChatTemplate(dir, "templates/missing.jinja"),
    /Cannot use --chat-template: no file "templates\/missing.jinja", and it is not a template/,
  );
  await assert.rejects(
    () => loadChatTemplate(dir, "{% for %}"),
    /Cannot use --chat-template: Cannot compile/,
  );
});
