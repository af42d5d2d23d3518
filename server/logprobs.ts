/**
 * Token logprobs in OpenAI's two wire shapes, chat's `logprobs.content` and the completions API's legacy
 * `{tokens, token_logprobs, top_logprobs, text_offset}`, and vLLM's `prompt_logprobs`.
 */
import type { TokenLogprob } from "../inference/engine/mod.ts";

/** One token of the chat shape's `logprobs.content`. */
export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  /** UTF-8 bytes of `token` */
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** `choices[].logprobs` of a chat completion (or chunk). */
export interface ChatLogprobs {
  content: ChatTokenLogprob[];
}

/** `choices[].logprobs` of a text completion (or chunk): the legacy shape. */
export interface CompletionLogprobs {
  tokens: string[];
  /** null for an echoed prompt's first token (nothing predicts it), as OpenAI sends it */
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  /** character offset of each token in the choice's text */
  text_offset: number[];
}

/** One scored prompt token in vLLM's shape. */
export interface PromptTokenLogprob {
  logprob: number;
  /** 1 for the likeliest id; ties count against the token */
  rank: number;
  decoded_token: string;
}

/**
 * vLLM's `prompt_logprobs`: per prompt token, null for the first (nothing predicts it), else the token's own
 * entry and its alternatives', keyed by token id (the token first, then the alternatives best first; an
 * alternative that is the token itself is not repeated).
 */
export type PromptLogprobs = (Record<string, PromptTokenLogprob> | null)[];

/** Finite logprobs for JSON (−inf would serialise as null), as vLLM clamps them. */
const finite = (v: number) => Math.max(v, -9999);

/** vLLM's prompt_logprobs shape of a scored prompt's engine logprobs. */
export function promptLogprobs(entries: readonly TokenLogprob[]): PromptLogprobs {
  return entries.map((e) => {
    if (e.logprob === null) return null;
    const out: Record<string, PromptTokenLogprob> = {
      [e.id]: { logprob: finite(e.logprob), rank: e.rank ?? 0, decoded_token: e.token },
    };
    e.top.forEach((t, k) => {
      if (t.id !== e.id) out[t.id] = { logprob: finite(t.logprob), rank: k + 1, decoded_token: t.token };
    });
    return out;
  });
}

/**
 * vLLM's `return_tokens_as_token_ids`: every token, the alternatives' too, spelled "token_id:<id>", which
 * names it where its text would not (a token of a partial UTF-8 character decodes to U+FFFD).
 */
export function asTokenIds(entries: readonly TokenLogprob[]): TokenLogprob[] {
  return entries.map((e) => ({
    ...e,
    token: `token_id:${e.id}`,
    top: e.top.map((t) => ({ ...t, token: `token_id:${t.id}` })),
  }));
}

/** The chat shape of engine logprobs. */
export function chatLogprobs(entries: readonly TokenLogprob[]): ChatLogprobs {
  const bytes = (t: string) => Array.from(new TextEncoder().encode(t));
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob ?? 0, // never null here: chat has no echo
      bytes: bytes(e.token),
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytes(t.token) })),
    })),
  };
}

/** The completions shape of engine logprobs; offsets count from `offset` (the text already sent). */
export function completionLogprobs(entries: readonly TokenLogprob[], offset = 0): CompletionLogprobs {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) =>
      e.logprob === null ? null : Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))
    ),
    text_offset,
  };
}
