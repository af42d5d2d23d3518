/**
 * Function calls read back from generated text into OpenAI's `tool_calls`, in the forms of vLLM's tool
 * parsers that the chat template asks for (ChatTemplate.toolCallFormat):
 * - "hermes" (Qwen2.5, Qwen3, Hermes): `<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n
 *   </tool_call>`, once per call; text before the first call is the message's content.
 * - "llama3_json" (Llama 3.1 to 3.3): the whole answer is `{"name": "get_weather", "parameters": {…}}`
 *   (optionally after `<|python_tag|>`), several separated by `;`.
 * - "mistral" (Mistral 7B v0.3 to Small 3.1): the whole answer is `[TOOL_CALLS] [{"name": "get_weather",
 *   "arguments": {…}}, …]`, one JSON list. [TOOL_CALLS] is a special token, left out of the text the
 *   server decodes, so the list alone reads as calls too.
 * - "mistral_args" (Mistral's tokenizer v11 on: Small 3.2, Magistral, Devstral, Ministral 3): content, then
 *   `[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}` per call, [TOOL_CALLS] optional before all but the
 *   first; `[CALL_ID]<id>` may come before [ARGS] (the call then keeps that id), and `get_weather{…}` without
 *   [ARGS] reads too. The marks are special tokens whose text the chat route asks the engine to keep
 *   (CALL_TOKENS); they never reach content: an answer that is not calls is its text without them, as
 *   decoding that skips special tokens would have given it.
 * When a call's JSON does not parse, nothing is taken for a call: the whole answer stays content, as the
 * model wrote it.
 */
import type { ToolCallFormat, ToolCallMarks } from "../inference/engine/mod.ts";
import type { ToolCall } from "./protocol.ts";
import { partialTail } from "./reasoning.ts";

const START = "<tool_call>";
const END = "</tool_call>";
const PYTHON_TAG = "<|python_tag|>";
const MISTRAL_TAG = "[TOOL_CALLS]";
const MISTRAL_ARGS = "[ARGS]";

/**
 * The special tokens a format's calls are read by: the chat route has the engine keep their text
 * (GenerateRequest.keepSpecialTokens) where decoding drops the other special tokens, and the parser takes
 * them out of content.
 */
export const CALL_TOKENS: Readonly<Partial<Record<ToolCallFormat, readonly string[]>>> = Object.freeze({
  mistral_args: Object.freeze([MISTRAL_TAG, MISTRAL_ARGS, "[CALL_ID]"]),
});

/**
 * How a template writes calls: what `tool_choice` "required" or a named function constrains the answer to
 * (inference/structured toolCallsGrammar), per format.
 */
export const CALL_MARKS: Readonly<Record<ToolCallFormat, Readonly<ToolCallMarks>>> = Object.freeze({
  hermes: { open: `${START}\n`, close: `\n${END}`, separator: "\n", argumentsKey: "arguments" },
  llama3_json: { open: "", close: "", separator: "; ", argumentsKey: "parameters" },
  mistral: {
    open: "",
    close: "",
    separator: ", ",
    argumentsKey: "arguments",
    list: { open: "[", close: "]" },
  },
  // A grammar walks text, where no special token is: forced calls spell the marks in ordinary tokens.
  mistral_args: {
    open: MISTRAL_TAG,
    close: "",
    separator: "",
    argumentsKey: "arguments",
    argumentsMark: MISTRAL_ARGS,
  },
});

/** The text that starts the first call in the formats whose calls may follow content. */
const CALL_START: Partial<Record<ToolCallFormat, string>> = { hermes: START, mistral_args: MISTRAL_TAG };

/** The text that opens an answer of calls in the formats whose whole answer is calls. */
const ANSWER_START: Partial<Record<ToolCallFormat, { tag: string; json: string }>> = {
  llama3_json: { tag: PYTHON_TAG, json: "{" },
  mistral: { tag: MISTRAL_TAG, json: "[" },
};

/** An answer split into content and calls; `calls` is empty when it holds none (or none that parse). */
export interface ParsedAnswer {
  content: string;
  calls: ToolCall[];
}

/**
 * Splits a whole answer.
 * @param text The generated text.
 * @param parallel false keeps only the first call (`parallel_tool_calls: false`).
 * @param format the template's form of calls
 * @example
 * ```ts
 * import { parseToolCalls } from "./tool_calls.ts";
 * const a = parseToolCalls('Let me look.<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>');
 * console.assert(a.content === "Let me look." && a.calls[0].function.arguments === '{"x":1}');
 * ```
 */
