/**
 * OpenAI's Responses API through the official `openai` package: `client.responses.create` (streamed and
 * not), function calls out and their results back in as input items, reasoning items, stored responses
 * (`previous_response_id`, retrieve, delete) and 4xx errors that name the Responses field. The "model" is the
 * scripted engine, which records what the server asked of it; a real model's structured output through
 * `text.format` is in tests/openai_client_test.ts.
 */
import assert from "node:assert/strict";
import { BadRequestError, NotFoundError } from "openai";
import type { FunctionTool, ResponseStreamEvent } from "openai/resources/responses/responses";
import { FakeEngine } from "./_fake_engine.ts";
import { serveFake } from "./_fake_server.ts";

const TOOLS: FunctionTool[] = [{
  type: "function",
  name: "get_weather",
  description: "Weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  strict: true,
}];
const ANSWER = [
  "Let me check.",
  "<tool",
  '_call>\n{"name": "get_weather", ',
  '"arguments": {"city": "Paris"}}\n</tool_call>',
];

async function badRequest(promise: Promise<unknown>): Promise<BadRequestError> {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err instanceof BadRequestError, `expected a 400, got ${err}`);
  return err;
}

Deno.test("the openai package's responses.create: text, function calls, instructions and the conversation it sends", async (t) => {
  const engine = new FakeEngine();
  engine.toolCallFormat = "hermes";
  engine.script = { deltas: ANSWER };
  const { client, stop } = serveFake(engine);
  try {
    let first = "";
    let callId = "";
    await t.step(
      "not streamed: a message item, a function_call item, usage; the chat turn it became",
      async () => {
        const res = await client.responses.create({
          model: "m",
          instructions: "Answer briefly.",
          input: "Weather in Paris?",
          tools: TOOLS,
          max_output_tokens: 20,
        });
        first = res.id;
        assert.match(res.id, /^resp_/);
        assert.equal(res.object, "response");
        assert.equal(res.status, "completed");
        assert.equal(res.output_text, "Let me check.");
        assert.deepEqual(res.output.map((o) => o.type), ["message", "function_call"]);
        const call = res.output[1];
        assert.ok(call.type === "function_call");
        assert.equal(call.name, "get_weather");
        assert.deepEqual(JSON.parse(call.arguments), { city: "Paris" });
        callId = call.call_id;
        assert.equal(res.instructions, "Answer briefly.");
        assert.equal(res.max_output_tokens, 20);
        assert.deepEqual(res.usage?.output_tokens, ANSWER.length);
        const sent = engine.requests.at(-1)!;
        assert.ok(sent.input.kind === "chat");
        assert.deepEqual(sent.input.messages.map((m) => [m.role, m.content]), [
          ["system", "Answer briefly."],
          ["user", "Weather in Paris?"],
        ]);
        const { type: _, ...fn } = TOOLS[0];
        assert.deepEqual(sent.input.tools, [{ type: "function", function: fn }]);
        assert.equal(sent.maxTokens, 20);
      },
    );

    await t.step(
      "the call's result as input items: the assistant's call and a tool message reach the template",
      async () => {
        engine.script = { deltas: ["It is ", "sunny."] };
        const res = await client.responses.create({
          model: "m",
          input: [
            { role: "user", content: "Weather in Paris?" },
            { type: "function_call", call_id: callId, name: "get_weather", arguments: '{"city":"Paris"}' },
            { type: "function_call_output", call_id: callId, output: '{"sky": "clear"}' },
          ],
          tools: TOOLS,
        });
        assert.equal(res.output_text, "It is sunny.");
        const sent = engine.requests.at(-1)!;
        assert.ok(sent.input.kind === "chat");
        const [user, assistant, tool] = sent.input.messages;
        assert.equal(user.role, "user");
        assert.equal(assistant.role, "assistant");
        assert.deepEqual(assistant.tool_calls?.map((c) => [c.id, c.function.name, c.function.arguments]), [
          [callId, "get_weather", { city: "Paris" }],
        ]);
        assert.deepEqual([tool.role, tool.tool_call_id, tool.content], ["tool", callId, '{"sky": "clear"}']);
        // The stored input items, newest first by default, paged as OpenAI pages lists.
        const items = await client.responses.inputItems.list(res.id);
        assert.deepEqual(items.data.map((i) => i.type), ["function_call_output", "function_call", "message"]);
        const first = items.data[2];
        assert.ok(first.type === "message" && first.content[0].type === "input_text");
        assert.equal(first.content[0].text, "Weather in Paris?");
        assert.match(first.id, /^msg_/);
        const page = await client.responses.inputItems.list(res.id, { order: "asc", limit: 2 });
        assert.deepEqual(page.data.map((i) => i.type), ["message", "function_call"]);
        assert.equal(page.has_more, true);
        const rest = await client.responses.inputItems.list(res.id, { order: "asc", after: page.data[1].id });
        assert.deepEqual(rest.data.map((i) => i.type), ["function_call_output"]);
      },
    );

    await t.step("previous_response_id continues a stored response without its instructions", async () => {
      engine.script = { deltas: ["Sure."] };
      const res = await client.responses.create({
        model: "m",
        previous_response_id: first,
        input: [{ type: "function_call_output", call_id: callId, output: "rain" }],
      });
      assert.equal(res.previous_response_id, first);
      const sent = engine.requests.at(-1)!;
      assert.ok(sent.input.kind === "chat");
      assert.deepEqual(sent.input.messages.map((m) => m.role), ["user", "assistant", "tool"]);
      assert.equal(sent.input.messages[1].content, "Let me check.");
      assert.equal(sent.input.messages[1].tool_calls?.[0].id, callId);
      const again = await client.responses.retrieve(res.id);
      assert.deepEqual(again, JSON.parse(JSON.stringify(res)));
      await client.responses.delete(res.id);
      await assert.rejects(client.responses.retrieve(res.id), NotFoundError);
      const notStored = await client.responses.create({ model: "m", input: "x", store: false });
      await assert.rejects(client.responses.retrieve(notStored.id), NotFoundError);
    });

    await t.step(
      "streamed: OpenAI's event sequence, the text in deltas, the call whole at the end",
      async () => {
        engine.script = { deltas: ANSWER };
        const stream = await client.responses.create({
          model: "m",
          input: "Weather in Paris?",
          tools: TOOLS,
          stream: true,
        });
        const events: ResponseStreamEvent[] = [];
        for await (const ev of stream) events.push(ev);
        assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
        assert.deepEqual(events.map((e) => e.type), [
          "response.created",
          "response.in_progress",
          "response.output_item.added",
          "response.content_part.added",
          "response.output_text.delta",
          "response.output_text.done",
          "response.content_part.done",
          "response.output_item.done",
          "response.output_item.added",
          "response.function_call_arguments.delta",
          "response.function_call_arguments.done",
          "response.output_item.done",
          "response.completed",
        ]);
        const text = events.flatMap((e) => e.type === "response.output_text.delta" ? [e.delta] : []).join("");
        assert.equal(text, "Let me check.");
        const done = events.at(-1)!;
        assert.ok(done.type === "response.completed");
        assert.deepEqual(done.response.output.map((o) => o.type), ["message", "function_call"]);
        const args = events.find((e) => e.type === "response.function_call_arguments.done");
        assert.ok(args?.type === "response.function_call_arguments.done");
        assert.deepEqual(JSON.parse(args.arguments), { city: "Paris" });
        assert.equal((await client.responses.retrieve(done.response.id)).output_text, "Let me check.");
      },
    );
  } finally {
    await stop();
  }
});

