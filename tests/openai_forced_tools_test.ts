/**
 * Forced function calls on a real model through the official `openai` package: lq-49m's weights and
 * tokenizer behind a hermes chat template (Qwen2.5's form of tool calls), a Llama 3.1-style one and two
 * Mistral-style ones, the list form and tokenizer v11's `[TOOL_CALLS]name[ARGS]{…}` (lq-49m's own template
 * renders no tools), so `tool_choice` "required" or a named function makes the grammar-constrained answer a
 * call the server reads back into `tool_calls`, with arguments that fit the function's parameters. lq-49m's
 * tokenizer has no [TOOL_CALLS] or [ARGS] token: the grammar spells them in ordinary tokens, as it does for
 * any model (a grammar walks text).
 */
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import OpenAI from "openai";
import type { ChatCompletionTool } from "openai/resources/chat/completions";
import { createEngine, loadModel } from "../inference/engine/mod.ts";
import { createApp } from "../server/app.ts";
import { sharedPath, testGpu } from "./_gpu.ts";

/** lq-49m's ChatML turns, after each template's tool prompt. */
const CHATML_TURNS = `
{%- for message in messages %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;

/** A hermes template in the manner of Qwen2.5's: tools in the system turn, calls as <tool_call> JSON. */
const HERMES_TEMPLATE = `{%- if tools %}<|im_start|>system
You may call one or more functions. Signatures:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
For each call, return <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}${CHATML_TURNS}`;

/** Meta's Llama 3.1 form (its template's tool prompt, abridged) on lq-49m's ChatML turns: bare JSON calls. */
const LLAMA_TEMPLATE = `{%- if tools %}<|im_start|>system
Environment: ipython
Given the following functions, please respond with a JSON for a function call with its proper arguments.
Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}<|im_end|>
{% endif %}${CHATML_TURNS}`;

/** Mistral's form (v0.3: tools in [AVAILABLE_TOOLS], calls as one list after [TOOL_CALLS]) on ChatML turns. */
const MISTRAL_TEMPLATE = `{%- if tools %}<|im_start|>system
[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]
Answer with [TOOL_CALLS] [{"name": ..., "arguments": {...}}]<|im_end|>
{% endif %}${CHATML_TURNS}`;

/** Mistral's tokenizer v11 form (each call `[TOOL_CALLS]name[ARGS]{…}`) on ChatML turns. */
const MISTRAL_ARGS_TEMPLATE = `{%- if tools %}<|im_start|>system
[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]
Answer with [TOOL_CALLS]name[ARGS]{...}<|im_end|>
{% endif %}${CHATML_TURNS}`;

const TOOLS: ChatCompletionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string", maxLength: 20 }, unit: { enum: ["celsius", "fahrenheit"] } },
        required: ["city", "unit"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "get_time",
      parameters: {
        type: "object",
        properties: { zone: { type: "string", maxLength: 12 } },
        required: ["zone"],
      },
    },
  },
];

/** lq-49m's files linked into a temporary folder, with another chat template in its tokenizer_config.json. */
async function withTemplate(dir: string, template: string): Promise<string> {
  const out = await Deno.makeTempDir({ prefix: "leanserve-template-" });
  for await (const e of Deno.readDir(dir)) {
    if (e.name !== "tokenizer_config.json") await Deno.symlink(join(dir, e.name), join(out, e.name));
  }
  const config = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer_config.json")));
  await Deno.writeTextFile(
    join(out, "tokenizer_config.json"),
    JSON.stringify({ ...config, chat_template: template }),
  );
  return out;
}

const TEMPLATES = [
  ["hermes", HERMES_TEMPLATE],
  ["llama3_json", LLAMA_TEMPLATE],
  ["mistral", MISTRAL_TEMPLATE],
  ["mistral_args", MISTRAL_ARGS_TEMPLATE],
] as const;
for (const [format, template] of TEMPLATES) {
  Deno.test(`forced function calls on lq-49m (${format}): tool_choice required and named give calls that fit`, async (t) => {
    const dir = sharedPath("models/lq-49m");
    if (!dir) return;
    const gpu = await testGpu();
    if (!gpu) return;
    const folder = await withTemplate(dir, template);
    const engine = createEngine(basename(dir), { log: () => {} });
    await engine.setModel(await loadModel(gpu, folder, { weightType: "f32", modelId: "lq-49m" }));
    const app = createApp({ engine, config: {} });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
    const openai = new OpenAI({
      apiKey: "none",
      baseURL: `http://127.0.0.1:${server.addr.port}/v1`,
      maxRetries: 0,
    });
    const messages = [{ role: "user" as const, content: "What is the weather in Paris right now?" }];
    try {
      assert.equal(engine.status().toolCallFormat, format);
      await t.step(
        '"required": one call of one of the tools, its arguments to that tool\'s schema',
        async () => {
          const res = await openai.chat.completions.create({
            model: "lq-49m",
            messages,
            tools: TOOLS,
            tool_choice: "required",
            parallel_tool_calls: false,
            max_tokens: 80,
            temperature: 0,
          });
          const choice = res.choices[0];
          assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice.message));
          assert.equal(choice.message.tool_calls?.length, 1);
          const call = choice.message.tool_calls![0];
          assert.ok(call.type === "function");
          const args = JSON.parse(call.function.arguments);
          if (call.function.name === "get_weather") {
            assert.deepEqual(Object.keys(args), ["city", "unit"]);
            assert.ok(["celsius", "fahrenheit"].includes(args.unit));
          } else {
            assert.equal(call.function.name, "get_time");
            assert.deepEqual(Object.keys(args), ["zone"]);
          }
        },
      );
      await t.step("a named function, streamed: that function's call in the deltas", async () => {
        const stream = await openai.chat.completions.create({
          model: "lq-49m",
          messages,
          tools: TOOLS,
          tool_choice: { type: "function", function: { name: "get_time" } },
          max_tokens: 80,
          temperature: 0,
          stream: true,
        });
        const calls: { name?: string; arguments?: string }[] = [];
        let finish: string | null = null;
        for await (const chunk of stream) {
          for (const c of chunk.choices[0]?.delta.tool_calls ?? []) calls[c.index] = { ...c.function };
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        assert.equal(finish, "tool_calls", JSON.stringify(calls));
        assert.equal(calls.length, 1, "a named function is called once");
        assert.equal(calls[0].name, "get_time");
        assert.deepEqual(Object.keys(JSON.parse(calls[0].arguments!)), ["zone"]);
      });
    } finally {
      await server.shutdown();
      gpu.device.destroy();
      await Deno.remove(folder, { recursive: true });
    }
  });
}
