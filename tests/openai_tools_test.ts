/**
 * Function calling and reasoning through the official `openai` package: the server hands `tools` and
 * earlier calls to the chat template and reads the model's calls (hermes, Llama 3.x and Mistral v11 forms)
 * back into `tool_calls`, and splits a `<think>` block into `reasoning_content`, streamed and not. The
 * "model" is the scripted engine (a real tiny model writes neither); the templates' rendering of tools is
 * tested against Qwen3's template in inference/text/chat_template_test.ts.
 */
import assert from "node:assert/strict";
import OpenAI, { BadRequestError } from "openai";
import type { ChatCompletionTool } from "openai/resources/chat/completions";
import { FakeEngine } from "./_fake_engine.ts";
import { serveFake } from "./_fake_server.ts";

const TOOLS: ChatCompletionTool[] = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
const ANSWER = [
  "Let me check.",
  "<tool",
  '_call>\n{"name": "get_weather", ',
  '"arguments": {"city": "Paris"}}\n</tool_call>',
];

/** A streamed chat with TOOLS: its content and the names of the calls in its deltas. */
async function streamedCalls(
  client: OpenAI,
  messages: OpenAI.ChatCompletionMessageParam[],
): Promise<{ content: string; calls: string[] }> {
  const stream = await client.chat.completions.create({ model: "m", messages, tools: TOOLS, stream: true });
  let content = "";
  const calls: string[] = [];
  for await (const chunk of stream) {
    content += chunk.choices[0]?.delta.content ?? "";
    for (const c of chunk.choices[0]?.delta.tool_calls ?? []) calls.push(c.function!.name!);
  }
  return { content, calls };
}

Deno.test("the openai package gets tool_calls back, streamed and not, and sends earlier calls on", async (t) => {
  const engine = new FakeEngine();
  engine.toolCallFormat = "hermes";
  engine.script = { deltas: ANSWER };
  const { client, stop } = serveFake(engine);
  const user = { role: "user" as const, content: "Weather in Paris?" };
  try {
    let id = "";
    await t.step("not streamed: content before the call, the call, finish_reason tool_calls", async () => {
      const res = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, "tool_calls");
      assert.equal(choice.message.content, "Let me check.");
      const call = choice.message.tool_calls![0];
      assert.ok(call.type === "function");
      assert.equal(call.function.name, "get_weather");
      assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
      assert.match(call.id, /^call_/);
      id = call.id;
      const input = engine.requests.at(-1)!.input;
      assert.ok(input.kind === "chat");
      assert.deepEqual(input.tools, TOOLS, "the template gets the tools as sent");
    });
    await t.step("streamed: no tag leaks into content; the call in one delta before the finish", async () => {
      const stream = await client.chat.completions.create({
        model: "m",
        messages: [user],
        tools: TOOLS,
        stream: true,
      });
      let content = "";
      const calls = [];
      let finish = null;
      for await (const chunk of stream) {
        const c = chunk.choices[0];
        content += c?.delta.content ?? "";
        calls.push(...(c?.delta.tool_calls ?? []));
        finish = c?.finish_reason ?? finish;
      }
      assert.equal(content, "Let me check.");
      assert.equal(calls.length, 1);
      assert.equal(calls[0].index, 0);
      assert.equal(calls[0].function?.name, "get_weather");
      assert.deepEqual(JSON.parse(calls[0].function?.arguments ?? ""), { city: "Paris" });
      assert.equal(finish, "tool_calls");
    });
    await t.step("n = 2 streamed: each choice's calls apart, by index", async () => {
      const stream = await client.chat.completions.create({
        model: "m",
        messages: [user],
        tools: TOOLS,
        n: 2,
        stream: true,
      });
      const calls: string[][] = [[], []];
      const finish: (string | null)[] = [null, null];
      for await (const chunk of stream) {
        for (const c of chunk.choices) {
          calls[c.index].push(...(c.delta.tool_calls ?? []).map((x) => x.function?.name ?? ""));
          finish[c.index] = c.finish_reason ?? finish[c.index];
        }
      }
      assert.deepEqual(calls, [["get_weather"], ["get_weather"]]);
      assert.deepEqual(finish, ["tool_calls", "tool_calls"]);
    });
    await t.step("the next turn: the call's arguments reach the template as an object", async () => {
      engine.script = { deltas: ["It is 18 C."] };
      const res = await client.chat.completions.create({
        model: "m",
        tools: TOOLS,
        messages: [
          user,
          {
            role: "assistant",
            content: null,
            tool_calls: [{
              id,
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            }],
          },
          { role: "tool", tool_call_id: id, content: "18 C" },
        ],
      });
      assert.equal(res.choices[0].message.content, "It is 18 C.");
      assert.equal(res.choices[0].finish_reason, "stop");
      assert.equal(res.choices[0].message.tool_calls, undefined);
      const input = engine.requests.at(-1)!.input;
      assert.ok(input.kind === "chat");
      assert.deepEqual(input.messages.slice(1), [
        {
          role: "assistant",
          content: "",
          tool_calls: [{
            id,
            type: "function",
            function: { name: "get_weather", arguments: { city: "Paris" } },
          }],
        },
        { role: "tool", content: "18 C", tool_call_id: id },
      ]);
    });
    await t.step('tool_choice "none": no tools shown, a tag in the text stays text', async () => {
      engine.script = { deltas: ANSWER };
      const res = await client.chat.completions.create({
        model: "m",
        messages: [user],
        tools: TOOLS,
        tool_choice: "none",
      });
      assert.equal(res.choices[0].message.content, ANSWER.join(""));
      assert.equal(res.choices[0].finish_reason, "stop");
      const input = engine.requests.at(-1)!.input;
      assert.ok(input.kind === "chat" && input.tools === undefined);
    });
    await t.step(
      'tool_choice "required" or a named function: the engine gets a grammar, "auto" none',
      async () => {
        engine.script = { deltas: ANSWER.slice(1) };
        for (
          const tool_choice of ["required", { type: "function", function: { name: "get_weather" } }] as const
        ) {
          const res = await client.chat.completions.create({
            model: "m",
            messages: [user],
            tools: TOOLS,
            tool_choice,
          });
          assert.equal(res.choices[0].finish_reason, "tool_calls");
          assert.ok(engine.requests.at(-1)!.grammar, JSON.stringify(tool_choice));
        }
        await client.chat.completions.create({
          model: "m",
          messages: [user],
          tools: TOOLS,
          tool_choice: "auto",
        });
        assert.equal(engine.requests.at(-1)!.grammar, undefined);
      },
    );
    await t.step("what cannot be served is a 400 naming the field", async () => {
      const bad = async (body: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>, param: string) => {
        try {
          await client.chat.completions.create({ model: "m", messages: [user], ...body });
        } catch (err) {
          assert.ok(err instanceof BadRequestError, String(err));
          assert.equal(err.param, param);
          return;
        }
        assert.fail(`no 400 for ${param}`);
      };
      await bad({ tool_choice: "required" }, "tool_choice"); // nothing to call
      await bad(
        { tools: TOOLS, tool_choice: { type: "function", function: { name: "get_time" } } },
        "tool_choice",
      );
      await bad(
        {
          tools: [{
            type: "function",
            function: { name: "f", parameters: { type: "string", format: "iri" } },
          }],
          tool_choice: "required",
        },
        "tools[0].function.parameters.format",
      );
      await bad(
        { tools: TOOLS, tool_choice: "required", response_format: { type: "json_object" } },
        "tool_choice",
      );
      await bad(
        { tools: [{ type: "function", function: { name: "get weather" } }] },
        "tools[0].function.name",
      );
      engine.toolCallFormat = null;
      const before = engine.requests.length;
      await bad({ tools: TOOLS }, "tools");
      assert.equal(engine.requests.length, before, "refused before the engine");
    });
  } finally {
    await stop();
  }
});

