/**
 * From sampled ids to a request's events: one `Choice` per sequence turns ids into text (streaming
 * detokenizer, stop strings held back, EOS and stop ids), logprob entries and its end event; an
 * `EventChannel` carries the events of all of a request's choices to the caller's iterator.
 */
import { LOGPROB_RANK_WORD } from "../../kernels/ops/mod.ts";
import type { GrammarMatcher } from "../structured/mod.ts";
import { createStreamDecoder, type Tokenizer } from "../text/mod.ts";
import { createStopMatcher } from "./stop_text.ts";
import type { SeqSink } from "./scheduler.ts";
import type { TokenEvent, TokenLogprob } from "./types.ts";

/**
 * An async queue of events with one reader; consecutive unread deltas of a choice merge into one, except that
 * nothing merges into a delta of no generated id (the echoed prompt stays the choice's first delta).
 */
export class EventChannel {
  #queue: TokenEvent[] = [];
  #wake: (() => void) | null = null;
  #closed = false;
  #error: Error | null = null;

  push(ev: TokenEvent): void {
    const last = this.#queue.at(-1);
    if (
      ev.type === "delta" && last?.type === "delta" && (last.index ?? 0) === (ev.index ?? 0) &&
      (last.tokens ?? 0) > 0
    ) {
      const logprobs = [...(last.logprobs ?? []), ...(ev.logprobs ?? [])];
      const ids = [...(last.ids ?? []), ...(ev.ids ?? [])];
      this.#queue[this.#queue.length - 1] = {
        ...last,
        text: last.text + ev.text,
        tokens: (last.tokens ?? 0) + (ev.tokens ?? 0),
        ...(logprobs.length > 0 ? { logprobs } : {}),
        ...(ids.length > 0 ? { ids } : {}),
      };
    } else {
      this.#queue.push(ev);
    }
    this.#poke();
  }

  close(): void {
    this.#closed = true;
    this.#poke();
  }

  fail(err: Error): void {
    this.#error = err;
    this.#poke();
  }

  #poke(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TokenEvent> {
    for (;;) {
      if (this.#queue.length > 0) {
        yield this.#queue.shift()!;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#closed) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}

/** What a choice needs to know. */
export interface ChoiceSpec {
  index: number;
  tokenizer: Tokenizer;
  prompt: readonly number[];
  stop: readonly string[];
  /** ids that end the choice (EOS unless ignored, stop_token_ids); not returned */
  stopIds: ReadonlySet<number>;
  /** the request's own stop_token_ids among them, which the end event names (vLLM's stop_reason; EOS: none) */
  stopTokenIds?: ReadonlySet<number>;
  /** most ids (it ends with "length" there) */
  limit: number;
  /** top logprobs per token, or null for no logprobs */
  logprobs: number | null;
  channel: EventChannel;
  /** the grammar the output follows (structured output): advanced by every id; complete ends the choice */
  grammar?: GrammarMatcher | null;
  /** special tokens whose text the choice's text keeps (GenerateRequest.keepSpecialTokens) */
  keepSpecialTokens?: readonly string[];
  /** false: the text keeps every special token (GenerateRequest.skipSpecialTokens); default true */
  skipSpecialTokens?: boolean;
  /** the stop string that ends the choice stays in its text (GenerateRequest.includeStopStr) */
  includeStopStr?: boolean;
  /** deltas carry their ids, the stop id that ends the choice too (GenerateRequest.returnTokenIds) */
  ids?: boolean;
  /** called once when the choice has sent its end event */
  onEnd: (completionTokens: number) => void;
}

/** Turns one sequence's ids into delta and end events. */
export function createChoice(spec: ChoiceSpec): SeqSink {
  const { index, tokenizer, channel } = spec;
  const decoder = createStreamDecoder(tokenizer, {
    context: spec.prompt,
    keepSpecialTokens: spec.keepSpecialTokens ?? [],
    skipSpecialTokens: spec.skipSpecialTokens ?? true,
  });
  const stops = createStopMatcher(spec.stop, spec.includeStopStr ?? false);
  let completion = 0;
  let cached = 0;
  let ended = false;
  /** `reason`: the stop string or stop_token_ids id that ended the choice (vLLM's stop_reason). */
  const end = (finishReason: "stop" | "length", flush: boolean, reason?: string | number) => {
    if (flush) {
      const tail = stops.push(decoder.flush()).emit + stops.flush();
      if (tail) channel.push({ type: "delta", index, text: tail, tokens: 0 });
    }
    ended = true;
    channel.push({
      type: "end",
      index,
      finishReason,
      promptTokens: spec.prompt.length,
      completionTokens: completion,
      cachedTokens: cached,
      ...(reason !== undefined ? { stopReason: reason } : {}),
    });
    spec.onEnd(completion);
  };
  return {
    token(id, record) {
      if (ended) return true;
      completion++;
      if (spec.stopIds.has(id)) {
        if (spec.ids) channel.push({ type: "delta", index, text: "", tokens: 0, ids: [id] });
        end("stop", true, spec.stopTokenIds?.has(id) ? id : undefined);
        return true;
      }
      // The mask allows only ids the grammar takes; one it refuses (never expected) ends the choice untaken.
      if (spec.grammar && !spec.grammar.accept(id)) {
        completion--;
        end("stop", true);
        return true;
      }
      const r = stops.push(decoder.push(id));
      const logprobs = spec.logprobs !== null && record ? [readLogprob(tokenizer, id, record)] : null;
      channel.push({
        type: "delta",
        index,
        text: r.emit,
        tokens: 1,
        ...(logprobs ? { logprobs } : {}),
        ...(spec.ids ? { ids: [id] } : {}),
      });
      if (r.stopped) {
        end("stop", false, r.stop);
        return true;
      }
      if (spec.grammar?.complete) {
        end("stop", true); // the value is whole: nothing may follow it
        return true;
      }
      if (completion >= spec.limit) {
        end("length", true);
        return true;
      }
      return false;
    },
    fail(err) {
      if (!ended) channel.fail(err);
    },
    cached(tokens) {
      cached = tokens;
    },
  };
}

/** A logprob record (kernels/ops/logprobs.ts) as a TokenLogprob. */
export function readLogprob(tokenizer: Tokenizer, id: number, record: Uint32Array): TokenLogprob {
  const f = new Float32Array(record.buffer, record.byteOffset, record.length);
  const top: TokenLogprob["top"] = [];
  for (let k = 0; k < record[1]; k++) {
    const t = record[2 + 2 * k];
    top.push({ id: t, token: tokenizer.decode([t]), logprob: f[3 + 2 * k] });
  }
  return { id, token: tokenizer.decode([id]), logprob: f[0], rank: record[LOGPROB_RANK_WORD], top };
}