export function parseToolCalls(
  text: string,
  parallel = true,
  format: ToolCallFormat = "hermes",
): ParsedAnswer {
  if (format === "llama3_json") return parseLlamaCalls(text, parallel);
  if (format === "mistral") return parseMistralCalls(text, parallel);
  if (format === "mistral_args") return parseMistralArgsCalls(text, parallel);
  const at = text.indexOf(START);
  if (at < 0) return { content: text, calls: [] };
  const calls: ToolCall[] = [];
  let rest = text.slice(at);
  while (rest.startsWith(START)) {
    const end = rest.indexOf(END);
    // An answer cut short (max_tokens) may leave the last call open: read what is there.
    const body = rest.slice(START.length, end < 0 ? undefined : end);
    const call = readCall(body);
    if (!call) return { content: text, calls: [] };
    calls.push(call);
    rest = end < 0 ? "" : rest.slice(end + END.length).trimStart();
  }
  // Text after the calls that is not another call: the answer is not one the parser understands.
  if (rest !== "") return { content: text, calls: [] };
  return { content: text.slice(0, at), calls: parallel ? calls : calls.slice(0, 1) };
}

/** Llama 3.x: the whole answer is calls (after an optional <|python_tag|>), `;`-separated JSON objects. */
function parseLlamaCalls(text: string, parallel: boolean): ParsedAnswer {
  let rest = text.trimStart();
  if (rest.startsWith(PYTHON_TAG)) rest = rest.slice(PYTHON_TAG.length).trimStart();
  if (!rest.startsWith("{")) return { content: text, calls: [] };
  const calls: ToolCall[] = [];
  while (rest !== "") {
    const end = jsonObjectEnd(rest);
    const call = end < 0 ? null : readCall(rest.slice(0, end));
    if (!call) return { content: text, calls: [] };
    calls.push(call);
    rest = rest.slice(end).trimStart();
    if (rest.startsWith(";")) rest = rest.slice(1).trimStart();
  }
  return { content: "", calls: parallel ? calls : calls.slice(0, 1) };
}

/** Mistral: the whole answer is one JSON list of calls (after an optional [TOOL_CALLS]). */
function parseMistralCalls(text: string, parallel: boolean): ParsedAnswer {
  let rest = text.trimStart();
  if (rest.startsWith(MISTRAL_TAG)) rest = rest.slice(MISTRAL_TAG.length).trimStart();
  const end = rest.startsWith("[") ? jsonObjectEnd(rest) : -1;
  if (end < 0 || rest.slice(end).trim() !== "") return { content: text, calls: [] };
  let list: unknown;
  try {
    list = JSON.parse(rest.slice(0, end));
  } catch {
    return { content: text, calls: [] };
  }
  const read = Array.isArray(list) ? list.map(callOf) : [];
  const calls = read.filter((c) => c !== null);
  if (calls.length === 0 || calls.length < read.length) return { content: text, calls: [] };
  return { content: "", calls: parallel ? calls : calls.slice(0, 1) };
}

/** The start of a call in Mistral's v11 form up to its arguments' `{`: the name, `[CALL_ID]<id>`, `[ARGS]`. */
const ARGS_CALL =
  /^\s*([a-zA-Z0-9_-]{1,64})\s*(?:\[CALL_ID\]\s*([a-zA-Z0-9_-]{1,64})?\s*)?(?:\[ARGS\]\s*)?(?=\{)/;

/** Mistral v11 on: content, then calls `[TOOL_CALLS]name[ARGS]{…}`, [TOOL_CALLS] optional after the first. */
function parseMistralArgsCalls(text: string, parallel: boolean): ParsedAnswer {
  const tokens = CALL_TOKENS.mistral_args!;
  const at = text.indexOf(MISTRAL_TAG);
  const asContent = { content: withoutTokens(text, tokens), calls: [] };
  if (at < 0) return asContent;
  const calls: ToolCall[] = [];
  let rest = text.slice(at);
  while (rest !== "") {
    if (rest.startsWith(MISTRAL_TAG)) rest = rest.slice(MISTRAL_TAG.length);
    const head = ARGS_CALL.exec(rest);
    if (!head) return asContent;
    const start = head[0].length;
    const end = jsonObjectEnd(rest.slice(start));
    if (end < 0) return asContent;
    let args: unknown;
    try {
      args = JSON.parse(rest.slice(start, start + end));
    } catch {
      return asContent;
    }
    // The model's own id when it wrote one (and not twice), for the template to match the tool's answer to.
    const [, name, given] = head;
    const id = given !== undefined && !calls.some((c) => c.id === given) ? given : newCallId();
    calls.push({ id, type: "function", function: { name, arguments: JSON.stringify(args) } });
    rest = rest.slice(start + end).trimStart();
  }
  return { content: withoutTokens(text.slice(0, at), tokens), calls: parallel ? calls : calls.slice(0, 1) };
}

/** Text without these special tokens' text: what decoding that skips them gives. */
function withoutTokens(text: string, tokens: readonly string[]): string {
  return tokens.reduce((out, token) => out.replaceAll(token, ""), text);
}

/** The length of the JSON object (or list) that `text` starts with (strings and escapes respected), or −1. */
function jsonObjectEnd(text: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if ((c === "}" || c === "]") && --depth === 0) return i + 1;
  }
  return -1;
}

