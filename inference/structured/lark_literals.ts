/**
 * The characters of Lark grammars (lark_syntax.ts, lark_regex.ts): sorted code-point ranges, Python's case
 * folding (`"…"i`, `/…/i`), and Lark's string literals with their escapes.
 */
import type { GbnfExpr } from "./gbnf_syntax.ts";

/** Sorted, disjoint code-point ranges. */
export type Ranges = [lo: number, hi: number][];

const MAX_CODE_POINT = 0x10ffff;
const CONTROL = new Map(Object.entries({ n: 10, t: 9, r: 13, f: 12 }));
const HEX_DIGITS = new Map(Object.entries({ x: 2, u: 4, U: 8 }));

/** `ranges` sorted and merged. */
export function normalize(ranges: Ranges): Ranges {
  const out: Ranges = [];
  for (const [lo, hi] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = out.at(-1);
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** The code points not in `ranges`. */
export function complement(ranges: Ranges): Ranges {
  const out: Ranges = [];
  let next = 0;
  for (const [lo, hi] of normalize(ranges)) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

/** `ranges` with every character's other cases added (Python's `re.IGNORECASE`, by simple case mappings). */
export function foldCase(ranges: Ranges): Ranges {
  const out: Ranges = [...ranges];
  const { sorted, classes } = caseClasses();
  for (const [lo, hi] of ranges) {
    for (let k = lowerBound(sorted, lo); k < sorted.length && sorted[k] <= hi; k++) {
      for (const v of classes.get(sorted[k])!) out.push([v, v]);
    }
  }
  return normalize(out);
}

/** One character's expression: a string of it, or with `ignoreCase` a class of its cases where it has some. */
export function charExpr(cp: number, ignoreCase: boolean): GbnfExpr {
  const ranges = ignoreCase ? foldCase([[cp, cp]]) : [];
  return ranges.length > 1 || (ranges.length === 1 && ranges[0][0] !== ranges[0][1])
    ? { t: "chars", ranges }
    : { t: "text", text: String.fromCodePoint(cp) };
}

/** A sequence of items with adjacent strings joined: one item, or "" for none. */
export function seqOf(items: GbnfExpr[]): GbnfExpr {
  const out: GbnfExpr[] = [];
  for (const item of items) {
    const last = out.at(-1);
    if (item.t === "text" && last?.t === "text") {
      out[out.length - 1] = { t: "text", text: last.text + item.text };
    } else out.push(item);
  }
  return out.length === 0 ? { t: "text", text: "" } : out.length === 1 ? out[0] : { t: "seq", items: out };
}

/**
 * The string (`"…"`, `"…"i`: any case) or range of characters (`"a".."z"`) at `open`.
 * @param src the grammar text
 * @param open the offset of the opening quote
 * @param fail throws the caller's error at an offset of `src`
 * @returns its expression and the offset after it
 */
export function stringOrRange(
  src: string,
  open: number,
  fail: (detail: string, at: number) => never,
): { expr: GbnfExpr; end: number } {
  const first = readString(src, open, fail);
  const dots = /^[ \t]*\.\.[ \t]*/.exec(src.slice(first.end, first.end + 80));
  if (!dots) {
    if (first.text === "") fail("empty strings are not allowed (Lark refuses empty terminals)", open);
    const cps = [...first.text].map((ch) => ch.codePointAt(0)!);
    const expr: GbnfExpr = first.ignoreCase
      ? seqOf(cps.map((cp) => charExpr(cp, true)))
      : { t: "text", text: first.text };
    return { expr, end: first.end };
  }
  const at = first.end + dots[0].length;
  if (src[at] !== '"' && src[at] !== "'") fail('expected a string after ".."', at);
  const last = readString(src, at, fail);
  const [lo, hi] = [first, last].map((s) => {
    if (s.ignoreCase || [...s.text].length !== 1) {
      fail('a range ("a".."z") takes two strings of one character each, without flags', open);
    }
    return s.text.codePointAt(0)!;
  });
  if (hi < lo) fail(`the range ${src.slice(open, last.end)} is out of order`, open);
  return { expr: { t: "chars", ranges: [[lo, hi]] }, end: last.end };
}

/**
 * The string literal (`"…"` or `'…'`, then an optional `i`) at `open`, escapes as Lark's `eval_escaping` reads
 * them: `\\ \" \' \n \t \r \f \xHH \uHHHH \UHHHHHHHH`; another `\c` stays as written, backslash and all.
 * @param src the grammar text
 * @param open the offset of the opening quote
 * @param fail throws the caller's error at an offset of `src`
 * @returns the text, whether the `i` flag follows, and the offset after the literal
 */
function readString(
  src: string,
  open: number,
  fail: (detail: string, at: number) => never,
): { text: string; ignoreCase: boolean; end: number } {
  const quoteMark = src[open];
  let text = "";
  let i = open + 1;
  for (;;) {
    const at = i;
    const c = src[at];
    if (c === undefined || c === "\n" || c === "\r") fail("the string is not closed", open);
    if (c === quoteMark) break;
    if (c !== "\\") {
      const cp = src.codePointAt(at)!;
      text += String.fromCodePoint(cp);
      i += cp > 0xffff ? 2 : 1;
      continue;
    }
    const e = src[at + 1];
    i += 2;
    const digits = HEX_DIGITS.get(e);
    if (e === "\\" || e === '"' || e === "'") text += e;
    else if (CONTROL.has(e)) text += String.fromCharCode(CONTROL.get(e)!);
    else if (digits) {
      const hex = src.slice(i, i + digits);
      const cp = /^[0-9a-fA-F]+$/.test(hex) && hex.length === digits ? parseInt(hex, 16) : -1;
      if (cp < 0) fail(`expected ${digits} hex digits after "\\${e}"`, at);
      if (cp > MAX_CODE_POINT || (cp >= 0xd800 && cp <= 0xdfff)) {
        fail(`"\\${e}${hex}" is not a Unicode scalar value`, at);
      }
      i += digits;
      text += String.fromCodePoint(cp);
    } else if (e === undefined || e === "\n" || e === "\r") fail("the string is not closed", open);
    else text += "\\" + e;
  }
  i++;
  const ignoreCase = src[i] === "i" && !/[_a-zA-Z0-9]/.test(src[i + 1] ?? "");
  return { text, ignoreCase, end: ignoreCase ? i + 1 : i };
}

/** The characters that have other cases, sorted, and each one's class: those of its key (upper then lower). */
interface CaseClasses {
  sorted: number[];
  classes: Map<number, number[]>;
}

let caseTable: CaseClasses | null = null;

/**
 * The case classes of Unicode (built once, on the first case-insensitive literal: ~30 ms): characters are
 * equal when their upper case's lower case is, so "k", "K" and the Kelvin sign are one class, as in Python.
 */
function caseClasses(): CaseClasses {
  if (caseTable) return caseTable;
  const units: number[] = [];
  for (let cp = 0; cp <= 0x1ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    if (cp < 0x10000) units.push(cp);
    else units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
  }
  const all = new TextDecoder("utf-16le").decode(new Uint16Array(units));
  const byKey = new Map<number, number[]>();
  for (const m of all.matchAll(/\p{Changes_When_Casemapped}/gu)) {
    const cp = m[0].codePointAt(0)!;
    const upper = single(m[0].toUpperCase()) ?? cp;
    const key = single(String.fromCodePoint(upper).toLowerCase()) ?? upper;
    for (const c of [key, cp]) {
      const members = byKey.get(key) ?? [];
      if (!members.includes(c)) members.push(c);
      byKey.set(key, members);
    }
  }
  const classes = new Map<number, number[]>();
  for (const members of byKey.values()) {
    if (members.length > 1) { for (const c of members) classes.set(c, members); }
  }
  caseTable = { sorted: [...classes.keys()].sort((a, b) => a - b), classes };
  return caseTable;
}

/** The code point of a one-character string, else null. */
function single(s: string): number | null {
  const cp = s.codePointAt(0)!;
  return s.length === (cp > 0xffff ? 2 : 1) ? cp : null;
}

function lowerBound(sorted: number[], x: number): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
