/**
 * vLLM's `bad_words`: words the output must not contain, as token sequences. Each word is tokenized as it
 * would start the text and, where that gives other ids of the same length, as it would follow a space (vLLM's
 * rule: a word is banned at the start and in the middle of the text). A one-token sequence is never sampled;
 * the last id of a longer one is not sampled right after the output ends with the rest of it (the output's
 * own ids only, not the prompt's, as in vLLM).
 *
 * One-token sequences alone fold into the sequence's static mask (SeqInit.mask: no cost per step); longer
 * ones need the output so far, so the sequence takes a SeqConstraint and, like a grammar's, samples one id
 * per chunk. Over a grammar's constraint the bans apply to its masks.
 */
import { maskWords } from "../../kernels/ops/mod.ts";
import type { Tokenizer } from "../text/mod.ts";
import type { SeqConstraint } from "./sequence.ts";
import { EngineInputError } from "./types.ts";

/** Most words a request may ban, and characters per word (the HTTP layer checks the same bounds). */
export const MAX_BAD_WORDS = 64;
export const MAX_BAD_WORD_CHARS = 256;

/** A request's bad words as token sequences. */
export class BadWords {
  /** ids never sampled (one-token words) */
  readonly always: readonly number[];
  /** longer words: the last id is banned right after the others */
  readonly sequences: readonly (readonly number[])[];

  constructor(sequences: readonly (readonly number[])[]) {
    this.always = [...new Set(sequences.filter((s) => s.length === 1).map((s) => s[0]))];
    this.sequences = sequences.filter((s) => s.length > 1);
  }

  /** Whether a sequence needs its output to know what is banned (a word of more than one token). */
  get dynamic(): boolean {
    return this.sequences.length > 0;
  }

  /** The ids banned after the output `taken`. */
  bannedAfter(taken: readonly number[]): number[] {
    const out = [...this.always];
    for (const s of this.sequences) {
      const k = s.length - 1;
      if (taken.length < k) continue;
      let match = true;
      for (let i = 0; i < k && match; i++) match = taken[taken.length - k + i] === s[i];
      if (match) out.push(s[k]);
    }
    return out;
  }
}

/**
 * Tokenizes bad words as vLLM does: the word with leading whitespace removed, and a space before it when
 * that gives different ids of the same length. A word with no ids (empty or all whitespace) is refused.
 */
export function badWordIds(tokenizer: Tokenizer, words: readonly string[]): BadWords {
  const out: number[][] = [];
  words.forEach((word, i) => {
    const bare = tokenizer.encode(word.trimStart(), { addSpecialTokens: false });
    if (bare.length === 0) {
      throw new EngineInputError(`Cannot ban "${word}": it has no tokens`, `bad_words[${i}]`);
    }
    out.push(bare);
    const spaced = tokenizer.encode(" " + word.trimStart(), { addSpecialTokens: false });
    if (spaced.length === bare.length && spaced[0] !== bare[0]) out.push(spaced);
  });
  return new BadWords(out);
}

/** `base` (or every id of the vocabulary) without `banned`. */
export function maskWithout(vocab: number, base: Uint32Array | null, banned: readonly number[]): Uint32Array {
  const words = base ? base.slice() : allIds(vocab);
  for (const id of banned) if (id >= 0 && id < vocab) words[id >>> 5] &= ~(1 << (id & 31));
  return words;
}

/** The mask allowing every id below `vocab`. */
function allIds(vocab: number): Uint32Array {
  const words = new Uint32Array(maskWords(vocab)).fill(0xffffffff);
  if (vocab % 32 !== 0) words[words.length - 1] = (2 ** (vocab % 32) - 1) >>> 0;
  return words;
}

/**
 * The constraint of a sequence with multi-token bad words: each step's mask is `inner`'s (a grammar's), else
 * `base` (allowed_token_ids), else every id, without the ids the output so far bans.
 */
export function badWordsConstraint(
  bad: BadWords,
  vocab: number,
  base: Uint32Array | null,
  inner: SeqConstraint | null,
): SeqConstraint {
  return {
    mask(taken) {
      const banned = bad.bannedAfter(taken);
      if (!inner) return maskWithout(vocab, base, banned);
      const m = inner.mask(taken);
      return m instanceof Promise
        ? m.then((w) => maskWithout(vocab, w, banned))
        : maskWithout(vocab, m, banned);
    },
    ...(inner?.release ? { release: () => inner.release!() } : {}),
  };
}
