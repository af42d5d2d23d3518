import assert from "node:assert/strict";
import { MAX_INDENT } from "./json_automaton_frames.ts";
import { afterReasoning, choiceGrammar, regexGrammar, toolCallsGrammar } from "./grammar.ts";
import { compileJsonSchema, compileSchemaNode, jsonObjectGrammar } from "./json_schema.ts";
import { assertRefused, verdict } from "../../tests/_walk.ts";

const enc = new TextEncoder();

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", minLength: 1, maxLength: 8 },
    age: { type: "integer" },
    tags: { type: "array", items: { enum: ["a", "b", 1, null] }, maxItems: 2 },
    score: { type: ["number", "null"] },
  },
  required: ["name", "age"],
};

Deno.test("json automaton: a schema's objects, by example", () => {
  const g = compileJsonSchema(PERSON, "schema");
  const cases: [string, ReturnType<typeof verdict>][] = [
    ['{"name":"Bob","age":3}', "complete"],
    ['{ "name" : "Bob" , "age" : -30 , "tags" : [ "a" , 1 ] , "score" : 2.5e-3 }', "complete"],
    ['{\n  "name": "é😀\\u00e9\\n",\n  "age": 0,\n  "score": null\n}', "complete"],
    ['{"name":"Bob","age":3,"tags":[],"score":-0}', "complete"],
    ['{"name":"Bob","age":3', "partial"],
    ['{"name":"Bob","age":1', "partial"],
    ['{"age":3}', "reject"], // required name first
    ['{"name":"Bob"}', "reject"], // required age missing
    ['{"name":"Bob","age":3,"name":"x"}', "reject"], // keys once, in order
    ['{"name":"Bob","age":3,"extra":1}', "reject"], // no other keys
    ['{"name":"Bob","score":1,"age":3}', "reject"], // schema order
    ['{"name":"","age":3}', "reject"], // minLength 1
    ['{"name":"123456789","age":3}', "reject"], // maxLength 8
    ['{"name":"12345678","age":3}', "complete"],
    ['{"name":"\\u00e9\\t","age":3}', "complete"],
    ['{"name":"a\\x","age":3}', "reject"], // bad escape
    ['{"name":"a\nb","age":3}', "reject"], // raw control character
    ['{"name":"Bob","age":3.5}', "reject"], // integer
    ['{"name":"Bob","age":01}', "reject"],
    ['{"name":"Bob","age":3,"tags":["a","b","a"]}', "reject"], // maxItems 2
    ['{"name":"Bob","age":3,"tags":["c"]}', "reject"], // enum
    ['{"name":"Bob","age":3,"score":"1"}', "reject"],
    [' {"name":"Bob","age":3}', "reject"], // nothing before the value
    ['{"name":"Bob","age":3} ', "reject"], // nor after it
    ['{"name":"Bob","age":3}{', "reject"],
  ];
  for (const [text, want] of cases) assert.equal(verdict(g, text), want, text);
});

Deno.test("json automaton: scalars at the top end where their text may", () => {
  const num = compileJsonSchema({ type: "number" }, "schema");
  assert.equal(verdict(num, "12"), "canEnd"); // "123" may follow
  assert.equal(verdict(num, "-1.5E+7"), "canEnd");
  assert.equal(verdict(num, "1."), "partial");
  assert.equal(verdict(num, "-"), "partial");
  assert.equal(verdict(num, "1e"), "partial");
  const lit = compileJsonSchema({ enum: [1, 10, "x"] }, "schema");
  assert.equal(verdict(lit, "1"), "canEnd"); // or 10
  assert.equal(verdict(lit, "10"), "complete");
  assert.equal(verdict(lit, '"x"'), "complete");
  assert.equal(verdict(lit, "2"), "reject");
  const bool = compileJsonSchema({ type: "boolean" }, "schema");
  assert.equal(verdict(bool, "true"), "complete");
  assert.equal(verdict(bool, "tru"), "partial");
  assert.equal(verdict(bool, "null"), "reject");
});

