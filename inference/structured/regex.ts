/**
 * Regular expressions for structured output (vLLM's `structured_outputs.regex` / `guided_regex`): a pattern is
 * compiled to a byte-level NFA (Thompson's construction over the pattern's UTF-8: regex_parser.ts, which says
 * what syntax is supported; the NFA's shape: regex_nfa.ts), which {@link RegexDfa} turns into DFA states as
 * the output explores them (subset construction on demand, cached), so the mask walk (token_mask.ts) steps
 * one table entry per byte. The whole output must match (as with `^…$`).
 */
import { type Nfa, RegexError } from "./regex_nfa.ts";
import { Parser } from "./regex_parser.ts";

/** Most DFA states built for one pattern; past it the output is refused there (a pathological pattern). */
const MAX_DFA_STATES = 10_000;

const encoder = new TextEncoder();

/** A compiled pattern: DFA states made on demand. State 0 is the start; −1 is dead. */
export class RegexDfa {
  readonly source: string;
  #nfa: Nfa;
  #sets: number[][] = [];
  #ids = new Map<string, number>();
  #next: Int32Array[] = [];
  #accepting: boolean[] = [];
  #exits: (boolean | undefined)[] = [];

  /**
   * @param source the pattern
   * @param nfa its NFA when already built (gbnf.ts builds one from a grammar); else the pattern is compiled
   * @throws RegexError naming what it cannot compile
   */
  constructor(source: string, nfa?: Nfa) {
    this.source = source;
    this.#nfa = nfa ?? new Parser(source).compile();
    this.#intern(this.#closure([this.#nfa.start]));
  }

  /** The NFA the states are built from (what a grammar sends across a thread: grammar_transfer.ts). */
  get nfa(): Nfa {
    return this.#nfa;
  }

  /** Whether the output may end in DFA state `d`. */
  accepting(d: number): boolean {
    return this.#accepting[d];
  }

  /** The state after byte `b`, or −1. */
  step(d: number, b: number): number {
    const row = this.#next[d];
    let n = row[b];
    if (n === -2) {
      const moved: number[] = [];
      for (const s of this.#sets[d]) {
        for (const [lo, hi, to] of this.#nfa.edges[s]) if (b >= lo && b <= hi) moved.push(to);
      }
      n = moved.length === 0 ? -1 : this.#intern(this.#closure(moved));
      row[b] = n;
    }
    return n;
  }

  /** How many states are built so far (at most MAX_DFA_STATES: past it a byte is refused). */
  get size(): number {
    return this.#sets.length;
  }

  /** Whether the whole text (its UTF-8) leads from the start to an accepting state. */
  matches(text: string): boolean {
    let d = 0;
    for (const b of encoder.encode(text)) {
      d = this.step(d, b);
      if (d < 0) return false;
    }
    return this.#accepting[d];
  }

  /** Whether any byte leads on from `d` (else a match there is complete). */
  hasExits(d: number): boolean {
    if (this.#exits[d] === undefined) {
      let any = false;
      for (let b = 0; b < 256 && !any; b++) any = this.step(d, b) >= 0;
      this.#exits[d] = any;
    }
    return this.#exits[d]!;
  }

  #closure(states: number[]): number[] {
    const seen = new Set<number>(states);
    const stack = [...states];
    while (stack.length > 0) {
      for (const t of this.#nfa.eps[stack.pop()!]) {
        if (!seen.has(t)) {
          seen.add(t);
          stack.push(t);
        }
      }
    }
    return [...seen].sort((a, b) => a - b);
  }

  #intern(set: number[]): number {
    const key = set.join(",");
    let id = this.#ids.get(key);
    if (id === undefined) {
      if (this.#sets.length >= MAX_DFA_STATES) return -1; // refuse the byte rather than grow without bound
      id = this.#sets.length;
      this.#ids.set(key, id);
      this.#sets.push(set);
      this.#next.push(new Int32Array(256).fill(-2));
      this.#accepting.push(set.includes(this.#nfa.accept));
    }
    return id;
  }
}

