/**
 * Walks of the structured-output automata (inference/structured/) over whole texts, byte by byte, shared
 * by their tests: what the grammar automaton makes of a text, and whether a regex DFA matches one; and the
 * check that a schema is refused with the request field it names.
 */
import assert from "node:assert/strict";
import { canEnd, initialStates, isComplete, stepStates } from "../inference/structured/json_automaton.ts";
import type { JsonGrammar } from "../inference/structured/grammar.ts";
import type { RegexDfa } from "../inference/structured/regex.ts";
import { compileJsonSchema } from "../inference/structured/json_schema.ts";
import type { StateSet } from "../inference/structured/json_automaton_frames.ts";
import { GrammarMatcher, TokenVocab } from "../inference/structured/token_mask.ts";
import { SchemaError } from "../inference/structured/json_schema_context.ts";

const enc = new TextEncoder();

/** What the automaton makes of a whole text: a complete value, one that may end here, a prefix, or none. */
export function verdict(
  g: JsonGrammar,
  text: string | Uint8Array,
): "complete" | "canEnd" | "partial" | "reject" {
  let s = initialStates(g);
  for (const b of typeof text === "string" ? enc.encode(text) : text) {
    s = stepStates(s, b);
    if (s.length === 0) return "reject";
  }
  return isComplete(s) ? "complete" : canEnd(s) ? "canEnd" : "partial";
}

/** Whether the whole text matches, by walking the DFA byte by byte. */
export function dfaMatches(dfa: RegexDfa, text: string): boolean {
  let d = 0;
  for (const b of enc.encode(text)) {
    d = dfa.step(d, b);
    if (d < 0) return false;
  }
  return dfa.accepting(d);
}

/** That compiling `schema` (as the request field "schema") is a SchemaError naming `param`. */
export function assertRefused(schema: unknown, param: string): void {
  assert.throws(() => compileJsonSchema(schema, "schema"), (e: unknown) => {
    assert.ok(e instanceof SchemaError, String(e));
    assert.equal(e.param, param, e.message);
    return true;
  }, JSON.stringify(schema));
}

/** Whether the automaton takes a whole text as a complete value. */
export function accepts(g: JsonGrammar, text: string): boolean {
  let s = initialStates(g);
  for (const b of enc.encode(text)) {
    s = stepStates(s, b);
    if (s.length === 0) return false;
  }
  return isComplete(s);
}

/** Whether some object of a JSON text repeats a key (JSON.parse keeps the last). */
export function repeatsKey(text: string): boolean {
  const open: (Set<string> | null)[] = []; // a key set per object, null per array
  let key = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const s = JSON.parse(text.slice(i, j + 1));
      const keys = open.at(-1);
      if (key && keys) {
        if (keys.has(s)) return true;
        keys.add(s);
      }
      key = false;
      i = j;
    } else if (c === "{" || c === "[") {
      open.push(c === "{" ? new Set() : null);
      key = c === "{";
    } else if (c === "}" || c === "]") {
      open.pop();
      key = false;
    } else if (c === ",") key = open.at(-1) instanceof Set;
  }
  return false;
}

/**
 * The texts that random walks of the automaton complete. Each step takes a byte the automaton allows (a
 * newline or printable ASCII), one of `closers` one time in three when one is allowed; a walk stops where
 * the value is complete, or may end (one time in three); one that passes `maxLength` is dropped. Asserts
 * that no allowed byte leads to a dead end, where the value could not be completed.
 * @param rand a seeded `rand(n)` in [0, n)
 */