Deno.test("json automaton: whitespace is one space or one newline and an indentation", () => {
  const g = jsonObjectGrammar();
  assert.equal(verdict(g, '{ "a" : 1 ,\t"b":[ 1 ] }'), "complete");
  assert.equal(verdict(g, `{\n${" ".repeat(MAX_INDENT)}"a": 1\n}`), "complete");
  assert.equal(verdict(g, `{\n${" ".repeat(MAX_INDENT + 1)}"a": 1\n}`), "reject");
  assert.equal(verdict(g, '{  "a": 1}'), "reject");
  assert.equal(verdict(g, '{\n\n"a": 1}'), "reject");
  assert.equal(verdict(g, '{ \n"a": 1}'), "reject");
  assert.equal(verdict(g, '{\r\n"a": 1}'), "reject");
});

/** Whether every whitespace run outside strings is one the automaton allows. */
function wsRunsOk(text: string): boolean {
  let inString = false;
  let run = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (" \t\n\r".includes(c)) {
      run += c;
      continue;
    }
    if (run && !new RegExp(`^([ \t]|\n[ \t]{0,${MAX_INDENT}})$`).test(run)) return false;
    run = "";
    if (c === '"') inString = true;
  }
  return true;
}

Deno.test("json automaton: recursive schemas through $defs", () => {
  const tree = {
    $defs: {
      node: {
        type: "object",
        properties: { v: { type: "integer" }, kids: { type: "array", items: { $ref: "#/$defs/node" } } },
        required: ["v"],
      },
    },
    $ref: "#/$defs/node",
  };
  const g = compileJsonSchema(tree, "schema");
  assert.equal(verdict(g, '{"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]}'), "complete");
  assert.equal(verdict(g, '{"v":1,"kids":[{"w":2}]}'), "reject");
});

Deno.test("json automaton: any object agrees with JSON.parse on mutated texts", () => {
  const g = jsonObjectGrammar();
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const value = (depth: number): unknown => {
    const k = rand(depth > 3 ? 4 : 7);
    if (k === 0) return rand(2) === 0 ? rand(100000) - 500 : (rand(2000) - 1000) / 7;
    if (k === 1) return ["", "a b", 'q"x', "é\\n", "😀\u0001", "\t"][rand(6)];
    if (k === 2) return [true, false, null][rand(3)];
    if (k === 3) return rand(10) * 1e21;
    if (k === 4) return Array.from({ length: rand(4) }, () => value(depth + 1));
    return Object.fromEntries(Array.from({ length: rand(4) }, () => [`k${rand(50)}`, value(depth + 1)]));
  };
  const alphabet = enc.encode('{}[]:,"\\ 0123456789.-+eEtrufalsn\nxu');
  let checked = 0;
  for (let n = 0; n < 300; n++) {
    const obj = Object.fromEntries(Array.from({ length: 1 + rand(4) }, () => [`k${rand(9)}`, value(1)]));
    for (const text of [JSON.stringify(obj), JSON.stringify(obj, null, 2)]) {
      assert.equal(verdict(g, text), "complete", text);
      const bytes = enc.encode(text);
      for (let m = 0; m < 8; m++) {
        const mutated = bytes.slice();
        mutated[rand(mutated.length)] = alphabet[rand(alphabet.length)];
        let ok = false;
        let s = "";
        try {
          s = new TextDecoder("utf-8", { fatal: true }).decode(mutated); // a broken character is no JSON
          const v = JSON.parse(s);
          ok = typeof v === "object" && v !== null && !Array.isArray(v) && s.trim() === s && wsRunsOk(s);
        } catch { /* not JSON */ }
        assert.equal(verdict(g, mutated) === "complete", ok, s);
        checked++;
      }
    }
  }
  assert.ok(checked > 4000);
});

Deno.test("json schema: unsupported or malformed parts name where they are", () => {
  const bad: [unknown, string][] = [
    [{ type: "string", pattern: "(?=a)" }, "schema.pattern"],
    [{ type: "string", format: "date-tim" }, "schema.format"],
    [{ type: "object", properties: { a: { type: "integer", minimum: "0" } } }, "schema.properties.a.minimum"],
    [{ type: "array", minItems: 3, maxItems: 2 }, "schema.minItems"],
    [{ type: "strin" }, "schema.type"],
    [{ type: "object", properties: { a: {} }, required: ["b"] }, "schema.required"],
    [{ $ref: "#/$defs/missing" }, "schema.$ref"],
    [{ $ref: "https://example.com/s.json" }, "schema.$ref"],
    [{ $defs: { a: { $ref: "#/$defs/a" } }, $ref: "#/$defs/a" }, "schema"],
    [{ anyOf: [] }, "schema.anyOf"],
    [{ allOf: [{}, {}] }, "schema.allOf"],
    ["string", "schema"],
    [{ enum: Array.from({ length: 257 }, (_, i) => i) }, "schema.enum"],
    [{ anyOf: Array.from({ length: 257 }, () => ({ type: "null" })) }, "schema.anyOf"],
  ];
  for (const [schema, param] of bad) assertRefused(schema, param);
  // Annotations are fine.
  compileJsonSchema({ title: "T", description: "d", type: "object", properties: { a: { default: 1 } } }, "s");
});

