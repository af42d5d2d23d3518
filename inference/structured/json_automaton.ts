/**
 * A byte-level pushdown automaton for the JSON a grammar (json_schema.ts) allows. A state is an immutable
 * stack of frames (a linked list, shared between states), so stepping copies nothing but the top frame and
 * a token's walk can branch at every byte (token_mask.ts walks the whole vocabulary as a trie). Where the
 * grammar is ambiguous (anyOf, a number that may go on or end) a position has several stacks: a
 * {@link StateSet}.
 *
 * Accepted text: JSON (RFC 8259) of the grammar's value with
 * - whitespace only between tokens, and there either one space (or tab) or one newline followed by at most
 *   {@link MAX_INDENT} spaces or tabs: compact and pretty-printed JSON both fit, a model cannot pad forever
 *   (the endless-whitespace failure of unbounded JSON grammars), none before or after the value (the
 *   output ends where the value does), and no CR;
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
 */
import type { JsonGrammar, JsonNode } from "./grammar.ts";

/** Most spaces or tabs after a newline between two JSON tokens (pretty-printing's indentation). */
export const MAX_INDENT = 32;

/**
 * A frame's whitespace so far: WS_NONE, WS_DONE (a space: no more), or WS_LINE + k (a newline and k
 * indentation bytes).
 */
const WS_NONE = 0, WS_DONE = 1, WS_LINE = 2;

/** The whitespace state after byte `b`, or −1 when `b` may not extend it. */
function moreWs(ws: number, b: number): number {
  if (ws === WS_NONE) return b === 0x0a ? WS_LINE : b === 0x20 || b === 0x09 ? WS_DONE : -1;
  if (ws >= WS_LINE && (b === 0x20 || b === 0x09) && ws - WS_LINE < MAX_INDENT) return ws + 1;
  return -1;
}

type ObjectNode = JsonNode & { kind: "object" };
type ArrayNode = JsonNode & { kind: "array" };
type StringNode = JsonNode & { kind: "string" };
type SeqNode = JsonNode & { kind: "seq" };
type UntilNode = JsonNode & { kind: "until" };
type ListNode = JsonNode & { kind: "list" };
type RegexNode = JsonNode & { kind: "regex" };

/**
 * Most stacks one position may hold; a byte that would make more is refused. Only a grammar ambiguous enough
 * to multiply its parses with each byte gets there (GBNF's `s ::= "a" s "b" | "a" s "c" | ""` doubles them).
 */
export const MAX_STACKS = 1024;

/** Most whitespace bytes after a free text's stop (a reasoning block's blank line). */
const MAX_GAP = 4;

