/**
 * A byte-level pushdown automaton for the JSON a grammar (json_schema.ts) allows. A state is an immutable
 * stack of frames (a linked list, shared between states), so stepping copies nothing but the top frame and
 * a token's walk can branch at every byte (token_mask.ts walks the whole vocabulary as a trie). Where the
 * grammar is ambiguous (anyOf, a number that may go on or end) a position has several stacks: a
 * {@link StateSet}.
 *
 * Accepted text: JSON (RFC 8259) of the grammar's value with
 * - whitespace only between tokens, and there either one space (or tab) or one newline followed by at most
 *   `MAX_INDENT` (json_automaton_frames.ts) spaces or tabs: compact and pretty-printed JSON both fit, a model
 *   cannot pad forever (the endless-whitespace failure of unbounded JSON grammars), none before or after the
 *   value (the output ends where the value does), and no CR;
 * - strings: any character but controls, `"` and `\` unescaped; the escapes `\" \\ \/ \b \f \n \r \t` and
 *   `\uXXXX`; multi-byte UTF-8 checked for its lead and continuation bytes (tokens may split a character);
 *   minLength/maxLength count characters, an escape counting one;
 * - object keys as JSON.stringify writes them, in the schema's order (json_schema.ts), then other keys where
 *   the object takes them (any string; beside listed keys, none of their names); a key is offered only while
 *   the object can still close within its minProps..maxProps, so no output walks into a dead end;
 * - array items of the prefix's nodes in turn (tuples), then of `items`.
 *
 * The other kinds (literal, regex, any-of, ref, seq, list: a regex, a choice, a chat format's marks, a GBNF
 * grammar from gbnf.ts) read exactly their text, no whitespace implied; seq, list, any-of and regex may
 * match empty text.
 *
 * Here: the public step API and the step of each frame kind, dispatched by kind, with the short steps
 * inline (arrays, literals, sequences, lists, free text, regexes; any-of and refs only branch). The frames
 * and stacks: json_automaton_frames.ts; objects and their key literals: json_automaton_objects.ts; strings
 * and numbers: json_automaton_scalars.ts.
 */
import type { JsonGrammar, JsonNode } from "./grammar.ts";
import {
  type ArrayNode,
  COMMA,
  type Frame,
  isDigit,
  isWs,
  LBRACE,
  LBRACK,
  type ListNode,
  MINUS,
  moreWs,
  Num,
  Obj,
  on,
  QUOTE,
  RBRACK,
  type Stack,
  type StateSet,
  WS_DONE,
  WS_NONE,
  ZERO,
} from "./json_automaton_frames.ts";
import { feedObject, litAdvance, valueLiterals } from "./json_automaton_objects.ts";
import { feedNumber, feedString, numAccepting } from "./json_automaton_scalars.ts";

/**
 * Most stacks one position may hold; a byte that would make more is refused. Only a grammar ambiguous enough
 * to multiply its parses with each byte gets there (GBNF's `s ::= "a" s "b" | "a" s "c" | ""` doubles them).
 */
export const MAX_STACKS = 1024;

/** Most whitespace bytes after a free text's stop (a reasoning block's blank line). */
const MAX_GAP = 4;

const END: Stack = { f: { t: "end" }, up: null };

/** The state before any output. */
export function initialStates(grammar: JsonGrammar): StateSet {
  return [on(END, { t: "val", node: grammar.root, ws: WS_DONE })]; // no whitespace before the value
}

/**
 * Feeds one byte to every stack of a set.
 * @returns the stacks that accept it (empty: the byte is not allowed)
 */
export function stepStates(states: StateSet, b: number): StateSet {
  const out: Stack[] = [];
  for (const s of states) feed(s, b, out);
  const set = out.length > 1 ? dedupe(out) : out;
  return set.length > MAX_STACKS ? [] : set;
}

/** Whether the output may end here (the value is complete). */
export function canEnd(states: StateSet): boolean {
  return states.some(stackCanEnd);
}

/** Whether the value is complete and nothing more may follow. */
export function isComplete(states: StateSet): boolean {
  return states.length > 0 && states.every((s) => s.f.t === "end");
}

/** A string naming a state set (equal keys: equal futures). */
export function statesKey(states: StateSet): string {
  return states.length === 1 ? keyOf(states[0]) : states.map(keyOf).sort().join("|");
}

function dedupe(stacks: Stack[]): Stack[] {
  const seen = new Map<string, Stack>();
  for (const s of stacks) {
    const k = keyOf(s);
    if (!seen.has(k)) seen.set(k, s);
  }
  return [...seen.values()];
}