Deno.test("json automaton: a value after a reasoning block, and function calls between marks", () => {
  const obj = compileJsonSchema(
    { type: "object", properties: { a: { type: "integer" } }, required: ["a"] },
    "s",
  );
  const think = { open: "<think>", close: "</think>", opensInPrompt: false };
  const free = afterReasoning(obj, think);
  assert.equal(verdict(free, '{"a":1}'), "complete"); // no block
  assert.equal(verdict(free, '<think>\n2 < 3, </thin </think>\n\n{"a":1}'), "complete");
  assert.equal(verdict(free, "<think>\n</think>\n\n"), "partial");
  assert.equal(verdict(free, '<think>x</think>\n\n\n\n\n{"a":1}'), "reject"); // at most 4 blank bytes
  assert.equal(verdict(free, 'x{"a":1}'), "reject");
  const opened = afterReasoning(obj, { ...think, opensInPrompt: true });
  assert.equal(verdict(opened, 'all free {"a":1} text</think>{"a":2}'), "complete");
  assert.equal(verdict(opened, '{"a":1}'), "partial"); // still inside the block

  const marks = {
    open: "<tool_call>\n",
    close: "\n</tool_call>",
    separator: "\n",
    argumentsKey: "arguments",
  };
  const tools = [
    {
      name: "get_weather",
      arguments: compileSchemaNode({ type: "object", properties: { city: { type: "string" } } }, "p"),
    },
    { name: "get_time", arguments: compileSchemaNode({ type: "object" }, "p") },
  ];
  const call = (name: string, args: string) =>
    `<tool_call>\n{"name": "${name}", "arguments": ${args}}\n</tool_call>`;
  const one = toolCallsGrammar(marks, tools, false);
  assert.equal(verdict(one, call("get_weather", '{"city": "Paris"}')), "complete");
  assert.equal(verdict(one, call("get_time", '{"tz": 1}')), "complete");
  assert.equal(verdict(one, call("get_weather", '{"tz": 1}')), "reject"); // not its parameters
  assert.equal(verdict(one, call("get_date", "{}")), "reject");
  assert.equal(verdict(one, `${call("get_time", "{}")}\n${call("get_time", "{}")}`), "reject"); // one call
  const many = toolCallsGrammar(marks, tools, true);
  assert.equal(verdict(many, call("get_time", "{}")), "canEnd"); // or another call
  assert.equal(verdict(many, `${call("get_time", "{}")}\n${call("get_weather", "{}")}`), "canEnd");
  assert.equal(verdict(many, "Sure: " + call("get_time", "{}")), "reject");
  // Llama 3.x: bare objects with "parameters", "; " between calls.
  const llama = { open: "", close: "", separator: "; ", argumentsKey: "parameters" };
  const bare = (name: string, args: string) => `{"name": "${name}", "parameters": ${args}}`;
  const llamaMany = toolCallsGrammar(llama, tools, true);
  assert.equal(verdict(llamaMany, bare("get_time", "{}")), "canEnd");
  assert.equal(
    verdict(llamaMany, `${bare("get_time", "{}")}; ${bare("get_weather", '{"city": "Oslo"}')}`),
    "canEnd",
  );
  assert.equal(verdict(llamaMany, call("get_time", "{}")), "reject");
  assert.equal(verdict(toolCallsGrammar(llama, tools, false), bare("get_time", "{}")), "complete");
  assert.equal(verdict(llamaMany, `{"name": "get_time", "arguments": {}}`), "reject");
  // Mistral's tokenizer v11 on: the bare name, [ARGS] and the arguments, [TOOL_CALLS] before each call.
  const v11 = { ...llama, open: "[TOOL_CALLS]", separator: "", argumentsMark: "[ARGS]" };
  const named = (name: string, args: string) => `[TOOL_CALLS]${name}[ARGS]${args}`;
  const v11Many = toolCallsGrammar(v11, tools, true);
  assert.equal(verdict(v11Many, named("get_weather", '{"city": "Paris"}')), "canEnd");
  assert.equal(verdict(v11Many, named("get_time", "{}") + named("get_weather", "{}")), "canEnd");
  assert.equal(verdict(v11Many, named("get_weather", '{"tz": 1}')), "reject");
  assert.equal(verdict(v11Many, "get_time[ARGS]{}"), "reject");
  assert.equal(verdict(v11Many, "[TOOL_CALLS]get_time{}"), "reject");
  assert.equal(verdict(v11Many, named("get_time", "{}") + " " + named("get_time", "{}")), "reject");
  assert.equal(verdict(toolCallsGrammar(v11, tools, false), named("get_time", "{}")), "complete");
});