/** What the SDK's types leave out: vLLM's reasoning_content, on a message or a delta. */
const reasoningOf = (x: unknown) => (x as { reasoning_content?: string }).reasoning_content;

Deno.test("a <think> block comes back as reasoning_content, apart from content and calls", async (t) => {
  const engine = new FakeEngine();
  engine.toolCallFormat = "hermes";
  engine.thinking = { opensInPrompt: false };
  const thought = ["<thi", "nk>\nIt asks for", " weather.\n</th", "ink>\n\n"];
  const user = { role: "user" as const, content: "Weather in Paris?" };
  const { client, stop } = serveFake(engine);
  try {
    await t.step("not streamed, with a call after the reasoning", async () => {
      engine.script = { deltas: [...thought, ...ANSWER] };
      const res = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
      const message = res.choices[0].message;
      assert.equal(reasoningOf(message), "\nIt asks for weather.\n");
      assert.equal(message.content, "Let me check.");
      assert.equal(
        message.tool_calls?.[0].type === "function" && message.tool_calls[0].function.name,
        "get_weather",
      );
      assert.equal(res.choices[0].finish_reason, "tool_calls");
    });
    await t.step("streamed: reasoning deltas first, then content, no tag in either", async () => {
      engine.script = { deltas: [...thought, "4 apples"] };
      const stream = await client.chat.completions.create({ model: "m", messages: [user], stream: true });
      let reasoning = "";
      let content = "";
      for await (const chunk of stream) {
        const d = chunk.choices[0]?.delta;
        if (!d) continue;
        assert.ok(!(content && reasoningOf(d)), "no reasoning after the answer started");
        reasoning += reasoningOf(d) ?? "";
        content += d.content ?? "";
      }
      assert.deepEqual([reasoning, content], ["\nIt asks for weather.\n", "4 apples"]);
    });
    await t.step("include_reasoning false (vLLM): the answer alone, streamed and not", async () => {
      engine.script = { deltas: [...thought, "4 apples"] };
      const body = { model: "m", messages: [user], include_reasoning: false };
      const res = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming);
      assert.equal(res.choices[0].message.content, "4 apples");
      assert.equal(reasoningOf(res.choices[0].message), undefined);
      const stream = await client.chat.completions.create(
        { ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming,
      );
      let content = "";
      for await (const chunk of stream) {
        const d = chunk.choices[0]?.delta;
        if (!d) continue;
        assert.equal(reasoningOf(d), undefined);
        content += d.content ?? "";
      }
      assert.equal(content, "4 apples");
    });
  } finally {
    await stop();
  }
  await t.step("--reasoning-parser none: the text as generated", async () => {
    const raw = serveFake(engine, { splitReasoning: false });
    try {
      engine.script = { deltas: [...thought, "4"] };
      const res = await raw.client.chat.completions.create({ model: "m", messages: [user] });
      assert.equal(res.choices[0].message.content, thought.join("") + "4");
      assert.equal(reasoningOf(res.choices[0].message), undefined);
    } finally {
      await raw.stop();
    }
  });
});

