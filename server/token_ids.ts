/**
 * vLLM's `return_token_ids` on a stream: a prompt's ids go out with the first chunk of each of its choices,
 * a choice's own ids with its next chunk (a delta whose text is held back, a stop string's or a tool call's,
 * sends no chunk: its ids wait for the next one, at the latest the finish chunk).
 */
import type { TokenEvent } from "../inference/engine/mod.ts";

/** The id fields of one choice's chunk. */
export interface ChunkIds {
  prompt_token_ids?: number[];
  token_ids?: number[];
}

/** Tracks the ids a stream has not sent yet. */
export class StreamIds {
  /** ids per prompt (a "prompt" event's), until each of its n choices has sent them */
  #prompts = new Map<number, number[]>();
  #sentPrompt = new Set<number>();
  /** ids per choice not sent yet */
  #pending = new Map<number, number[]>();

  /** @param n choices per prompt (choice `p·n + i` is prompt p's) */
  constructor(readonly n: number) {}

  /** Takes an engine event's ids. */
  add(ev: TokenEvent): void {
    if (ev.type === "prompt" && ev.ids) this.#prompts.set(Math.floor((ev.index ?? 0) / this.n), ev.ids);
    if (ev.type === "delta" && ev.ids) {
      const index = ev.index ?? 0;
      this.#pending.set(index, [...(this.#pending.get(index) ?? []), ...ev.ids]);
    }
  }

  /** The id fields for choice `index`'s next chunk (empty when there is nothing new). */
  take(index: number): ChunkIds {
    const out: ChunkIds = {};
    const prompt = this.#prompts.get(Math.floor(index / this.n));
    if (prompt && !this.#sentPrompt.has(index)) {
      this.#sentPrompt.add(index);
      out.prompt_token_ids = prompt;
    }
    const own = this.#pending.get(index);
    if (own) {
      this.#pending.delete(index);
      out.token_ids = own;
    }
    return out;
  }
}
