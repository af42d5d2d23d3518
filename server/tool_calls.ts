/**
 * Function calls read back from generated text into OpenAI's `tool_calls` (vLLM's "hermes" tool parser):
 * a model whose chat template offers tools in that form answers
 * `<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>`, once per call. Text
 * before the first call is the message's content. When a call's JSON does not parse, nothing is taken for a
 * call: the whole answer stays content, as the model wrote it.
 */
import type { ToolCallMarks } from "../inference/engine/mod.ts";
import type { ToolCall } from "./protocol.ts";
import { partialTail } from "./reasoning.ts";

const START = "<tool_call>";
const END = "</tool_call>";

/** How a hermes template writes a call: what `tool_choice` "required" or a named function constrains to. */
export const HERMES_CALL_MARKS: Readonly<ToolCallMarks> = Object.freeze({
  open: `${START}\n`,
  close: `\n${END}`,
  separator: "\n",
});

/** An answer split into content and calls; `calls` is empty when it holds none (or none that parse). */
export interface ParsedAnswer {
  content: string;
  calls: ToolCall[];
}

/**
 * Splits a whole answer.
 * @param text The generated text.
 * @param parallel false keeps only the first call (`parallel_tool_calls: false`).
 * @example
 * ```ts
 * import { parseToolCalls } from "./tool_calls.ts";
 * const a = parseToolCalls('Let me look.<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>');
 * console.assert(a.content === "Let me look." && a.calls[0].function.arguments === '{"x":1}');
 * ```
 */
export function parseToolCalls(text: string, parallel = true): ParsedAnswer {
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

function readCall(body: string): ToolCall | null {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return null;
  }
  if (typeof json !== "object" || json === null) return null;
  const { name, arguments: args } = json as { name?: unknown; arguments?: unknown };
  if (typeof name !== "string" || name === "") return null;
  return {
    id: `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`,
    type: "function",
    function: { name, arguments: JSON.stringify(args ?? {}) },
  };
}

/**
 * One streamed choice's text, held back from the first `<tool_call>` on (and while the text so far might
 * be its start), so that calls go out whole in `tool_calls` and never as content.
 */
export class ToolCallStream {
  #held = "";
  #inCall = false;
  readonly #parallel: boolean;

  constructor(parallel = true) {
    this.#parallel = parallel;
  }

  /** Takes the next piece of text; returns the content that may be sent now. */
  push(text: string): string {
    this.#held += text;
    if (this.#inCall) return "";
    const at = this.#held.indexOf(START);
    if (at >= 0) {
      this.#inCall = true;
      const out = this.#held.slice(0, at);
      this.#held = this.#held.slice(at);
      return out;
    }
    // Keep back the longest tail that could still become "<tool_call>".
    const keep = partialTail(this.#held, START);
    const out = this.#held.slice(0, this.#held.length - keep);
    this.#held = this.#held.slice(this.#held.length - keep);
    return out;
  }

  /** At the end of the choice: the content still held (sent as content) and the calls. */
  finish(): ParsedAnswer {
    const held = this.#held;
    this.#held = "";
    if (!this.#inCall) return { content: held, calls: [] };
    const parsed = parseToolCalls(held, this.#parallel);
    return parsed.calls.length > 0 ? { content: "", calls: parsed.calls } : { content: held, calls: [] };
  }
}
