/**
 * What constrains an answer, as requests say it: OpenAI's `tools` with `tool_choice` (function calling; forced
 * calls become a grammar in the chat route) and `response_format` with vLLM's `structured_outputs` /
 * `guided_json` (a JSON Schema compiled here, so a schema the server cannot enforce is a 400 naming the
 * keyword's path), its choice, regex and GBNF or Lark grammar, and llama-server's `grammar`. Pure validators,
 * as protocol.ts's.
 */
import {
  choiceGrammar,
  compileSchemaNode,
  GbnfError,
  gbnfGrammar,
  grammarOf,
  type JsonGrammar,
  type JsonNode,
  jsonObjectGrammar,
  larkGrammar,
  RegexError,
  regexGrammar,
  SchemaError,
  type ToolSpec,
} from "../inference/engine/mod.ts";
import { invalidRequest } from "./errors.ts";
import { badValue, type Body, given, isObject, requireBool, unsupported } from "./validate.ts";

const MAX_TOOLS = 128;

/**
 * A chat's tools: the definitions the template renders, whether the answer's calls are all read back into
 * `tool_calls` or (`parallel_tool_calls: false`) only the first, and with `tool_choice` "required" or a
 * named function the functions the output is constrained to call (null: "auto", the model may answer).
 */
export interface ChatTools {
  defs: { type: "function"; function: Record<string, unknown> }[];
  parallel: boolean;
  forced: ToolSpec[] | null;
}

/**
 * `tools` (function definitions), `tool_choice` ("auto", the default with tools, or "none": the tools are
 * then not shown to the model) and `parallel_tool_calls`; null when no tool is offered. "required" and a
 * named function would need constrained decoding: a 400.
 */
export function parseChatTools(b: Body): ChatTools | null {
  const choice = b.tool_choice;
  const named = isObject(choice) && choice.type === "function" && isObject(choice.function) &&
      typeof choice.function.name === "string"
    ? choice.function.name
    : null;
  if (given(choice) && !["none", "auto", "required"].includes(choice as string) && named === null) {
    throw badValue(
      "tool_choice",
      choice,
      '"none", "auto", "required" or {"type": "function", "function": {"name": …}}',
    );
  }
  const parallel = given(b.parallel_tool_calls) ? requireBool(b, "parallel_tool_calls") : true;
  if (!given(b.tools) || (Array.isArray(b.tools) && b.tools.length === 0)) {
    if (choice === "required" || named !== null) {
      throw invalidRequest('Cannot force a function call without "tools"', "tool_choice");
    }
    return null;
  }
  if (!Array.isArray(b.tools) || b.tools.length > MAX_TOOLS) {
    throw badValue("tools", b.tools, `an array of at most ${MAX_TOOLS} function definitions`);
  }
  const defs = b.tools.map((t, i) => {
    const fn = isObject(t) ? t.function : undefined;
    if (!isObject(t) || t.type !== "function" || !isObject(fn)) {
      throw badValue(
        `tools[${i}]`,
        t,
        '{"type": "function", "function": {"name", "description", "parameters"}}',
      );
    }
    if (typeof fn.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(fn.name)) {
      throw badValue(`tools[${i}].function.name`, fn.name, "1 to 64 letters, digits, _ or -");
    }
    if (given(fn.description) && typeof fn.description !== "string") {
      throw badValue(`tools[${i}].function.description`, fn.description, "a string");
    }
    if (given(fn.parameters) && !isObject(fn.parameters)) {
      throw badValue(`tools[${i}].function.parameters`, fn.parameters, "a JSON Schema object");
    }
    return { type: "function" as const, function: fn };
  });
  if (choice === "none") return null;
  // Forced calls: the output is constrained to calls of these functions, each to its parameters' schema.
  let forced: ToolSpec[] | null = null;
  if (choice === "required" || named !== null) {
    const picked = defs.map((d, i) => [d.function, i] as const).filter(([fn]) =>
      named === null || fn.name === named
    );
    if (picked.length === 0) {
      throw invalidRequest(`Cannot force a call of "${named}": no tool has that name`, "tool_choice");
    }
    forced = picked.map(([fn, i]) => ({
      name: fn.name as string,
      arguments: schemaNode(fn.parameters ?? { type: "object" }, `tools[${i}].function.parameters`),
    }));
  }
  // A named function is called once (OpenAI's "forces the model to call that function").
  return { defs, parallel: parallel && named === null, forced };
}

/** A schema's grammar node, its errors as 400s naming where they sit. */
function schemaNode(schema: unknown, param: string): JsonNode {
  try {
    return compileSchemaNode(schema, param);
  } catch (err) {
    if (err instanceof SchemaError) throw invalidRequest(err.message, err.param);
    throw err;
  }
}

/** Most characters of a regex (its NFA grows with them). */
const MAX_REGEX = 4096;
/** Most strings of a choice (each is a branch the mask walk carries along). */
const MAX_CHOICES = 256;
/** Most characters of a GBNF or Lark grammar (gbnf.ts bounds its items and nesting too). */
const MAX_GRAMMAR = 65_536;