Deno.test("a Llama 3.x model's calls ({name, parameters}) come back as tool_calls, streamed and not", async () => {
  const engine = new FakeEngine();
  engine.toolCallFormat = "llama3_json";
  engine.script = { deltas: ['{"name": "get_weather", ', '"parameters": {"city": "Paris"}}'] };
  const { client, stop } = serveFake(engine);
  const user = { role: "user" as const, content: "Weather in Paris?" };
  try {
    const res = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
    assert.equal(res.choices[0].finish_reason, "tool_calls");
    assert.equal(res.choices[0].message.content, null);
    const call = res.choices[0].message.tool_calls![0];
    assert.ok(call.type === "function");
    assert.deepEqual([call.function.name, JSON.parse(call.function.arguments)], ["get_weather", {
      city: "Paris",
    }]);
    const { content, calls } = await streamedCalls(client, [user]);
    assert.equal(content, "");
    assert.deepEqual(calls, ["get_weather"]);
    // Forced: the engine gets a grammar of Llama's form.
    await client.chat.completions.create({
      model: "m",
      messages: [user],
      tools: TOOLS,
      tool_choice: "required",
    });
    assert.ok(engine.requests.at(-1)!.grammar);
    // Prose stays content.
    engine.script = { deltas: ["It is", " sunny."] };
    const prose = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
    assert.equal(prose.choices[0].message.content, "It is sunny.");
    assert.equal(prose.choices[0].finish_reason, "stop");
  } finally {
    await stop();
  }
});

Deno.test("a Mistral v11 model's calls ([TOOL_CALLS]name[ARGS]{…}) come back as tool_calls; no mark reaches content", async () => {
  const engine = new FakeEngine();
  engine.toolCallFormat = "mistral_args";
  // The text as the real engine gives it when asked to keep the marks (GenerateRequest.keepSpecialTokens).
  const answer = ["Let me check.", "[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": ', '"Paris"}'];
  const marks = ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"];
  const { client, stop } = serveFake(engine);
  const user = { role: "user" as const, content: "Weather in Paris?" };
  try {
    engine.script = { deltas: answer };
    const res = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
    assert.equal(res.choices[0].finish_reason, "tool_calls");
    assert.equal(res.choices[0].message.content, "Let me check.");
    const call = res.choices[0].message.tool_calls![0];
    assert.ok(call.type === "function");
    assert.deepEqual([call.function.name, JSON.parse(call.function.arguments)], ["get_weather", {
      city: "Paris",
    }]);
    assert.deepEqual(engine.requests.at(-1)!.keepSpecialTokens, marks, "the engine keeps the marks' text");
    const { content, calls } = await streamedCalls(client, [user]);
    assert.deepEqual([content, calls], ["Let me check.", ["get_weather"]]);
    // Forced: a grammar of the marks spelled as text, which the parser reads the same.
    engine.script = { deltas: answer.slice(1) };
    const forced = await client.chat.completions.create({
      model: "m",
      messages: [user],
      tools: TOOLS,
      tool_choice: "required",
    });
    assert.equal(forced.choices[0].finish_reason, "tool_calls");
    assert.ok(engine.requests.at(-1)!.grammar);
    // Not calls: the text without the marks, as if they had been skipped; without tools nothing is kept.
    engine.script = { deltas: ["It is", " [TOOL_CALLS]sunny[ARGS]."] };
    const prose = await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS });
    assert.equal(prose.choices[0].message.content, "It is sunny.");
    assert.equal(prose.choices[0].finish_reason, "stop");
    engine.script = { deltas: ["It is sunny."] };
    await client.chat.completions.create({ model: "m", messages: [user], tools: TOOLS, tool_choice: "none" });
    assert.equal(engine.requests.at(-1)!.keepSpecialTokens, undefined);
  } finally {
    await stop();
  }
});
