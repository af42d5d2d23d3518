/**
 * Reasoning split from the answer (vLLM's reasoning parsers for Qwen3 and DeepSeek-R1): a model whose chat
 * template knows `<think>` writes `<think>…</think>` before its answer, or, when the template's generation
 * prompt already opens `<think>`, only `…</think>`. The text before `</think>` goes to the message's
 * `reasoning_content`, the rest (leading newlines dropped) to `content`. An answer that never opened a think
 * block is all content; one cut short inside it is all reasoning.
 */

import type { ReasoningMarks } from "../inference/engine/mod.ts";

const OPEN = "<think>";
const CLOSE = "</think>";

/** How a served model's answers start (EngineStatus.reasoning). */
export interface ReasoningStart {
  /** the template's generation prompt ends with `<think>`: answers start inside it */
  opensInPrompt: boolean;
}

/** The marks of a template's reasoning block: a constrained answer's grammar starts after it. */
export function reasoningMarks(start: ReasoningStart): ReasoningMarks {
  return { open: OPEN, close: CLOSE, opensInPrompt: start.opensInPrompt };
}

/** An answer split into reasoning (null when there was none) and content. */
export interface SplitAnswer {
  reasoning: string | null;
  content: string;
}

/**
 * Splits a whole answer.
 * @example
 * ```ts
 * import { splitReasoning } from "./reasoning.ts";
 * const a = splitReasoning("<think>\n2 and 2\n</think>\n\n4", { opensInPrompt: false });
 * console.assert(a.reasoning === "\n2 and 2\n" && a.content === "4");
 * ```
 */
export function splitReasoning(text: string, start: ReasoningStart): SplitAnswer {
  const s = new ReasoningStream(start);
  const first = s.push(text);
  const last = s.finish();
  const reasoning = first.reasoning + last.reasoning;
  return { reasoning: s.reasoned ? reasoning : null, content: first.content + last.content };
}

/** One streamed choice's text split as it arrives; a possible partial tag is held back until it resolves. */
export class ReasoningStream {
  /** "start": before the first text could show `<think>`; then inside the block, then the answer. */
  #state: "start" | "thinking" | "answer";
  #held = "";
  /** the answer has started and its leading newlines are not yet dropped */
  #trim = false;
  /** whether any reasoning was seen (a think block opened) */
  reasoned = false;

  constructor(start: ReasoningStart) {
    this.#state = start.opensInPrompt ? "thinking" : "start";
    this.reasoned = start.opensInPrompt;
  }

  /** Takes the next piece of text; returns the reasoning and content that may be sent now. */
  push(text: string): SplitAnswer & { reasoning: string } {
    this.#held += text;
    const out = { reasoning: "", content: "" };
    for (;;) {
      if (this.#state === "start") {
        const t = this.#held.trimStart();
        if (t.startsWith(OPEN)) {
          this.#state = "thinking";
          this.reasoned = true;
          this.#held = t.slice(OPEN.length);
          continue;
        }
        if (OPEN.startsWith(t)) return out; // maybe the tag, not yet whole
        this.#state = "answer";
        continue;
      }
      if (this.#state === "thinking") {
        const at = this.#held.indexOf(CLOSE);
        if (at >= 0) {
          out.reasoning += this.#held.slice(0, at);
          this.#held = this.#held.slice(at + CLOSE.length);
          this.#state = "answer";
          this.#trim = true;
          continue;
        }
        const keep = partialTail(this.#held, CLOSE);
        out.reasoning += this.#held.slice(0, this.#held.length - keep);
        this.#held = this.#held.slice(this.#held.length - keep);
        return out;
      }
      if (this.#trim) {
        this.#held = this.#held.replace(/^\n+/, "");
        if (this.#held === "") return out;
        this.#trim = false;
      }
      out.content += this.#held;
      this.#held = "";
      return out;
    }
  }

  /** At the end of the choice: whatever was held back. */
  finish(): SplitAnswer & { reasoning: string } {
    const held = this.#held;
    this.#held = "";
    return this.#state === "thinking" ? { reasoning: held, content: "" } : { reasoning: "", content: held };
  }
}

/** Length of the longest tail of `text` that starts `tag` (a tag that may still be arriving). */
export function partialTail(text: string, tag: string): number {
  let keep = Math.min(tag.length - 1, text.length);
  while (keep > 0 && !tag.startsWith(text.slice(-keep))) keep--;
  return keep;
}