export function randomWalks(
  g: JsonGrammar,
  { walks, maxLength, closers, rand }: {
    walks: number;
    maxLength: number;
    closers: string;
    rand(n: number): number;
  },
): string[] {
  const bytes = [0x0a, ...Array.from({ length: 95 }, (_, i) => 0x20 + i)];
  const close = enc.encode(closers);
  const done: string[] = [];
  for (let walk = 0; walk < walks; walk++) {
    let s = initialStates(g);
    let text = "";
    while (text.length < maxLength && !isComplete(s) && !(canEnd(s) && rand(3) === 0)) {
      const next = bytes.flatMap((b) => {
        const t = stepStates(s, b);
        return t.length > 0 ? [[b, t] as const] : [];
      });
      assert.ok(next.length > 0 || canEnd(s), `dead end after ${JSON.stringify(text)}`);
      if (next.length === 0) break;
      const closing = next.filter(([b]) => close.includes(b));
      const [b, t] = closing.length > 0 && rand(3) === 0
        ? closing[rand(closing.length)]
        : next[rand(next.length)];
      text += String.fromCharCode(b);
      s = t;
    }
    if (canEnd(s)) done.push(text); // else it ran out of length
  }
  return done;
}

/**
 * Walks `text` through a schema's grammar word by word (the longest of `words` that fits, as a tokenizer
 * would) and asserts, before each word, that the token mask allows exactly the words whose bytes the
 * automaton takes from there (at least one), and that the text may end at its end.
 */
export function assertMasksAlong(schema: unknown, text: string, words: readonly string[]): void {
  const vocab = new TokenVocab(words.map((w) => enc.encode(w)), words.length + 1);
  const has = (mask: Uint32Array, i: number) => ((mask[i >>> 5] >>> (i & 31)) & 1) === 1;
  const feedAll = (s: StateSet, word: string) => {
    for (const b of enc.encode(word)) {
      s = stepStates(s, b);
      if (s.length === 0) break;
    }
    return s;
  };
  const g = compileJsonSchema(schema, "schema");
  const m = new GrammarMatcher(g, vocab);
  let s = initialStates(g);
  for (let at = 0; at < text.length;) {
    const mask = m.mask([]);
    let allowed = 0;
    for (let t = 0; t < words.length; t++) {
      const brute = feedAll(s, words[t]).length > 0;
      assert.equal(has(mask, t), brute, `${JSON.stringify(schema)} after ${text.slice(0, at)}: ${words[t]}`);
      if (brute) allowed++;
    }
    assert.ok(allowed > 0);
    const word = words.filter((w) => text.startsWith(w, at)).reduce((a, b) => (b.length > a.length ? b : a));
    assert.ok(has(mask, words.indexOf(word)) && m.accept(words.indexOf(word)), word);
    s = feedAll(s, word);
    at += word.length;
  }
  assert.ok(m.canEnd, text);
}

/** mulberry32, seeded: the same random texts on every run (`rand(n)` in [0, n)). */
export function rng(seed: number): (n: number) => number {
  return (n) => {
    let t = (seed = (seed + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/**
 * Each of `count` sampled values, compact and pretty-printed, is accepted by the grammar exactly when `valid`
 * says so; returns how many values and how many texts were valid and not (so a test can require both).
 */
export function assertAcceptsExactlyValid(
  g: JsonGrammar,
  label: string,
  { count, sample, valid }: { count: number; sample(): unknown; valid(v: unknown): boolean },
): { values: [accepted: number, rejected: number]; texts: [accepted: number, rejected: number] } {
  const values: [number, number] = [0, 0];
  const texts: [number, number] = [0, 0];
  for (let n = 0; n < count; n++) {
    const v = sample();
    const want = valid(v);
    for (const text of [JSON.stringify(v), JSON.stringify(v, null, 2)]) {
      assert.equal(accepts(g, text), want, `${label}: ${text}`);
      texts[want ? 0 : 1]++;
    }
    values[want ? 0 : 1]++;
  }
  return { values, texts };
}

/**
 * Every text a random walk of the grammar completes parses and is `valid`, or repeats a key (the one
 * documented way out: a grammar cannot remember every key); at least `min` of the walks complete.
 */
export function assertWalksValid(
  g: JsonGrammar,
  label: string,
  { min, valid, ...walk }: Parameters<typeof randomWalks>[1] & { min: number; valid(v: unknown): boolean },
): void {
  const done = randomWalks(g, walk);
  for (const text of done) assert.ok(valid(JSON.parse(text)) || repeatsKey(text), `${label}: ${text}`);
  assert.ok(done.length >= min, `${label}: only ${done.length} walks completed`);
}
