/**
 * Token masks from the byte automaton (json_automaton.ts): which ids of a vocabulary may come next.
 *
 * The vocabulary's byte strings form a trie; a mask is one depth-first walk of it that carries the state
 * set down each edge and prunes a branch as soon as the set is empty, so shared prefixes are stepped once
 * (the idea of llama.cpp's grammar sampler and of xgrammar's token trie). Inside a string most of the
 * trie stays alive, which makes those masks the slow ones; masks are cached by state key in a
 * byte-bounded LRU shared by every grammar of the vocabulary (a schema's requests reuse them: the keys
 * start with the grammar's id).
 */
import { canEnd, initialStates, isComplete, statesKey, stepStates } from "./json_automaton.ts";
import type { StateSet } from "./json_automaton_frames.ts";
import type { JsonGrammar } from "./grammar.ts";

/** Host memory the mask cache of one vocabulary may hold. */
const MASK_CACHE_BYTES = 64 << 20;

/** The vocabulary's byte strings as a trie: node 0 is the root; children as first-child / next-sibling lists. */
interface Trie {
  first: Int32Array;
  next: Int32Array;
  label: Uint8Array;
  /** ids ending at each node: tokenAt[node] (−1 none), further ones in `more` */
  tokenAt: Int32Array;
  more: Map<number, number[]>;
}

/**
 * A vocabulary as byte strings, its trie and its mask cache. The trie is built at the first mask (61–205 ms
 * on 49k–152k ids, BENCHMARKS.md "Structured output"): a vocabulary that only follows a grammar's ids
 * (GrammarMatcher.accept, the engine's side of a mask thread) never builds it.
 */
export class TokenVocab {
  /** ids a mask covers (the model's logit rows; ids past the tokenizer's are never allowed) */
  readonly size: number;
  readonly words: number;
  readonly bytes: readonly (Uint8Array | null)[];
  #trie: Trie | null = null;
  #cache = new Map<string, Uint32Array>();
  #cacheBytes = 0;

  /**
   * @param bytes each id's bytes (Tokenizer.tokenBytesTable), null for ids that are never text
   * @param size ids the masks cover (≥ bytes.length)
   */
  constructor(bytes: readonly (Uint8Array | null)[], size: number) {
    this.size = size;
    this.words = Math.ceil(size / 32); // bit id & 31 of word id >> 5: logits_process.ts's mask row
    this.bytes = bytes;
  }

  #built(): Trie {
    if (this.#trie) return this.#trie;
    const { bytes, size } = this;
    let total = 1;
    for (const b of bytes) total += b?.length ?? 0;
    const first = new Int32Array(total).fill(-1);
    const next = new Int32Array(total).fill(-1);
    const label = new Uint8Array(total);
    const tokenAt = new Int32Array(total).fill(-1);
    const more = new Map<number, number[]>();
    let nodes = 1;
    for (let id = 0; id < Math.min(bytes.length, size); id++) {
      const b = bytes[id];
      if (!b || b.length === 0) continue;
      let node = 0;
      for (const byte of b) {
        let c = first[node];
        while (c !== -1 && label[c] !== byte) c = next[c];
        if (c === -1) {
          c = nodes++;
          label[c] = byte;
          next[c] = first[node];
          first[node] = c;
        }
        node = c;
      }
      if (tokenAt[node] === -1) tokenAt[node] = id;
      else more.set(node, [...(more.get(node) ?? []), id]);
    }
    return this.#trie = {
      first: first.slice(0, nodes),
      next: next.slice(0, nodes),
      label: label.slice(0, nodes),
      tokenAt: tokenAt.slice(0, nodes),
      more,
    };
  }

  /** Trie nodes (a measure of a full walk's work; builds the trie). */
  get nodes(): number {
    return this.#built().first.length;
  }

  /**
   * The ids whose bytes the states accept in full (end-of-output ids are the caller's to add).
   * @param grammarId the grammar the states belong to (part of the cache key)
   */
  allowed(grammarId: number, states: StateSet): Uint32Array {
    const key = `${grammarId}:${statesKey(states)}`;
    const hit = this.#cache.get(key);
    if (hit) {
      this.#cache.delete(key); // re-insert: most recently used last
      this.#cache.set(key, hit);
      return hit;
    }
    const mask = new Uint32Array(this.words);
    walk(this.#built(), 0, states, mask);
    this.#cache.set(key, mask);
    this.#cacheBytes += mask.byteLength;
    for (const [k, m] of this.#cache) {
      if (this.#cacheBytes <= MASK_CACHE_BYTES) break;
      this.#cache.delete(k);
      this.#cacheBytes -= m.byteLength;
    }
    return mask;
  }
}

/** Sets the bits of the ids below `node` whose bytes `states` accept in full. */
function walk(t: Trie, node: number, states: StateSet, mask: Uint32Array): void {
  for (let c = t.first[node]; c !== -1; c = t.next[c]) {
    const next = stepStates(states, t.label[c]);
    if (next.length === 0) continue;
    const id = t.tokenAt[c];
    if (id !== -1) {
      mask[id >>> 5] |= 1 << (id & 31);
      for (const more of t.more.get(c) ?? []) mask[more >>> 5] |= 1 << (more & 31);
    }
    if (t.first[c] !== -1) walk(t, c, next, mask);
  }
}

/** One sequence's place in its grammar: what it has produced decides what may come next. */
export class GrammarMatcher {
  readonly grammar: JsonGrammar;
  readonly vocab: TokenVocab;
  #states: StateSet;

  constructor(grammar: JsonGrammar, vocab: TokenVocab) {
    this.grammar = grammar;
    this.vocab = vocab;
    this.#states = initialStates(grammar);
  }

  /**
   * Advances by one sampled id.
   * @returns false (and no change) when the grammar does not allow the id's bytes here
   */
  accept(id: number): boolean {
    const bytes = this.vocab.bytes[id];
    if (!bytes) return false;
    let states = this.#states;
    for (const b of bytes) {
      states = stepStates(states, b);
      if (states.length === 0) return false;
    }
    this.#states = states;
    return true;
  }

  /** Whether the output may end here (end-of-output ids are allowed). */
  get canEnd(): boolean {
    return canEnd(this.#states);
  }

  /** Whether the value is complete and no byte may follow: the output is over. */
  get complete(): boolean {
    return isComplete(this.#states);
  }

  /**
   * The ids allowed next.
   * @param endIds ids that end the output (EOS, stop ids), allowed where the value may end
   * @returns a fresh mask (the caller may keep it)
   */
  mask(endIds: Iterable<number>): Uint32Array {
    const mask = this.vocab.allowed(this.grammar.id, this.#states).slice();
    if (this.canEnd) {
      for (const id of endIds) if (id < this.vocab.size) mask[id >>> 5] |= 1 << (id & 31);
    }
    return mask;
  }
}
