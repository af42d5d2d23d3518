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