function keyOf(s: Stack): string {
  if (s.k !== undefined) return s.k;
  const f = s.f;
  let own: string;
  switch (f.t) {
    case "end":
      own = "e";
      break;
    case "val":
      own = `v${f.node.id},${f.ws}`;
      break;
    case "obj":
      own = `o${f.node.id},${f.phase},${f.i},${f.n},${f.ws}`;
      break;
    case "arr":
      own = `a${f.node.id},${f.open ? 1 : 0},${f.n},${f.ws}`;
      break;
    case "str":
      own = `s${f.node.id},${f.len},${f.esc},${f.u8},${f.re}`;
      break;
    case "num":
      own = `n${f.integer ? 1 : 0},${f.phase}`;
      break;
    case "lit":
      own = `l${f.src.id},${f.pos},${f.cand.join(".")}`;
      break;
    case "seq":
      own = `q${f.node.id},${f.i}`;
      break;
    case "until":
      own = `u${f.node.id},${f.pos},${f.gap}`;
      break;
    case "list":
      own = `i${f.node.id},${f.n}`;
      break;
    case "re":
      own = `r${f.node.id},${f.d}`;
      break;
  }
  s.k = s.up ? `${own}/${keyOf(s.up)}` : own;
  return s.k;
}

function stackCanEnd(s: Stack): boolean {
  const f = s.f;
  if (f.t === "end") return true;
  if (f.t === "val") return nullable(f.node) && stackCanEnd(s.up!);
  if (f.t === "seq") {
    for (let i = f.i; i < f.node.items.length; i++) if (!nullable(f.node.items[i])) return false;
    return stackCanEnd(s.up!);
  }
  if (f.t === "num") return numAccepting(f.phase) && stackCanEnd(s.up!);
  if (f.t === "lit") return f.cand.some((c) => f.src.texts[c].length === f.pos) && stackCanEnd(s.up!);
  if (f.t === "list") return f.n >= f.node.min && stackCanEnd(s.up!);
  if (f.t === "re") return f.node.dfa.accepting(f.d) && stackCanEnd(s.up!);
  return false;
}

const nullables = new WeakMap<JsonNode, boolean>();
/** Whether a node may match empty text (never a JSON value; GBNF's `x*`, `x?`, empty alternatives). */
function nullable(node: JsonNode): boolean {
  let v = nullables.get(node);
  if (v !== undefined) return v;
  nullables.set(node, false); // a cycle back to here reads text first (gbnf.ts refuses left recursion)
  switch (node.kind) {
    case "ref":
      v = nullable(node.to!);
      break;
    case "anyOf":
      v = node.options.some(nullable);
      break;
    case "seq":
      v = node.items.every(nullable);
      break;
    case "list":
      v = node.min === 0 || nullable(node.item);
      break;
    case "regex":
      v = node.dfa.accepting(0);
      break;
    default:
      v = false;
  }
  nullables.set(node, v);
  return v;
}

/** Feeds byte `b` to stack `s`, pushing every resulting stack to `out`. */
function feed(s: Stack, b: number, out: Stack[]): void {
  const f = s.f;
  const up = s.up!;
  switch (f.t) {
    case "end":
      return;
    case "val":
      if (isWs(b)) {
        const ws = moreWs(f.ws, b);
        if (ws >= 0) {
          out.push(on(up, { ...f, ws }));
          return;
        }
        // No more JSON whitespace here: the byte may still begin the value (a regex's, a GBNF rule's).
      }
      return startValue(f.node, up, b, out);
    case "obj":
      return feedObject(s, f, b, out);
    case "arr": {
      if (isWs(b)) {
        const ws = moreWs(f.ws, b);
        if (ws >= 0) out.push(on(up, { ...f, ws }));
        return;
      }
      const node = f.node;
      if (f.open) {
        if (b === RBRACK && node.minItems === 0) out.push(up);
        else if (node.maxItems > 0) startValue(itemNode(node, 0), on(up, arrAfter(node, 1)), b, out);
        return;
      }
      if (b === RBRACK && f.n >= node.minItems) out.push(up);
      else if (b === COMMA && f.n < node.maxItems) {
        out.push(on(on(up, arrAfter(node, f.n + 1)), { t: "val", node: itemNode(node, f.n), ws: WS_NONE }));
      }
      return;
    }
    case "str":
      return feedString(s, f, b, out);
    case "num":
      return feedNumber(s, f, b, out, feed);
    case "lit": {
      const { src, cand, pos } = f;
      const next: number[] = [];
      let ended = false;
      for (const c of cand) {
        const text = src.texts[c];
        if (text.length === pos) ended = true;
        else if (text[pos] === b) next.push(c);
      }
      if (ended) feed(up, b, out); // a shorter alternative ended: the byte is the next token's
      if (next.length > 0) litAdvance(src, next, pos + 1, up, out);
      return;
    }
    case "seq": {
      const { node, i } = f;
      return startValue(node.items[i], i + 1 < node.items.length ? on(up, { ...f, i: i + 1 }) : up, b, out);
    }
    case "until":
      return feedUntil(s, f, b, out);
    case "re": {
      const { dfa } = f.node;
      if (dfa.accepting(f.d)) feed(up, b, out); // the match may end here: the byte is what follows
      const d = dfa.step(f.d, b);
      if (d < 0) return;
      // A match that nothing can extend is over: leave it now, so a complete output is complete.
      out.push(dfa.accepting(d) && !dfa.hasExits(d) ? up : on(up, { ...f, d }));
      return;
    }
    case "list": {
      const { node, n } = f;
      if (n >= node.min) feed(up, b, out); // the list ended
      if (n < node.max) startValue(node.more, listAfter(node, n + 1, up), b, out);
      return;
    }
  }
}

