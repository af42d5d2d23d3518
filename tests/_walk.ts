/**
 * Walks of the structured-output automata (inference/structured/) over whole texts, byte by byte, shared
 * by their tests: what the grammar automaton makes of a text, and whether a regex DFA matches one.
 */
import { canEnd, initialStates, isComplete, stepStates } from "../inference/structured/json_automaton.ts";
import type { JsonGrammar } from "../inference/structured/grammar.ts";
import type { RegexDfa } from "../inference/structured/regex.ts";

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