/** Where in an object: after `{`, after a key, after a value, after a comma. */
const enum Obj {
  Open,
  Colon,
  After,
  Key,
}
/** Where in a number. */
const enum Num {
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
interface LitSource {
  id: string;
  texts: Uint8Array[];
  tags: number[];
  /** the object whose keys these are, or null for a value literal */
  obj: ObjectNode | null;
  /** for keys: the object's key count with this one (see the "obj" frame) */
  n: number;
}

type Frame =
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

const END: Stack = { f: { t: "end" }, up: null };

const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a;
const LBRACE = 0x7b, RBRACE = 0x7d, LBRACK = 0x5b, RBRACK = 0x5d;
const MINUS = 0x2d, PLUS = 0x2b, DOT = 0x2e, ZERO = 0x30, NINE = 0x39;

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= ZERO && b <= NINE;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

const on = (up: Stack | null, f: Frame): Stack => ({ f, up });

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

function numAccepting(p: Num): boolean {
  return p === Num.Zero || p === Num.Int || p === Num.Frac || p === Num.ExpDigits;
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
      return feedNumber(s, f, b, out);
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

/** After a literal's byte: the literal frame, or what follows it once no longer alternative remains. */
function litAdvance(src: LitSource, cand: number[], pos: number, up: Stack, out: Stack[]): void {
  const done = cand.filter((c) => src.texts[c].length === pos);
  if (done.length === cand.length) {
    // Every alternative left ends here: leave the literal now, so a complete value is complete.
    for (const c of done) out.push(litDone(src, c, up));
    return;
  }
  // Some alternative goes on (a shorter one that ended here ends at the next byte: feed's "lit" case). Keys
  // never get here with one ended: each is a JSON string, closed by its only unescaped quote.
  out.push(on(up, { t: "lit", src, cand, pos }));
}

function litDone(src: LitSource, c: number, up: Stack): Stack {
  if (!src.obj) return up;
  return on(up, { t: "obj", node: src.obj, phase: Obj.Colon, i: src.tags[c], n: src.n, ws: WS_NONE });
}

const valueSources = new WeakMap<JsonNode, LitSource>();
function valueLiterals(node: JsonNode & { kind: "literal" }): LitSource {
  let src = valueSources.get(node);
  if (!src) {
    src = { id: `L${node.id}`, texts: node.texts, tags: node.texts.map(() => -1), obj: null, n: 0 };
    valueSources.set(node, src);
  }
  return src;
}

const keySources = new WeakMap<ObjectNode, (LitSource | null)[][]>();
const encoder = new TextEncoder();
/**
 * The keys that may come next from property index `i` on with `n` keys written: up to and including the first
 * required one, each only if the object can still close within minProps..maxProps after it.
 */
function keyLiterals(node: ObjectNode, i: number, n: number): LitSource | null {
  let byIndex = keySources.get(node);
  if (!byIndex) keySources.set(node, byIndex = []);
  const byCount = byIndex[i] ??= [];
  if (byCount[n] !== undefined) return byCount[n];
  const required = requiredFrom(node);
  const texts: Uint8Array[] = [];
  const tags: number[] = [];
  for (let j = i; j < node.props.length; j++) {
    // After key j: n + 1 keys, the required ones after j still due, and (without other keys) at most the
    // properties after j to reach minProps.
    const least = n + 1 + required[j + 1];
    const most = node.rest ? Infinity : n + node.props.length - j;
    if (least <= node.maxProps && most >= node.minProps) {
      texts.push(encoder.encode(JSON.stringify(node.props[j].name)));
      tags.push(j);
    }
    if (node.props[j].required) break;
  }
  byCount[n] = texts.length > 0
    ? { id: `K${node.id}.${i}.${n}`, texts, tags, obj: node, n: countAfter(node, n) }
    : null;
  return byCount[n];
}

const requiredCounts = new WeakMap<ObjectNode, Int32Array>();
/** For each property index j (and props.length), how many required properties are at j or after. */
function requiredFrom(node: ObjectNode): Int32Array {
  let counts = requiredCounts.get(node);
  if (!counts) {
    counts = new Int32Array(node.props.length + 1);
    for (let j = node.props.length - 1; j >= 0; j--) {
      counts[j] = counts[j + 1] + (node.props[j].required ? 1 : 0);
    }
    requiredCounts.set(node, counts);
  }
  return counts;
}

/** The key count after one more key, capped where the bounds no longer tell counts apart (0: no bounds). */
function countAfter(node: ObjectNode, n: number): number {
  return Math.min(n + 1, Number.isFinite(node.maxProps) ? node.maxProps : node.minProps);
}

/** Whether an object may close with properties from index `i` on still unwritten and `n` keys written. */
function mayClose(node: ObjectNode, i: number, n: number): boolean {
  return requiredFrom(node)[i] === 0 && n >= node.minProps;
}

/** Whether a key other than the listed ones (`rest`) may come next: all required ones written, room left. */
function otherKey(node: ObjectNode, i: number, n: number): boolean {
  return node.rest !== null && requiredFrom(node)[i] === 0 && n < node.maxProps;
}

const keyNodes = new WeakMap<ObjectNode, StringNode>();
/** The string node of an object's other keys (its `restKey` pattern; the frame under it names the object). */
function keyNode(node: ObjectNode): StringNode {
  let key = keyNodes.get(node);
  if (!key) {
    key = { kind: "string", id: -1, minLength: 0, maxLength: Infinity, pattern: node.restKey };
    keyNodes.set(node, key);
  }
  return key;
}

function feedObject(s: Stack, f: Frame & { t: "obj" }, b: number, out: Stack[]): void {
  const up = s.up!;
  const node = f.node;
  if (isWs(b)) {
    const ws = moreWs(f.ws, b);
    if (ws >= 0) out.push(on(up, { ...f, ws }));
    return;
  }
  const listed = node.props.length;
  switch (f.phase) {
    case Obj.Open:
    case Obj.Key: {
      if (b === RBRACE && f.phase === Obj.Open && mayClose(node, f.i, f.n)) {
        out.push(up);
        return;
      }
      if (b === QUOTE && otherKey(node, f.i, f.n)) {
        // The key, then this object expecting a colon; index `listed`: the value is rest's.
        const colon: Frame = { ...f, phase: Obj.Colon, i: listed, n: countAfter(node, f.n), ws: WS_NONE };
        out.push(on(on(up, colon), { t: "str", node: keyNode(node), len: 0, esc: 0, u8: 0, re: 0 }));
      }
      const src = keyLiterals(node, f.i, f.n);
      if (!src) return;
      const next = src.texts.flatMap((t, c) => (t[0] === b ? [c] : []));
      if (next.length > 0) litAdvance(src, next, 1, up, out);
      return;
    }
    case Obj.Colon: {
      if (b !== COLON) return;
      const own = f.i < listed;
      const after: Frame = { ...f, phase: Obj.After, i: own ? f.i + 1 : listed, ws: WS_NONE };
      out.push(on(on(up, after), { t: "val", node: own ? node.props[f.i].value : node.rest!, ws: WS_NONE }));
      return;
    }
    case Obj.After:
      if (b === RBRACE && mayClose(node, f.i, f.n)) out.push(up);
      else if (b === COMMA && (otherKey(node, f.i, f.n) || keyLiterals(node, f.i, f.n))) {
        out.push(on(up, { t: "obj", node, phase: Obj.Key, i: f.i, n: f.n, ws: WS_NONE }));
      }
      return;
  }
}

function feedString(s: Stack, f: Frame & { t: "str" }, b: number, out: Stack[]): void {
  const up = s.up!;
  const track = f.node.minLength > 0 || Number.isFinite(f.node.maxLength);
  const room = f.len < f.node.maxLength;
  const dfa = f.node.pattern;
  // The pattern reads decoded characters: raw bytes as they come, an escape as the byte it stands for.
  const re = (byte: number) => (dfa ? dfa.step(f.re, byte) : 0);
  if (f.u8 > 0) {
    const d = re(b);
    if (b >= 0x80 && b <= 0xbf && d >= 0) out.push(on(up, { ...f, u8: f.u8 - 1, re: d }));
    return;
  }
  if (f.esc === 1) {
    const decoded = ESCAPES.get(b);
    if (b === 0x75 && !dfa) out.push(on(up, { ...f, esc: 2 })); // \u (not under a pattern: code units)
    else if (decoded !== undefined) {
      const d = re(decoded);
      if (d >= 0) out.push(on(up, { ...f, esc: 0, len: track ? f.len + 1 : 0, re: d }));
    }
    return;
  }
  if (f.esc >= 2) {
    if (!isHex(b)) return;
    out.push(on(up, f.esc === 5 ? { ...f, esc: 0, len: track ? f.len + 1 : 0 } : { ...f, esc: f.esc + 1 }));
    return;
  }
  if (b === QUOTE) {
    if (f.len < f.node.minLength || (dfa && !dfa.accepting(f.re))) return;
    out.push(up);
    return;
  }
  if (b < 0x20 || !room) return;
  if (b === BACKSLASH) {
    out.push(on(up, { ...f, esc: 1 }));
    return;
  }
  const d = re(b);
  if (d < 0) return;
  if (b < 0x80) {
    // The common case: an unconstrained string stays in the very same state (no allocation).
    out.push(track || dfa ? on(up, { ...f, len: track ? f.len + 1 : 0, re: d }) : s);
    return;
  }
  const more = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0;
  if (more > 0) out.push(on(up, { ...f, u8: more, len: track ? f.len + 1 : 0, re: d }));
}

/** The byte each one-character JSON escape stands for. */
const ESCAPES = new Map(
  [...'"\\/bfnrt'].map((c, i) => [c.charCodeAt(0), [0x22, 0x5c, 0x2f, 0x08, 0x0c, 0x0a, 0x0d, 0x09][i]]),
);

function feedNumber(s: Stack, f: Frame & { t: "num" }, b: number, out: Stack[]): void {
  const up = s.up!;
  const to = (phase: Num): void => {
    out.push(phase === f.phase ? s : on(up, { ...f, phase }));
  };
  const digit = isDigit(b);
  const fraction = !f.integer && b === DOT;
  const exponent = !f.integer && (b === 0x65 || b === 0x45);
  switch (f.phase) {
    case Num.Sign:
      if (b === ZERO) to(Num.Zero);
      else if (digit) to(Num.Int);
      return;
    case Num.Zero:
    case Num.Int:
      if (digit && f.phase === Num.Int) return to(Num.Int);
      if (fraction) return to(Num.Dot);
      if (exponent) return to(Num.Exp);
      if (!digit) feed(up, b, out); // the number ended; the byte is the next token's
      return;
    case Num.Dot:
      if (digit) to(Num.Frac);
      return;
    case Num.Frac:
      if (digit) return to(Num.Frac);
      if (exponent) return to(Num.Exp);
      return feed(up, b, out);
    case Num.Exp:
      if (b === PLUS || b === MINUS) to(Num.ExpSign);
      else if (digit) to(Num.ExpDigits);
      return;
    case Num.ExpSign:
      if (digit) to(Num.ExpDigits);
      return;
    case Num.ExpDigits:
      if (digit) return to(Num.ExpDigits);
      return feed(up, b, out);
  }
}