Deno.test("responses: reasoning items, max_output_tokens, and 400s that name the Responses field", async (t) => {
  const engine = new FakeEngine();
  engine.thinking = { opensInPrompt: false };
  engine.script = { deltas: ["<think>", "Paris is", " in France.", "</think>", "Paris."] };
  const { client, stop } = serveFake(engine);
  try {
    await t.step("a <think> block is a reasoning item before the message, streamed and not", async () => {
      const res = await client.responses.create({ model: "m", input: "Where is Paris?" });
      assert.deepEqual(res.output.map((o) => o.type), ["reasoning", "message"]);
      const reasoning = res.output[0];
      assert.ok(reasoning.type === "reasoning");
      assert.equal(reasoning.content?.[0].text, "Paris is in France.");
      assert.equal(res.output_text, "Paris.");
      const events: ResponseStreamEvent[] = [];
      for await (const ev of await client.responses.create({ model: "m", input: "Where?", stream: true })) {
        events.push(ev);
      }
      const thought = events.flatMap((e) => e.type === "response.reasoning_text.delta" ? [e.delta] : []);
      assert.equal(thought.join(""), "Paris is in France.");
      const done = events.at(-1)!;
      assert.ok(done.type === "response.completed");
      assert.deepEqual(done.response.output.map((o) => o.type), ["reasoning", "message"]);
    });

    await t.step("cut at max_output_tokens: status incomplete, and why", async () => {
      engine.thinking = null;
      engine.script = { deltas: ["a", "b"], finishReason: "length" };
      const res = await client.responses.create({ model: "m", input: "x", max_output_tokens: 2 });
      assert.equal(res.status, "incomplete");
      assert.deepEqual(res.incomplete_details, { reason: "max_output_tokens" });
    });

    await t.step("bad input is a 400 naming the field as the client spelled it", async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ input: [] }, "input"],
        [{ input: [{ role: "robot", content: "x" }] }, "input[0].role"],
        [{ input: "x", max_output_tokens: 0 }, "max_output_tokens"],
        [{ input: "x", tools: [{ type: "web_search" }] }, "tools[0].type"],
        [{ input: "x", tools: [{ type: "function", name: "bad name!" }] }, "tools[0].name"],
        [{ input: "x", text: { format: { type: "yaml" } } }, "text.format.type"],
        [{ input: "x", background: true }, "background"],
        [{ input: "x", include: ["file_search_call.results"] }, "include"],
        [{ input: "x", temperature: 5 }, "temperature"],
        [
          { input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] },
          "input[0].content[0]",
        ],
      ];
      for (const [body, param] of cases) {
        const err = await badRequest(client.responses.create({ model: "m", ...body } as never));
        assert.equal(err.param, param, `${JSON.stringify(body)}: ${err.message}`);
      }
      const missing = await client.responses.create({
        model: "m",
        input: "x",
        previous_response_id: "resp_no",
      })
        .then(() => null, (e) => e);
      assert.ok(missing instanceof NotFoundError);
      assert.equal(missing.param, "previous_response_id");
    });
  } finally {
    await stop();
  }
});
