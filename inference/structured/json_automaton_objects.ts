/**
 * The object frame of the byte automaton (json_automaton.ts) and the literal frames that read an object's
 * keys: which keys may come next (the listed ones in order, each only while minProps..maxProps can still be
 * met; other keys where the object takes them), then the colon, the value and the comma. Value literals
 * (enum, const, true, false, null, exact text) share the literal frames. Apart from the automaton because
 * objects are the JSON values with the most rules of their own.
 */
import {
  COLON,
  COMMA,
  type Frame,
  isWs,
  type LitSource,
  moreWs,
  Obj,
  type ObjectNode,
  on,
  QUOTE,
  RBRACE,
  type Stack,
  type StringNode,
  WS_NONE,
} from "./json_automaton_frames.ts";
import type { JsonNode } from "./grammar.ts";

/** After a literal's byte: the literal frame, or what follows it once no longer alternative remains. */
export function litAdvance(src: LitSource, cand: number[], pos: number, up: Stack, out: Stack[]): void {
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
/** The literal source of a value literal node (one per node). */
export function valueLiterals(node: JsonNode & { kind: "literal" }): LitSource {
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

/** Feeds byte `b` to an object frame `f` on top of stack `s`. */
export function feedObject(s: Stack, f: Frame & { t: "obj" }, b: number, out: Stack[]): void {
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
