/**
 * The state of the byte automaton (json_automaton.ts): the frames a stack is made of, the stacks themselves,
 * and what every frame kind's step uses (byte classes, the whitespace rule between JSON tokens). Apart from
 * the steps so the files of frame kinds (json_automaton_objects.ts, json_automaton_scalars.ts) and the
 * automaton that dispatches to them share it without importing each other in a circle.
 */
import type { JsonNode } from "./grammar.ts";

/** Most spaces or tabs after a newline between two JSON tokens (pretty-printing's indentation). */
export const MAX_INDENT = 32;

/**
 * A frame's whitespace so far: WS_NONE, WS_DONE (a space: no more), or WS_LINE + k (a newline and k
 * indentation bytes).
 */
export const WS_NONE = 0, WS_DONE = 1, WS_LINE = 2;

/** The whitespace state after byte `b`, or −1 when `b` may not extend it. */
export function moreWs(ws: number, b: number): number {
  if (ws === WS_NONE) return b === 0x0a ? WS_LINE : b === 0x20 || b === 0x09 ? WS_DONE : -1;
  if (ws >= WS_LINE && (b === 0x20 || b === 0x09) && ws - WS_LINE < MAX_INDENT) return ws + 1;
  return -1;
}

/** The node kinds whose frames point at their node. */
export type ObjectNode = JsonNode & { kind: "object" };
export type ArrayNode = JsonNode & { kind: "array" };
export type StringNode = JsonNode & { kind: "string" };
export type SeqNode = JsonNode & { kind: "seq" };
export type UntilNode = JsonNode & { kind: "until" };
export type ListNode = JsonNode & { kind: "list" };
export type RegexNode = JsonNode & { kind: "regex" };

/** Where in an object: after `{`, after a key, after a value, after a comma. */
export const enum Obj {
  Open,
  Colon,
  After,
  Key,
}
/** Where in a number. */
export const enum Num {
  Sign,
  Zero,
  Int,
  Dot,
  Frac,
  Exp,
  ExpSign,
  ExpDigits,
}

/** Literal alternatives being matched; `tags[k]` is the property index a key literal picks (or −1). */
export interface LitSource {
  id: string;
  texts: Uint8Array[];
  tags: number[];
  /** the object whose keys these are, or null for a value literal */
  obj: ObjectNode | null;
  /** for keys: the object's key count with this one (see the "obj" frame) */
  n: number;
}

export type Frame =
  | { t: "end" }
  | { t: "val"; node: JsonNode; ws: number }
  /**
   * `i`: the next property index, props.length once other keys (`rest`) began (always 0 in a map); `n`: keys
   * so far, counted only under minProps/maxProps and capped where it no longer matters
   */
  | { t: "obj"; node: ObjectNode; phase: Obj; i: number; n: number; ws: number }
  /** `n`: items so far, capped where it no longer matters (exact through the prefix) */
  | { t: "arr"; node: ArrayNode; open: boolean; n: number; ws: number }
  /**
   * `len`: characters (tracked only under min/maxLength); `esc`: 0, 1 after `\`, 2–5 in `\u`; `u8`: continuation
   * bytes due; `re`: the pattern's DFA state over the decoded characters (0 without a pattern)
   */
  | { t: "str"; node: StringNode; len: number; esc: number; u8: number; re: number }
  | { t: "num"; integer: boolean; phase: Num }
  /** `cand`: indices into src.texts still matching after `pos` bytes */
  | { t: "lit"; src: LitSource; cand: number[]; pos: number }
  /** item `i` of a sequence comes next */
  | { t: "seq"; node: SeqNode; i: number }
  /** free text: `pos` bytes of the stop matched, or (`gap` ≥ 0) the stop was read and `gap` spaces since */
  | { t: "until"; node: UntilNode; pos: number; gap: number }
  /** `n` items of a list read (capped as arrays are) */
  | { t: "list"; node: ListNode; n: number }
  /** in DFA state `d` of a regex */
  | { t: "re"; node: RegexNode; d: number };

/** One stack: the top frame and the rest. */
export interface Stack {
  readonly f: Frame;
  readonly up: Stack | null;
  /** memoized key */
  k?: string;
}

/** The stacks one position may be in (deduplicated by key). */
export type StateSet = Stack[];

export const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a;
export const LBRACE = 0x7b, RBRACE = 0x7d, LBRACK = 0x5b, RBRACK = 0x5d;
export const MINUS = 0x2d, PLUS = 0x2b, DOT = 0x2e, ZERO = 0x30, NINE = 0x39;

export const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
export const isDigit = (b: number) => b >= ZERO && b <= NINE;
export const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** A stack of frame `f` on `up`. */
export const on = (up: Stack | null, f: Frame): Stack => ({ f, up });

/** Feeds byte `b` to stack `s`, pushing every resulting stack to `out` (json_automaton.ts's step). */
export type Feed = (s: Stack, b: number, out: Stack[]) => void;
