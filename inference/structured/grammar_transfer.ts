/**
 * A grammar across a thread boundary. The engine runs in a Worker (inference/remote), and postMessage's
 * structured clone keeps plain data, shared references, cycles (a `$ref` back to its definition) and typed
 * arrays, but not classes: a RegexDfa (private fields, states built lazily) would arrive as an empty object.
 * So a grammar travels packed, each RegexDfa as its source and NFA, and is rebuilt on the other side. Node
 * ids travel as they are (one thread compiles every grammar, so they stay unique); the grammar gets a new id
 * there, because token masks are cached by grammar id and DFA state numbers (token_mask.ts), and a rebuilt
 * DFA numbers its states in the order it meets them.
 *
 * The receiving side keeps the grammars it rebuilt (GrammarCache), keyed by their content with node ids left
 * out, so the requests of one schema (each compiled afresh, under new ids) share one grammar there, and with it
 * the token masks already computed for it: the first mask inside a string costs tens of milliseconds on a
 * large vocabulary (BENCHMARKS.md "Structured output"), later ones a map lookup.
 */
import { grammarOf, type JsonGrammar, type JsonNode } from "./grammar.ts";
import { RegexDfa } from "./regex.ts";
import type { Nfa } from "./regex_nfa.ts";

/** A grammar as postMessage may carry it (opaque: unpackGrammar reads it). */
export interface PackedGrammar {
  readonly packed: unknown;
}

/** How a RegexDfa travels. */
interface PackedDfa {
  $regexDfa: { source: string; nfa: Nfa };
}

/**
 * A copy of `g` that structured clone keeps whole.
 * @param g a compiled grammar
 * @returns its packed form
 */
export function packGrammar(g: JsonGrammar): PackedGrammar {
  const copies = new Map<object, unknown>();
  const pack = (v: unknown): unknown => {
    if (v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return v;
    const seen = copies.get(v);
    if (seen !== undefined) return seen;
    if (v instanceof RegexDfa) {
      const dfa: PackedDfa = { $regexDfa: { source: v.source, nfa: v.nfa } };
      copies.set(v, dfa);
      return dfa;
    }
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      copies.set(v, out);
      for (const item of v) out.push(pack(item));
      return out;
    }
    const out: Record<string, unknown> = {};
    copies.set(v, out); // before the fields: a cycle comes back to this copy
    for (const [key, value] of Object.entries(v)) out[key] = pack(value);
    return out;
  };
  return { packed: pack(g) };
}

/**
 * The grammar a packed one (after its trip through postMessage) stands for.
 * @param p what packGrammar gave, structured-cloned
 * @returns the grammar under a new id, its RegexDfa objects rebuilt (one per packed one, shared where they
 *   were shared)
 */
export function unpackGrammar(p: PackedGrammar): JsonGrammar {
  const done = new Set<object>();
  const dfas = new Map<object, RegexDfa>();
  const fix = (v: unknown): unknown => {
    if (v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return v;
    if ("$regexDfa" in v) {
      const { source, nfa } = (v as PackedDfa).$regexDfa;
      let dfa = dfas.get(v);
      if (!dfa) dfas.set(v, dfa = new RegexDfa(source, nfa));
      return dfa;
    }
    if (done.has(v)) return v;
    done.add(v);
    const fields = v as Record<string, unknown>;
    for (const key of Object.keys(fields)) fields[key] = fix(fields[key]);
    return v;
  };
  return grammarOf((fix(p.packed) as JsonGrammar).root as JsonNode);
}

/** Rebuilt grammars by content, the most recently used `limit` of them. */
export class GrammarCache {
  #grammars = new Map<string, JsonGrammar>();

  constructor(readonly limit = 32) {}

  /**
   * The grammar a packed one stands for: the one rebuilt earlier for the same content, else a new one.
   * @param p what packGrammar gave, structured-cloned
   * @param key its grammarKey when the sender computed it already (MaskPool), else computed here
   */
  unpack(p: PackedGrammar, key = contentKey(p.packed)): JsonGrammar {
    const hit = this.#grammars.get(key);
    if (hit) {
      this.#grammars.delete(key); // re-insert: most recently used last
      this.#grammars.set(key, hit);
      return hit;
    }
    const g = unpackGrammar(p);
    this.#grammars.set(key, g);
    for (const old of this.#grammars.keys()) {
      if (this.#grammars.size <= this.limit) break;
      this.#grammars.delete(old);
    }
    return g;
  }

  get size(): number {
    return this.#grammars.size;
  }
}

/** The content key of a packed grammar: equal for grammars compiled apart from the same source. */
export function grammarKey(p: PackedGrammar): string {
  return contentKey(p.packed);
}

/**
 * A text that two packed grammars share exactly when they are the same graph: objects in the order a walk
 * first meets them, a shared or cyclic reference as its first-meeting number, `id` fields (node and grammar
 * ids, different in every compilation) left out.
 */
function contentKey(packed: unknown): string {
  const seen = new Map<object, number>();
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== "object") {
      out.push(typeof v === "number" ? String(v) : JSON.stringify(v) ?? "u");
      return;
    }
    const at = seen.get(v);
    if (at !== undefined) {
      out.push(`@${at}`);
      return;
    }
    seen.set(v, seen.size);
    if (ArrayBuffer.isView(v)) {
      out.push(`<${Array.from(v as unknown as ArrayLike<number>).join(",")}>`);
    } else if (Array.isArray(v)) {
      out.push("[");
      for (const item of v) walk(item);
      out.push("]");
    } else {
      out.push("{");
      for (const [key, value] of Object.entries(v)) {
        if (key === "id") continue;
        out.push(key, ":");
        walk(value);
      }
      out.push("}");
    }
  };
  walk(packed);
  return out.join(" ");
}