/**
 * The trie of these texts' UTF-8 as an NFA (state 0 the root) and its states where a text ends; `what` opens
 * the error past the state bound.
 */
function trieNfa(texts: readonly string[], what: string): { nfa: Nfa; ends: Set<number> } {
  const nfa: Nfa = { edges: [[]], eps: [[]], start: 0, accept: 0 };
  const ends = new Set<number>();
  const child = new Map<string, number>(); // `${state},${byte}` → state
  for (const text of new Set(texts)) {
    let at = 0;
    for (const b of encoder.encode(text)) {
      let to = child.get(`${at},${b}`);
      if (to === undefined) {
        if (nfa.edges.length >= MAX_DFA_STATES - 2) {
          throw new RegexError(`${what}: more than ${MAX_DFA_STATES} states`);
        }
        to = nfa.edges.push([]) - 1;
        nfa.eps.push([]);
        child.set(`${at},${b}`, to);
        nfa.edges[at].push([b, b, to]);
      }
      at = to;
    }
    ends.add(at);
  }
  return { nfa, ends };
}

/**
 * Every byte string but the UTF-8 of these texts (the keys of an object's other properties: not a listed
 * name). The NFA is the texts' trie plus one state that takes any bytes, entered where a byte leaves the
 * trie; every state but a text's end accepts. It is deterministic, so its DFA has as many states.
 * @throws RegexError when the trie has more states than a DFA may
 */
export function exceptTextsDfa(texts: readonly string[]): RegexDfa {
  const { nfa, ends } = trieNfa(texts, "Cannot keep other keys from the listed names");
  const free = nfa.edges.length;
  nfa.accept = free + 1;
  nfa.edges.push([[0, 255, free]], []);
  nfa.eps.push([nfa.accept], []);
  for (let s = 0; s < free; s++) {
    // The bytes no trie edge takes lead to `free`: the gaps between the sorted edge bytes.
    const taken = nfa.edges[s].map(([b]) => b).sort((x, y) => x - y);
    let lo = 0;
    for (const b of [...taken, 256]) {
      if (b > lo) nfa.edges[s].push([lo, b - 1, free]);
      lo = b + 1;
    }
    if (!ends.has(s)) nfa.eps[s].push(nfa.accept);
  }
  return new RegexDfa("(any text but the listed names)", nfa);
}

/**
 * Exactly the UTF-8 of these texts (the other keys a `propertyNames` enum allows): their trie, each text's end
 * leading to acceptance. Deterministic, and every state on the way to a text.
 * @throws RegexError when the trie has more states than a DFA may
 */
export function onlyTextsDfa(texts: readonly string[]): RegexDfa {
  const { nfa, ends } = trieNfa(texts, "Cannot compile the allowed names");
  nfa.accept = nfa.edges.push([]) - 1;
  nfa.eps.push([]);
  for (const s of ends) nfa.eps[s].push(nfa.accept);
  return new RegexDfa("(one of the listed texts)", nfa);
}

/**
 * Every UTF-8 text of `min` to `max` characters (a `propertyNames` length). Deterministic: per count of
 * characters read, one state, and three more that wait for a character's 1, 2 or 3 continuation bytes.
 * @throws RegexError when the counts need more states than a DFA may
 */
export function lengthDfa(min: number, max: number): RegexDfa {
  const last = Number.isFinite(max) ? max : min; // past `last` (max infinite) the count stays there
  if (4 * (last + 1) + 1 > MAX_DFA_STATES - 2) {
    throw new RegexError(`Cannot count up to ${last} characters: more than ${MAX_DFA_STATES} states`);
  }
  // State 4k: k characters read; 4k + j: k read and j continuation bytes due.
  const n = 4 * (last + 1);
  const nfa: Nfa = {
    edges: Array.from({ length: n + 1 }, () => []),
    eps: Array.from({ length: n + 1 }, () => []),
    start: 0,
    accept: n,
  };
  for (let k = 0; k <= last; k++) {
    if (k >= min) nfa.eps[4 * k].push(n);
    if (k === last && Number.isFinite(max)) continue;
    const next = 4 * Math.min(k + 1, last);
    const at = 4 * k;
    nfa.edges[at].push([0, 0x7f, next], [0xc2, 0xdf, at + 1], [0xe0, 0xef, at + 2], [0xf0, 0xf4, at + 3]);
    nfa.edges[at + 3].push([0x80, 0xbf, at + 2]);
    nfa.edges[at + 2].push([0x80, 0xbf, at + 1]);
    nfa.edges[at + 1].push([0x80, 0xbf, next]);
  }
  return new RegexDfa(`(${min} to ${max} characters)`, nfa);
}