/** What follows a list's n-th item: the list frame, or once `max` items are read what follows the list. */
function listAfter(node: ListNode, n: number, up: Stack): Stack {
  if (n >= node.max) return up;
  const cap = Number.isFinite(node.max) ? node.max : node.min;
  return on(up, { t: "list", node, n: Math.min(n, Math.max(cap, 1)) });
}

function feedUntil(s: Stack, f: Frame & { t: "until" }, b: number, out: Stack[]): void {
  const up = s.up!;
  if (f.gap >= 0) {
    if ((b === 0x20 || b === 0x0a) && f.gap < MAX_GAP) out.push(on(up, { ...f, gap: f.gap + 1 }));
    else feed(up, b, out); // the free text is over: the byte is what follows
    return;
  }
  const { stop, fail } = f.node;
  let pos = f.pos;
  while (pos > 0 && stop[pos] !== b) pos = fail[pos];
  if (stop[pos] === b) pos++;
  if (pos === stop.length) out.push(on(up, { ...f, pos: 0, gap: 0 }));
  else out.push(pos === f.pos ? s : on(up, { ...f, pos }));
}

/** The item count an array frame keeps: exact where a bound or the prefix still needs it. */
function arrAfter(node: ArrayNode, n: number): Frame {
  const cap = Math.max(Number.isFinite(node.maxItems) ? node.maxItems : node.minItems, node.prefix.length);
  return { t: "arr", node, open: false, n: Math.min(n, Math.max(cap, 1)), ws: WS_NONE };
}

/** The node of item `k` (0-based; maxItems keeps `k` within the prefix when items is null). */
function itemNode(node: ArrayNode, k: number): JsonNode {
  return k < node.prefix.length ? node.prefix[k] : node.items!;
}

function startValue(node: JsonNode, up: Stack, b: number, out: Stack[]): void {
  switch (node.kind) {
    case "ref":
      return startValue(node.to!, up, b, out);
    case "anyOf":
      for (const o of node.options) startValue(o, up, b, out);
      return;
    case "object":
      if (b === LBRACE) out.push(on(up, { t: "obj", node, phase: Obj.Open, i: 0, n: 0, ws: WS_NONE }));
      return;
    case "array":
      if (b === LBRACK) out.push(on(up, { t: "arr", node, open: true, n: 0, ws: WS_NONE }));
      return;
    case "string":
      if (b === QUOTE) out.push(on(up, { t: "str", node, len: 0, esc: 0, u8: 0, re: 0 }));
      return;
    case "number":
      if (b === MINUS) out.push(on(up, { t: "num", integer: node.integer, phase: Num.Sign }));
      else if (b === ZERO) out.push(on(up, { t: "num", integer: node.integer, phase: Num.Zero }));
      else if (isDigit(b)) out.push(on(up, { t: "num", integer: node.integer, phase: Num.Int }));
      return;
    case "seq":
      return feed(on(up, { t: "seq", node, i: 0 }), b, out);
    case "until":
      return feedUntil(
        on(up, { t: "until", node, pos: 0, gap: -1 }),
        { t: "until", node, pos: 0, gap: -1 },
        b,
        out,
      );
    case "list":
      if (node.min === 0) feed(up, b, out); // no item
      if (node.max > 0) startValue(node.item, listAfter(node, 1, up), b, out);
      return;
    case "regex":
      return feed(on(up, { t: "re", node, d: 0 }), b, out);
    case "literal": {
      const src = valueLiterals(node);
      const next = src.texts.flatMap((t, c) => (t[0] === b ? [c] : []));
      if (next.length > 0) litAdvance(src, next, 1, up, out);
      return;
    }
  }
}
