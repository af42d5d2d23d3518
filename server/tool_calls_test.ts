import assert from "node:assert/strict";
import { parseToolCalls, ToolCallStream } from "./tool_calls.ts";

const CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const CALL2 = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';

Deno.test("parseToolCalls() reads hermes calls, the content before them, and ids of OpenAI's shape", () => {
  const a = parseToolCalls(`I will check.\n${CALL}\n${CALL2}`);
  assert.equal(a.content, "I will check.\n");
  assert.deepEqual(
    a.calls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)]),
    [["function", "get_weather", { city: "Paris" }], ["function", "get_time", {}]],
  );
  assert.match(a.calls[0].id, /^call_[0-9a-f]{24}$/);
  assert.notEqual(a.calls[0].id, a.calls[1].id);
  assert.equal(parseToolCalls(`${CALL}${CALL2}`, false).calls.length, 1, "parallel_tool_calls: false");
  // A call cut short by max_tokens after its JSON still counts; one cut inside its JSON does not.
  assert.equal(parseToolCalls(CALL.replace("\n</tool_call>", "")).calls.length, 1);
});

Deno.test("parseToolCalls() leaves an answer it cannot read whole as content", () => {
  for (const text of ["No tools needed.", "<tool_call>{not json}</tool_call>", `${CALL} and more text`]) {
    assert.deepEqual(parseToolCalls(text), { content: text, calls: [] });
  }
  assert.deepEqual(
    parseToolCalls('<tool_call>{"arguments": {}}</tool_call>').calls,
    [],
    "a call needs a name",
  );
});

Deno.test("ToolCallStream sends content until a call starts and the calls whole at the end", () => {
  const s = new ToolCallStream();
  const text = `Sure.${CALL}`;
  let sent = "";
  // One character at a time: a "<" may start a call, so it waits until it cannot.
  for (const ch of text) sent += s.push(ch);
  assert.equal(sent, "Sure.");
  const end = s.finish();
  assert.equal(end.content, "");
  assert.equal(end.calls[0].function.name, "get_weather");

  const plain = new ToolCallStream();
  assert.equal(plain.push("a <b"), "a <b", "not the start of a call");
  assert.equal(plain.push(" <to"), " ");
  assert.equal(plain.push("y> c <tool"), "<toy> c ");
  assert.deepEqual(plain.finish(), { content: "<tool", calls: [] }, "a held tail goes out as content");

  const broken = new ToolCallStream();
  assert.equal(broken.push("x<tool_call>{oops"), "x");
  assert.deepEqual(broken.finish(), { content: "<tool_call>{oops", calls: [] });
});

Deno.test("llama3_json: an answer that is calls ({name, parameters}; several after `;`) is read back", () => {
  const weather = '{"name": "get_weather", "parameters": {"city": "Paris"}}';
  const one = parseToolCalls(weather, true, "llama3_json");
  assert.equal(one.content, "");
  assert.equal(one.calls[0].function.name, "get_weather");
  assert.equal(one.calls[0].function.arguments, '{"city":"Paris"}');
  const tagged = parseToolCalls(
    `<|python_tag|>${weather}; {"name": "f", "arguments": {"s": "a;}b"}}`,
    true,
    "llama3_json",
  );
  assert.deepEqual(tagged.calls.map((c) => c.function.arguments), ['{"city":"Paris"}', '{"s":"a;}b"}']);
  assert.equal(parseToolCalls(`${weather}; ${weather}`, false, "llama3_json").calls.length, 1);
  // Not calls: prose, a broken object, prose after the calls.
  for (const text of ["It is sunny.", '{"name": "f", "parameters": {', `${weather} and more`, '{"x": 1}']) {
    assert.deepEqual(parseToolCalls(text, true, "llama3_json"), { content: text, calls: [] }, text);
  }
});

Deno.test("ToolCallStream (llama3_json): prose flows once it starts; a call is held to the end", () => {
  const prose = new ToolCallStream(true, "llama3_json");
  assert.equal(prose.push(" "), "");
  assert.equal(prose.push(" Sunny"), "  Sunny");
  assert.equal(prose.push(" today."), " today.");
  assert.deepEqual(prose.finish(), { content: "", calls: [] });
  const call = new ToolCallStream(true, "llama3_json");
  for (const piece of ["<|python", "_tag|>", '{"name": "f", ', '"parameters": {}}']) {
    assert.equal(call.push(piece), "");
  }
  const done = call.finish();
  assert.equal(done.content, "");
  assert.equal(done.calls[0].function.name, "f");
});

Deno.test("mistral: an answer that is one JSON list of calls (after an optional [TOOL_CALLS]) is read back", () => {
  const weather = '{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}';
  for (
    const text of [`[${weather}]`, ` [TOOL_CALLS] [${weather}, {"name": "f", "arguments": {"s": "]"}}]\n`]
  ) {
    const read = parseToolCalls(text, true, "mistral");
    assert.equal(read.content, "", text);
    assert.equal(read.calls[0].function.name, "get_weather");
    assert.equal(read.calls[0].function.arguments, '{"city":"Paris"}');
  }
  const two = parseToolCalls(`[${weather}, {"name": "f", "arguments": {"s": "]"}}]`, true, "mistral");
  assert.deepEqual(two.calls.map((c) => c.function.arguments), ['{"city":"Paris"}', '{"s":"]"}']);
  assert.equal(parseToolCalls(`[${weather}, ${weather}]`, false, "mistral").calls.length, 1);
  // Not calls: prose, a list that is not of calls, a broken list, text after the list, an empty list.
  for (
    const text of [
      "It is sunny.",
      "[1] See the notes.",
      `[${weather}, 3]`,
      `[${weather}`,
      `[${weather}] ok`,
      "[]",
    ]
  ) {
    assert.deepEqual(parseToolCalls(text, true, "mistral"), { content: text, calls: [] }, text);
  }
});

