/**
 * The grammar the byte automaton (json_automaton.ts) walks: a graph of nodes, most of them compiled from
 * a JSON Schema (json_schema.ts), plus the few combinators that wrap a value in the text a chat format
 * puts around it: exact text, sequences, free text up to a marker (a reasoning block), and lists (several
 * function calls).
 */
import { RegexDfa } from "./regex.ts";

/** One property of an object node. */
export interface PropNode {
  name: string;
  required: boolean;
  value: JsonNode;
}

/** A node of the grammar; `id` names it in automaton state keys. */
export type JsonNode =
  /**
   * `props` in order, then (with `rest`) any number of other keys with values of `rest`: any key where
   * `restKey` is null, else one whose decoded characters it accepts (never a listed name; what
   * `propertyNames` and `patternProperties` allow: json_schema_keys.ts); `minProps` to `maxProps` keys in all
   */
  | {
    kind: "object";
    id: number;
    props: PropNode[];
    rest: JsonNode | null;
    restKey: RegexDfa | null;
    minProps: number;
    maxProps: number;
  }
  /**
   * item k is `prefix[k]`'s, the items after the prefix `items`' (null: none; maxItems is then at most the
   * prefix's length)
   */
  | {
    kind: "array";
    id: number;
    prefix: JsonNode[];
    items: JsonNode | null;
    minItems: number;
    maxItems: number;
  }
  /** `pattern`: what the decoded characters must match (JSON Schema's search semantics built in), or null */
  | { kind: "string"; id: number; minLength: number; maxLength: number; pattern: RegexDfa | null }
  | { kind: "number"; id: number; integer: boolean }
  /** exact texts (enum, const, true/false, null; or any text: exactText) */
  | { kind: "literal"; id: number; texts: Uint8Array[] }
  | { kind: "anyOf"; id: number; options: JsonNode[] }
  /** a $ref, resolved once all definitions are compiled */
  | { kind: "ref"; id: number; to: JsonNode | null }
  /** items in turn */
  | { kind: "seq"; id: number; items: JsonNode[] }
  /** any bytes through `stop` (fail: its KMP failure function), then a little whitespace */
  | { kind: "until"; id: number; stop: Uint8Array; fail: Int32Array }
  /** min..max items; `more` is the separator and an item */
  | { kind: "list"; id: number; item: JsonNode; more: JsonNode; min: number; max: number }
  /** text matching a regular expression (regex.ts) */
  | { kind: "regex"; id: number; dfa: RegexDfa };

/** A grammar: the output must match `root`. */
export interface JsonGrammar {
  /** unique per grammar: mask caches key on it */
  readonly id: number;
  readonly root: JsonNode;
}

let nodes = 0;
let grammars = 0;
const encoder = new TextEncoder();

/** Gives a node its id (unique across grammars, so nodes of several schemas combine). */
export function makeNode<T extends Omit<JsonNode, "id">>(n: T): T & { id: number } {
  return { ...n, id: nodes++ };
}

/** A grammar of a root node. */
export function grammarOf(root: JsonNode): JsonGrammar {
  return { id: ++grammars, root };
}

/** Exactly this text (its UTF-8 bytes). */
export function exactText(text: string): JsonNode {
  return makeNode({ kind: "literal", texts: [encoder.encode(text)] });
}

/**
 * Text that matches a regular expression as a whole (vLLM's `guided_regex`; regex_parser.ts says which
 * syntax).
 * @throws RegexError naming what it cannot compile
 */
export function regexGrammar(pattern: string): JsonGrammar {
  return grammarOf(makeNode({ kind: "regex", dfa: new RegexDfa(pattern) }));
}

/** Exactly one of these texts and nothing after it (vLLM's `guided_choice`). */
export function choiceGrammar(texts: readonly string[]): JsonGrammar {
  return grammarOf(makeNode({ kind: "literal", texts: [...new Set(texts)].map((t) => encoder.encode(t)) }));
}

/** Each item in turn. */
export function sequence(...items: JsonNode[]): JsonNode {
  return makeNode({ kind: "seq", items });
}

/** Any one of the options. */
export function oneOfNodes(...options: JsonNode[]): JsonNode {
  return makeNode({ kind: "anyOf", options });
}

