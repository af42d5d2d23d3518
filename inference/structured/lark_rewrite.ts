/**
 * The rewrites that make a Lark grammar's definitions (lark_syntax.ts) into GBNF rules the automaton can walk
 * (lark.ts), each keeping the texts: direct left recursion as a loop, repetitions of what can match empty text
 * as repetitions of its non-empty texts, and what `%ignore` skips after each terminal.
 */
import { type GbnfExpr, nullable } from "./gbnf_syntax.ts";
import { seqOf } from "./lark_literals.ts";

/**
 * `a: a x | a y | b | c` as `a: (b | c) (x | y)*` (the same texts): the alternatives that start with the
 * rule itself give the loop, the others its start. Unchanged when no alternative or every one starts so.
 */
export function leftRecursionAsLoop(name: string, body: GbnfExpr, at: number): GbnfExpr {
  const options = body.t === "alt" ? body.options : [body];
  const starts: GbnfExpr[] = [];
  const loops: GbnfExpr[] = [];
  for (const o of options) {
    const items = o.t === "seq" ? o.items : [o];
    const first = items[0];
    if (first.t !== "ref" || first.name !== name) starts.push(o);
    else if (items.length > 1) loops.push(seqOf(items.slice(1))); // `a: a` alone adds nothing
  }
  if (starts.length === options.length || starts.length === 0) return body;
  const alt = (es: GbnfExpr[]): GbnfExpr => (es.length === 1 ? es[0] : { t: "alt", options: es });
  if (loops.length === 0) return alt(starts);
  return { t: "seq", items: [alt(starts), { t: "rep", item: alt(loops), min: 0, max: Infinity, at }] };
}

/**
 * `e` with each repetition (more than once) of an item that can match empty text made to repeat the item's
 * non-empty texts, where they can be written without the rules' own (gbnf.ts refuses the others).
 */
export function nonEmptyRepeats(e: GbnfExpr, ref: (name: string) => boolean): GbnfExpr {
  switch (e.t) {
    case "seq":
      return { t: "seq", items: e.items.map((i) => nonEmptyRepeats(i, ref)) };
    case "alt":
      return { t: "alt", options: e.options.map((o) => nonEmptyRepeats(o, ref)) };
    case "rep": {
      const item = nonEmptyRepeats(e.item, ref);
      if (e.max <= 1 || !nullable(item, ref)) return { ...e, item };
      const core = withoutEmpty(item, ref);
      if (core === undefined) return { ...e, item };
      return core === null ? { t: "text", text: "" } : { t: "rep", item: core, min: 0, max: e.max, at: e.at };
    }
    default:
      return e;
  }
}

/**
 * The non-empty texts of `e` (whose repetitions repeat no empty item) as an expression; null when it has
 * none; undefined when that would need a rule's non-empty texts.
 */
function withoutEmpty(e: GbnfExpr, ref: (name: string) => boolean): GbnfExpr | null | undefined {
  if (!nullable(e, ref)) return e;
  switch (e.t) {
    case "text":
    case "chars":
      return null;
    case "ref":
      return undefined;
    case "alt":
    case "seq": {
      // A sequence of items that may all be empty: its first non-empty item is the k-th, for some k.
      const parts = e.t === "alt" ? e.options : e.items;
      const options: GbnfExpr[] = [];
      for (const [k, part] of parts.entries()) {
        const core = withoutEmpty(part, ref);
        if (core === undefined) return undefined;
        if (core !== null) options.push(e.t === "alt" ? core : seqOf([core, ...parts.slice(k + 1)]));
      }
      return options.length === 0 ? null : options.length === 1 ? options[0] : { t: "alt", options };
    }
    case "rep": {
      // x{m,n} without "": x{max(m, 1),n}, or x'{1,n} where x itself may be empty (x' its non-empty texts).
      const core = e.max === 0 ? null : withoutEmpty(e.item, ref);
      if (!core) return core;
      if (!nullable(e.item, ref)) return { ...e, min: Math.max(1, e.min) };
      return e.max === 1 ? core : { t: "rep", item: core, min: 1, max: e.max, at: e.at };
    }
  }
}

/**
 * `e` with each terminal it uses followed by a reference to `ignored` (the rule of what `%ignore` skips).
 * @param terminal whether a name is a terminal's
 */
export function ignoreAfterTokens(
  e: GbnfExpr,
  terminal: (name: string) => boolean,
  ignored: string,
): GbnfExpr {
  const go = (e: GbnfExpr): GbnfExpr => {
    switch (e.t) {
      case "ref":
        return terminal(e.name) ? { t: "seq", items: [e, { t: "ref", name: ignored, at: e.at }] } : e;
      case "seq":
        return { t: "seq", items: e.items.map(go) };
      case "alt":
        return { t: "alt", options: e.options.map(go) };
      case "rep":
        return { ...e, item: go(e.item) };
      default:
        return e;
    }
  };
  return go(e);
}