Deno.test("ToolCallStream (mistral): a list of calls is held to the end; prose flows once it starts", () => {
  const call = new ToolCallStream(true, "mistral");
  for (const piece of [" [", '{"name": "f", ', '"arguments": {"x": [1]}}', "]"]) {
    assert.equal(call.push(piece), "");
  }
  const done = call.finish();
  assert.equal(done.content, "");
  assert.equal(done.calls[0].function.arguments, '{"x":[1]}');
  const prose = new ToolCallStream(true, "mistral");
  assert.equal(prose.push("Sunny"), "Sunny");
  assert.equal(prose.push(" [today]."), " [today].");
  assert.deepEqual(prose.finish(), { content: "", calls: [] });
  // A list that turns out not to be calls goes out as content, whole, at the end.
  const note = new ToolCallStream(true, "mistral");
  assert.equal(note.push("[1] See"), "");
  assert.deepEqual(note.finish(), { content: "[1] See", calls: [] });
});

Deno.test("mistral_args: content, then calls name[ARGS]{…} after [TOOL_CALLS], are read back", () => {
  const weather = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}';
  const two = parseToolCalls(`Let me check. ${weather}[TOOL_CALLS]get_time[ARGS]{}`, true, "mistral_args");
  assert.equal(two.content, "Let me check. ");
  assert.deepEqual(
    two.calls.map((c) => [c.function.name, c.function.arguments]),
    [["get_weather", '{"city":"Paris"}'], ["get_time", "{}"]],
  );
  assert.match(two.calls[0].id, /^call_[0-9a-f]{24}$/);
  assert.equal(parseToolCalls(`${weather}${weather}`, false, "mistral_args").calls.length, 1);
  // [CALL_ID] ids are kept (a repeated one is replaced), [TOOL_CALLS] is optional after the first call, and
  // the bare `name{…}` form reads too.
  const ids = parseToolCalls(
    '[TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{"s": "}[ARGS]"}\ng[CALL_ID]a1b2c3d4e[ARGS]{"x": [1]} h{}\n',
    true,
    "mistral_args",
  );
  assert.equal(ids.content, "");
  assert.deepEqual(
    ids.calls.map((c) => [c.function.name, c.function.arguments]),
    [["f", '{"s":"}[ARGS]"}'], ["g", '{"x":[1]}'], ["h", "{}"]],
  );
  assert.equal(ids.calls[0].id, "a1b2c3d4e");
  assert.match(ids.calls[1].id, /^call_/);
  // Not calls: the whole answer is content, without the marks (as decoding that skips them gives it).
  for (
    const [text, content] of [
      ["It is sunny.", "It is sunny."],
      ["A stray [ARGS]mark[CALL_ID].", "A stray mark."],
      ['Sure.[TOOL_CALLS]get_weather[ARGS]{"city": ', 'Sure.get_weather{"city": '], // cut short
      ["[TOOL_CALLS]f[ARGS]{} and more", "f{} and more"],
      ["[TOOL_CALLS]get weather[ARGS]{}", "get weather{}"], // not a function name
      ["[TOOL_CALLS]f[ARGS][1]", "f[1]"], // arguments are an object
      ["[TOOL_CALLS]f[ARGS]{x: 1}", "f{x: 1}"],
      ["[TOOL_CALLS]", ""],
    ]
  ) {
    assert.deepEqual(parseToolCalls(text, true, "mistral_args"), { content, calls: [] }, text);
  }
});

Deno.test("ToolCallStream (mistral_args): content flows until [TOOL_CALLS]; no mark goes out as content", () => {
  const s = new ToolCallStream(true, "mistral_args");
  const pieces = ["Sure", ", [1] ", "[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": ', '"Paris"}'];
  assert.deepEqual(pieces.map((p) => s.push(p)), ["Sure", ", [1] ", "", "", "", "", ""]);
  const end = s.finish();
  assert.equal(end.content, "");
  assert.deepEqual(end.calls.map((c) => [c.function.name, c.function.arguments]), [[
    "get_weather",
    '{"city":"Paris"}',
  ]]);
  // Forced calls spell the marks in ordinary tokens: one character at a time, nothing of them goes out.
  const spelled = new ToolCallStream(false, "mistral_args");
  let sent = "";
  for (const ch of "Ok.[TOOL_CALLS]f[ARGS]{}[TOOL_CALLS]g[ARGS]{}") sent += spelled.push(ch);
  assert.equal(sent, "Ok.");
  assert.deepEqual(spelled.finish().calls.map((c) => c.function.name), ["f"], "parallel_tool_calls: false");

  const plain = new ToolCallStream(true, "mistral_args");
  assert.equal(plain.push("a [A"), "a ", "may be a mark");
  assert.equal(plain.push("RGS] b [1"), " b [1");
  assert.equal(plain.push("[CALL_ID]x [TOOL"), "x ");
  assert.deepEqual(plain.finish(), { content: "[TOOL", calls: [] });
  const broken = new ToolCallStream(true, "mistral_args");
  assert.equal(broken.push("ok[TOOL_CALLS]f[ARGS]{oops"), "ok");
  assert.deepEqual(broken.finish(), { content: "f{oops", calls: [] });
});