/**
 * The grammar the output must follow, or null: OpenAI's `response_format` (`json_object`, `json_schema`), or
 * vLLM's `structured_outputs` (`json`: a schema; `choice`: exactly one of some strings; `regex`: text the
 * expression matches whole; `grammar`: text of a GBNF grammar, gbnf.ts, or of a Lark one when no line has
 * `::=`, lark.ts) and their older spellings `guided_json` (a schema, or a JSON string of one),
 * `guided_choice`, `guided_regex` and `guided_grammar`, or llama-server's `grammar` (GBNF or Lark alike).
 * At most one of them.
 */
export function parseStructuredOutput(b: Body): JsonGrammar | null {
  const asked: [param: string, value: unknown, kind: "schema" | "choice" | "regex" | "grammar"][] = [];
  const rf = b.response_format;
  if (given(rf)) {
    if (!isObject(rf)) throw badValue("response_format", rf, 'an object with "type"');
    if (rf.type === "json_object") asked.push(["response_format", null, "schema"]);
    else if (rf.type === "json_schema") {
      const js = rf.json_schema;
      if (!isObject(js)) {
        throw badValue("response_format.json_schema", js, 'an object with "name" and "schema"');
      }
      if (given(js.name) && (typeof js.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(js.name))) {
        throw badValue("response_format.json_schema.name", js.name, "1 to 64 letters, digits, _ or -");
      }
      if (given(js.strict) && typeof js.strict !== "boolean") {
        throw badValue("response_format.json_schema.strict", js.strict, "a boolean");
      }
      asked.push(["response_format.json_schema.schema", given(js.schema) ? js.schema : null, "schema"]);
    } else if (rf.type !== "text") {
      throw badValue("response_format.type", rf.type, '"text", "json_object" or "json_schema"');
    }
  }
  if (given(b.guided_json)) asked.push(["guided_json", b.guided_json, "schema"]);
  if (given(b.guided_choice)) asked.push(["guided_choice", b.guided_choice, "choice"]);
  if (given(b.guided_regex)) asked.push(["guided_regex", b.guided_regex, "regex"]);
  if (given(b.guided_grammar)) asked.push(["guided_grammar", b.guided_grammar, "grammar"]);
  // llama-server's clients send "" for no grammar.
  if (given(b.grammar) && b.grammar !== "") asked.push(["grammar", b.grammar, "grammar"]);
  if (given(b.structured_outputs)) {
    const so = b.structured_outputs;
    if (!isObject(so)) {
      throw badValue("structured_outputs", so, 'an object with "json", "choice", "regex" or "grammar"');
    }
    const other = Object.keys(so).find((k) =>
      !["json", "choice", "regex", "grammar"].includes(k) && given(so[k])
    );
    if (other !== undefined) {
      throw unsupported(
        `structured_outputs.${other}`,
        "structured outputs take a JSON schema (json), strings to choose from (choice), a regex or a GBNF " +
          "or Lark grammar",
      );
    }
    if (given(so.json)) asked.push(["structured_outputs.json", so.json, "schema"]);
    if (given(so.choice)) asked.push(["structured_outputs.choice", so.choice, "choice"]);
    if (given(so.regex)) asked.push(["structured_outputs.regex", so.regex, "regex"]);
    if (given(so.grammar)) asked.push(["structured_outputs.grammar", so.grammar, "grammar"]);
  }
  if (asked.length > 1) {
    throw invalidRequest(`Cannot use both "${asked[0][0]}" and "${asked[1][0]}"`, asked[1][0]);
  }
  if (asked.length === 0) return null;
  let [param, value, kind] = asked[0];
  if (kind === "regex") {
    if (typeof value !== "string" || value === "" || value.length > MAX_REGEX) {
      throw badValue(param, value, `a regular expression of 1 to ${MAX_REGEX} characters`);
    }
    try {
      return regexGrammar(value);
    } catch (err) {
      if (err instanceof RegexError) throw invalidRequest(err.message, param);
      throw err;
    }
  }
  if (kind === "grammar") {
    if (typeof value !== "string" || value === "" || value.length > MAX_GRAMMAR) {
      throw badValue(param, value, `a GBNF or Lark grammar of 1 to ${MAX_GRAMMAR} characters`);
    }
    try {
      return isLark(value) ? larkGrammar(value) : gbnfGrammar(value);
    } catch (err) {
      // A LarkError is a GbnfError too.
      if (err instanceof GbnfError) throw invalidRequest(err.message, param);
      throw err;
    }
  }
  if (kind === "choice") {
    const ok = Array.isArray(value) && value.length > 0 && value.length <= MAX_CHOICES &&
      value.every((c) => typeof c === "string" && c !== "");
    if (!ok) throw badValue(param, value, `1 to ${MAX_CHOICES} non-empty strings`);
    return choiceGrammar(value as string[]);
  }
  if (value === null) return jsonObjectGrammar();
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      throw badValue(param, value, "a JSON schema (an object, or a string holding one)");
    }
  }
  return grammarOf(schemaNode(value, param));
}

/**
 * Whether a grammar is Lark rather than GBNF, by vLLM's rule (`grammar_is_likely_lark`): no line has `::=`
 * outside a `#` or `//` comment.
 */
function isLark(grammar: string): boolean {
  return !grammar.split("\n").some((line) => line.replace(/(#|\/\/).*$/, "").includes("::="));
}