/**
 * Any bytes up to and including the first `stop`, then at most a few spaces or newlines (what a reasoning
 * block and the blank line after it look like).
 */
export function textUntil(stop: string): JsonNode {
  const bytes = encoder.encode(stop);
  // KMP failure function: on a mismatch after k matched bytes, fail[k] of them still match.
  const fail = new Int32Array(bytes.length + 1);
  for (let k = 2, j = 0; k <= bytes.length; k++) {
    while (j > 0 && bytes[k - 1] !== bytes[j]) j = fail[j];
    if (bytes[k - 1] === bytes[j]) j++;
    fail[k] = j;
  }
  return makeNode({ kind: "until", stop: bytes, fail });
}

/** `min` to `max` items with `separator` text between them ("": none). */
export function separatedList(item: JsonNode, separator: string, min: number, max: number): JsonNode {
  // An exact text must read at least one byte: an empty separator is no node.
  const more = separator === "" ? item : sequence(exactText(separator), item);
  return makeNode({ kind: "list", item, more, min, max });
}

/** How a chat template's reasoning block looks (server/reasoning.ts). */
export interface ReasoningMarks {
  open: string;
  close: string;
  /** the generation prompt already opened the block: the output starts inside it */
  opensInPrompt: boolean;
}

/**
 * A grammar whose value may follow a reasoning block (Qwen3, DeepSeek-R1): the block's text is free, the
 * grammar holds from its end on. A block the prompt opened must be closed; another is optional.
 */
export function afterReasoning(g: JsonGrammar, marks: ReasoningMarks): JsonGrammar {
  const block = textUntil(marks.close);
  const root = marks.opensInPrompt
    ? sequence(block, g.root)
    : oneOfNodes(sequence(exactText(marks.open), block, g.root), g.root);
  return grammarOf(root);
}

/** How a chat format writes one function call (server/tool_calls.ts: hermes `<tool_call>\n…\n</tool_call>`). */
export interface ToolCallMarks {
  /** text before and after a call's JSON object ("" for none) */
  open: string;
  close: string;
  /** between two calls */
  separator: string;
  /** the object's key for the arguments ("arguments"; Llama 3.x "parameters"); unused with argumentsMark */
  argumentsKey: string;
  /** text before and after all the calls (Mistral's JSON list: "[" and "]"), if any */
  list?: { open: string; close: string };
  /**
   * a call is not a JSON object but the function's bare name, this mark, then the arguments' object
   * (Mistral's tokenizer v11 on: `get_weather[ARGS]{…}`)
   */
  argumentsMark?: string;
}

/** A function the output may call: its name and the node of its arguments (compileSchemaNode). */
export interface ToolSpec {
  name: string;
  arguments: JsonNode;
}

/**
 * Output that is function calls and nothing else (`tool_choice` "required" or a named function): each call
 * `{"name": <one of the tools>, <argumentsKey>: <its parameters' JSON>}` (or `<name><argumentsMark><its
 * parameters' JSON>`) between the format's marks; one call, or with `parallel` one or more.
 */
export function toolCallsGrammar(marks: ToolCallMarks, tools: ToolSpec[], parallel: boolean): JsonGrammar {
  const calls = tools.map((t) =>
    marks.argumentsMark === undefined
      ? makeNode({
        kind: "object",
        props: [
          { name: "name", required: true, value: exactText(JSON.stringify(t.name)) },
          { name: marks.argumentsKey, required: true, value: t.arguments },
        ],
        rest: null,
        restKey: null,
        minProps: 0,
        maxProps: Infinity,
      })
      : sequence(exactText(t.name + marks.argumentsMark), t.arguments)
  );
  const call = calls.length === 1 ? calls[0] : oneOfNodes(...calls);
  // Empty marks are left out: an exact text must read at least one byte.
  const parts = [marks.open, null, marks.close].flatMap((m) =>
    m === null ? [call] : m === "" ? [] : [exactText(m)]
  );
  const one = parts.length === 1 ? call : sequence(...parts);
  const list = parallel ? separatedList(one, marks.separator, 1, Infinity) : one;
  return grammarOf(
    marks.list ? sequence(exactText(marks.list.open), list, exactText(marks.list.close)) : list,
  );
}
