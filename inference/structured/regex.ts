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
 * Every byte string but the UTF-8 of these texts (the keys of an object's other properties: not a listed
 * name). The NFA is the texts' trie plus one state that takes any bytes, entered where a byte leaves the
 * trie; every state but a text's end accepts. It is deterministic, so its DFA has as many states.
 * @throws RegexError when the trie has more states than a DFA may
 */
export function exceptTextsDfa(texts: readonly string[]): RegexDfa {
  const nfa: Nfa = { edges: [[]], eps: [[]], start: 0, accept: 0 };
  const ends = new Set<number>();
  const child = new Map<string, number>(); // `${state},${byte}` → state
  for (const text of new Set(texts)) {
    let at = 0;
    for (const b of encoder.encode(text)) {
      let to = child.get(`${at},${b}`);
      if (to === undefined) {
        if (nfa.edges.length >= MAX_DFA_STATES - 2) {
          throw new RegexError(
            `Cannot keep other keys from the listed names: more than ${MAX_DFA_STATES} states`,
          );
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
