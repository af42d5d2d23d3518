/**
 * The regular parts of a GBNF grammar (gbnf.ts) as one DFA each. An expression whose rule references never
 * lead back to themselves matches a regular language, so its NFA (Thompson's construction over UTF-8, those
 * rules inlined) becomes a RegexDfa, and the automaton steps one table entry per byte there instead of
 * walking sequence, list and class frames: a JSON string or number of a grammar costs what a regex does.
 * Only where the whole DFA is small, explored eagerly to know it: else the part stays a graph of nodes, which
 * has no state bound (a regex's DFA refuses bytes past its bound).
 */
import { type GbnfExpr, type GbnfRule, refsIn } from "./gbnf_syntax.ts";
import { RegexDfa } from "./regex.ts";
import { type Nfa, utf8Seqs } from "./regex_nfa.ts";

/** Most NFA states a part may build (a repetition count copies its item). */
const MAX_NFA_STATES = 4096;
/** Most DFA states a part may reach. */
const MAX_DFA_STATES = 512;
/** Most NFA states × DFA states of a part (a DFA step's cost grows with the NFA states it tracks). */
const MAX_WORK = 1 << 18;

/** What the parts of one grammar may still build, in NFA and DFA states (its compile time is bounded). */
export interface PartBudget {
  nfaStates: number;
  dfaStates: number;
}

/** The budget of one grammar's parts: eight parts of the largest size (a fraction of a second). */
export function partBudget(): PartBudget {
  return { nfaStates: 8 * MAX_NFA_STATES, dfaStates: 8 * MAX_DFA_STATES };
}

const TOO_BIG = new Error("the part is too big for a DFA");
const encoder = new TextEncoder();

/**
 * The rules whose references never lead back to themselves (the least fixpoint of "every rule it refers to
 * is such a rule"): the regular ones.
 * @param rules the checked rules (parseGbnf)
 * @returns their names
 */
export function regularRules(rules: Map<string, GbnfRule>): Set<string> {
  const refs = new Map([...rules.values()].map((r) => [r.name, refsIn(r.body).map((ref) => ref.name)]));
  const regular = new Set<string>();
  for (let changed = true; changed;) {
    changed = false;
    for (const [name, to] of refs) {
      if (!regular.has(name) && to.every((n) => regular.has(n))) {
        regular.add(name);
        changed = true;
      }
    }
  }
  return regular;
}

/** Whether an expression refers only to regular rules (or to none). */
export function isRegular(e: GbnfExpr, regular: Set<string>): boolean {
  return refsIn(e).every((ref) => regular.has(ref.name));
}

/**
 * The DFA of a regular expression of the grammar, or null where its NFA or DFA would pass the bounds.
 * @param e an expression that {@link isRegular}
 * @param rules the rules it may refer to (inlined)
 * @param budget what is left to build (spent here), or null for a character class alone: no bounds, its
 *   states built as the output reaches them
 * @returns the DFA (budgeted: all its states built), or null
 */
export function partDfa(
  e: GbnfExpr,
  rules: Map<string, GbnfRule>,
  budget: PartBudget | null,
): RegexDfa | null {
  if (budget && (budget.nfaStates <= 0 || budget.dfaStates <= 0)) return null;
  const nfa: Nfa = { edges: [], eps: [], start: 0, accept: 0 };
  const maxNfa = budget ? Math.min(MAX_NFA_STATES, budget.nfaStates) : Infinity;
  const state = (): number => {
    if (nfa.edges.length >= maxNfa) throw TOO_BIG;
    nfa.eps.push([]);
    return nfa.edges.push([]) - 1;
  };
  /** A chain of byte ranges from `from` to `to`. */
  const chain = (from: number, seq: [number, number][], to: number): void => {
    seq.forEach(([lo, hi], k) => {
      const next = k === seq.length - 1 ? to : state();
      nfa.edges[from].push([lo, hi, next]);
      from = next;
    });
  };
  /** The fragment of an expression: its entry and exit states. */
  const frag = (e: GbnfExpr): [number, number] => {
    switch (e.t) {
      case "text": {
        const start = state();
        let at = start;
        for (const b of encoder.encode(e.text)) {
          const next = state();
          nfa.edges[at].push([b, b, next]);
          at = next;
        }
        return [start, at];
      }
      case "chars": {
        const [start, end] = [state(), state()];
        for (const [lo, hi] of e.ranges) for (const seq of utf8Seqs(lo, hi)) chain(start, seq, end);
        return [start, end];
      }
      case "ref":
        return frag(rules.get(e.name)!.body);
      case "seq": {
        const start = state();
        let at = start;
        for (const item of e.items) {
          const [a, b] = frag(item);
          nfa.eps[at].push(a);
          at = b;
        }
        return [start, at];
      }
      case "alt": {
        const [start, end] = [state(), state()];
        for (const o of e.options) {
          const [a, b] = frag(o);
          nfa.eps[start].push(a);
          nfa.eps[b].push(end);
        }
        return [start, end];
      }
      case "rep": {
        const start = state();
        let at = start;
        for (let k = 0; k < e.min; k++) {
          const [a, b] = frag(e.item);
          nfa.eps[at].push(a);
          at = b;
        }
        if (e.max === Infinity) {
          const [a, b] = frag(e.item);
          const hub = state();
          nfa.eps[at].push(hub);
          nfa.eps[hub].push(a);
          nfa.eps[b].push(hub);
          return [start, hub];
        }
        for (let k = e.min; k < e.max; k++) {
          const [a, b] = frag(e.item);
          const out = state();
          nfa.eps[at].push(a, out);
          nfa.eps[b].push(out);
          at = out;
        }
        return [start, at];
      }
    }
  };
  try {
    [nfa.start, nfa.accept] = frag(e);
  } catch (err) {
    if (err === TOO_BIG) return null;
    throw err;
  } finally {
    if (budget) budget.nfaStates -= nfa.edges.length;
  }
  const dfa = new RegexDfa("(a regular part of a GBNF grammar)", nfa);
  if (!budget) return dfa;
  // Every state, to count them: a DFA that would pass the bound is left unused.
  const maxDfa = Math.min(MAX_DFA_STATES, budget.dfaStates, Math.floor(MAX_WORK / nfa.edges.length));
  const seen = new Set([0]);
  try {
    for (const todo = [0]; todo.length > 0;) {
      const d = todo.pop()!;
      for (let b = 0; b < 256; b++) {
        const next = dfa.step(d, b);
        if (next < 0 || seen.has(next)) continue;
        if (seen.size >= maxDfa) return null;
        seen.add(next);
        todo.push(next);
      }
    }
  } finally {
    budget.dfaStates -= seen.size;
  }
  return dfa;
}