/**
 * The texts every one of these DFAs accepts (the other keys of an object: not a listed name, and as
 * `propertyNames` and `patternProperties` allow), built whole by the product construction over bytes: a
 * state per tuple of the DFAs' states that the texts reach, and only those from which a text is still
 * accepted, so every prefix the automaton lets through can be finished. Deterministic, so its DFA has as
 * many states.
 * @param source what the DFA stands for (its `source`)
 * @param dfas the DFAs to intersect (at least one)
 * @returns the DFA, or null when no text is accepted by all
 * @throws RegexError when one of the DFAs or the product has more states than a DFA may
 */
export function intersectDfas(source: string, dfas: readonly RegexDfa[]): RegexDfa | null {
  const tuples: number[][] = [];
  const ids = new Map<string, number>();
  const edges: [lo: number, hi: number, to: number][][] = [];
  const intern = (t: number[]): number => {
    const key = t.join(",");
    let id = ids.get(key);
    if (id === undefined) {
      if (tuples.length >= MAX_DFA_STATES - 2) {
        throw new RegexError(`Cannot intersect the patterns: more than ${MAX_DFA_STATES} states`);
      }
      id = tuples.push(t) - 1;
      ids.set(key, id);
      edges.push([]);
    }
    return id;
  };
  intern(dfas.map(() => 0));
  for (let s = 0; s < tuples.length; s++) {
    // Runs of bytes to the same tuple become one edge.
    let lo = 0, run = -1;
    for (let b = 0; b <= 256; b++) {
      let to = -1;
      if (b < 256) {
        const next = tuples[s].map((d, k) => dfas[k].step(d, b));
        if (next.every((d) => d >= 0)) to = intern(next);
      }
      if (b === 256 || to !== run) {
        if (run >= 0) edges[s].push([lo, b - 1, run]);
        [lo, run] = [b, to];
      }
    }
  }
  if (dfas.some((d) => d.size >= MAX_DFA_STATES)) {
    // That DFA refused a byte at its bound: the product would miss texts.
    throw new RegexError(`Cannot intersect the patterns: more than ${MAX_DFA_STATES} states in one`);
  }
  // Keep the tuples from which an accepted one is reachable (a walk back from the accepting ones).
  const accepting = tuples.map((t) => t.every((d, k) => dfas[k].accepting(d)));
  const back: number[][] = tuples.map(() => []);
  edges.forEach((out, s) => out.forEach(([, , to]) => back[to].push(s)));
  const live = accepting.slice();
  const stack = accepting.flatMap((a, s) => (a ? [s] : []));
  while (stack.length > 0) {
    for (const s of back[stack.pop()!]) {
      if (!live[s]) {
        live[s] = true;
        stack.push(s);
      }
    }
  }
  if (!live[0]) return null;
  const renum = new Int32Array(tuples.length).fill(-1);
  let n = 0;
  for (let s = 0; s < tuples.length; s++) if (live[s]) renum[s] = n++;
  const nfa: Nfa = { edges: [], eps: [], start: 0, accept: n };
  for (let s = 0; s < tuples.length; s++) {
    if (!live[s]) continue;
    nfa.edges.push(edges[s].flatMap(([lo, hi, to]) => (live[to] ? [[lo, hi, renum[to]]] : [])));
    nfa.eps.push(accepting[s] ? [n] : []);
  }
  nfa.edges.push([]);
  nfa.eps.push([]);
  return new RegexDfa(source, nfa);
}