function readCall(body: string): ToolCall | null {
  try {
    return callOf(JSON.parse(body));
  } catch {
    return null;
  }
}

/** A call from its parsed JSON object, or null if it is not one. */
function callOf(json: unknown): ToolCall | null {
  if (typeof json !== "object" || json === null) return null;
  // "parameters" is Llama 3.x's name for the arguments (vLLM's llama3_json parser takes either).
  const { name, arguments: given, parameters } = json as {
    name?: unknown;
    arguments?: unknown;
    parameters?: unknown;
  };
  const args = given ?? parameters;
  if (typeof name !== "string" || name === "") return null;
  return { id: newCallId(), type: "function", function: { name, arguments: JSON.stringify(args ?? {}) } };
}

/** A fresh id in OpenAI's shape. */
function newCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/**
 * One streamed choice's text, held back from the first `<tool_call>` ("mistral_args": `[TOOL_CALLS]`) on
 * (and while the text so far might be its start), so that calls go out whole in `tool_calls` and never as
 * content. For "llama3_json" and "mistral" an answer is calls only if it starts with them, so its start is
 * held until its first character says. A format's CALL_TOKENS never go out as content.
 */
export class ToolCallStream {
  #held = "";
  #inCall = false;
  #decided = false;
  readonly #parallel: boolean;
  readonly #format: ToolCallFormat;
  readonly #tokens: readonly string[];

  constructor(parallel = true, format: ToolCallFormat = "hermes") {
    this.#parallel = parallel;
    this.#format = format;
    this.#tokens = CALL_TOKENS[format] ?? [];
  }

  /** Takes the next piece of text; returns the content that may be sent now. */
  push(text: string): string {
    this.#held += text;
    if (this.#inCall) return "";
    const whole = ANSWER_START[this.#format];
    if (whole) return this.#pushWhole(whole);
    const start = CALL_START[this.#format] ?? START;
    const at = this.#held.indexOf(start);
    if (at >= 0) {
      this.#inCall = true;
      const out = this.#held.slice(0, at);
      this.#held = this.#held.slice(at);
      return withoutTokens(out, this.#tokens);
    }
    // Keep back the longest tail that could still become the call's start (or one of the format's tokens).
    const keep = Math.max(...[start, ...this.#tokens].map((mark) => partialTail(this.#held, mark)));
    const out = this.#held.slice(0, this.#held.length - keep);
    this.#held = this.#held.slice(this.#held.length - keep);
    return withoutTokens(out, this.#tokens);
  }

  /** A format whose answer is calls only as a whole: decided by its start, the tag or the JSON's first character. */
  #pushWhole(opening: { tag: string; json: string }): string {
    if (this.#decided) {
      const out = this.#held;
      this.#held = "";
      return out;
    }
    const start = this.#held.trimStart();
    if (start === "" || (opening.tag.startsWith(start) && start.length < opening.tag.length)) return "";
    this.#decided = true;
    this.#inCall = start.startsWith(opening.json) || start.startsWith(opening.tag);
    return this.#inCall ? "" : this.#pushWhole(opening);
  }

  /** At the end of the choice: the content still held (sent as content) and the calls. */
  finish(): ParsedAnswer {
    const held = this.#held;
    this.#held = "";
    if (!this.#inCall) return { content: held, calls: [] };
    // Not calls after all: the text as content (without the format's tokens; the others give it as held).
    const parsed = parseToolCalls(held, this.#parallel, this.#format);
    return parsed.calls.length > 0
      ? { content: "", calls: parsed.calls }
      : { content: parsed.content, calls: [] };
  }
}