Deno.test("json automaton: a choice of strings is exactly one of them", () => {
  const g = choiceGrammar(["yes", "no", "yesterday", "é"]);
  assert.equal(verdict(g, "yes"), "canEnd"); // or "yesterday"
  assert.equal(verdict(g, "yesterday"), "complete");
  assert.equal(verdict(g, "no"), "complete");
  assert.equal(verdict(g, "é"), "complete");
  assert.equal(verdict(g, "n"), "partial");
  assert.equal(verdict(g, "nope"), "reject");
  assert.equal(verdict(g, " yes"), "reject");
});

Deno.test("json automaton: a regex is matched whole; a match nothing extends is complete", () => {
  const phone = regexGrammar("[0-9]{3}-[0-9]{4}");
  assert.equal(verdict(phone, "555-1234"), "complete");
  assert.equal(verdict(phone, "555-12"), "partial");
  assert.equal(verdict(phone, "55a"), "reject");
  const num = regexGrammar("\\d+");
  assert.equal(verdict(num, "42"), "canEnd");
  // After a reasoning block, as a thinking template's answers are.
  const after = afterReasoning(phone, { open: "<think>", close: "</think>", opensInPrompt: false });
  assert.equal(verdict(after, "<think>hm</think>\n\n555-1234"), "complete");
});

Deno.test("json automaton: a string's pattern holds over its decoded characters (search unless anchored)", () => {
  const g = compileJsonSchema({
    type: "object",
    properties: {
      id: { type: "string", pattern: "^[a-z]+-\\d+$" },
      note: { type: "string", pattern: "ab|\n" },
    },
    required: ["id", "note"],
  }, "schema");
  assert.equal(verdict(g, '{"id": "abc-42", "note": "xxabyy"}'), "complete");
  assert.equal(verdict(g, '{"id": "abc-42", "note": "line\\nbreak"}'), "complete"); // the escape is a newline
  assert.equal(verdict(g, '{"id": "abc-42", "note": "xyz"}'), "reject");
  assert.equal(verdict(g, '{"id": "abc42", "note": "ab"}'), "reject");
  assert.equal(verdict(g, '{"id": "Abc-1", "note": "ab"}'), "reject");
  assert.equal(verdict(g, '{"id": "a\\u0062-1", "note": "ab"}'), "reject"); // no \u escapes under a pattern
});

Deno.test("json automaton: a regex, a choice or free reasoning text may begin with whitespace", () => {
  assert.equal(verdict(regexGrammar("\\s*yes"), "\n yes"), "complete");
  assert.equal(verdict(regexGrammar(" ?[0-9]+"), " 12"), "canEnd");
  assert.equal(verdict(regexGrammar("a*"), ""), "canEnd"); // the whole output may be empty
  assert.equal(verdict(choiceGrammar([" a", "b"]), " a"), "complete");
  const reasoned = afterReasoning(compileJsonSchema({ type: "boolean" }, "schema"), {
    open: "<think>",
    close: "</think>",
    opensInPrompt: true,
  });
  assert.equal(verdict(reasoned, "\nhm</think>\n\ntrue"), "complete");
  // JSON values still take no whitespace before them.
  assert.equal(verdict(compileJsonSchema({ type: "boolean" }, "schema"), " true"), "reject");
});
