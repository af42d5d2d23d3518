/**
 * Token counts of one generation's events, in OpenAI's `usage` shape: what the routes answer and the request
 * log records (one definition of the counting).
 */
import type { TokenEvent } from "../inference/engine/mod.ts";
import type { Usage } from "./protocol.ts";

/** A running count (usageCounter). */
export interface UsageCounter {
  add(ev: TokenEvent): void;
  /** true from the end event of the last choice on */
  done(): boolean;
  /** the counts so far (exact once done) */
  total(): Usage;
  /** whether any end event reported its prefix-cache hits (the engine does; a log line says null otherwise) */
  reportsCached(): boolean;
}

/**
 * Adds up usage over a request's choices: each prompt once, every choice's completion tokens, and the
 * prompt ids the prefix cache served. With several prompts (startBatch), choice `p·n + i` is prompt p's.
 */
export function usageCounter(
  n = 1,
  prompts = 1,
): UsageCounter {
  const prompt = new Array<number>(prompts).fill(0);
  const cached = new Array<number>(prompts).fill(0);
  // Per choice: its tokens so far from the deltas, its exact count once it ends.
  const generated = new Array<number>(n * prompts).fill(0);
  let started = 0;
  let ended = 0;
  let reported = false;
  return {
    add(ev) {
      if (ev.type === "start") started = ev.promptTokens;
      if (ev.type === "delta") generated[ev.index ?? 0] += ev.tokens ?? 0;
      if (ev.type === "end") {
        const p = Math.floor((ev.index ?? 0) / n);
        prompt[p] = ev.promptTokens;
        generated[ev.index ?? 0] = ev.completionTokens;
        // The choices of a prompt share it: each reports the same cached prefix.
        cached[p] = Math.max(cached[p], ev.cachedTokens ?? 0);
        reported ||= ev.cachedTokens !== undefined;
        ended++;
      }
    },
    done: () => ended >= n * prompts,
    reportsCached: () => reported,
    total: () => {
      // Before every prompt's end, the start's count (a batch's start sums its prompts).
      const promptTokens = ended < n * prompts ? Math.max(started, sum(prompt)) : sum(prompt);
      const completion = sum(generated);
      return {
        prompt_tokens: promptTokens,
        completion_tokens: completion,
        total_tokens: promptTokens + completion,
        prompt_tokens_details: { cached_tokens: sum(cached) },
      };
    },
  };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
