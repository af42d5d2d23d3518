/**
 * GBNF's syntax, llama.cpp's grammar format
 * (https://github.com/ggml-org/llama.cpp/blob/master/grammars/README.md), parsed as `llama_grammar_parser`
 * in src/llama-grammar.cpp does: the text to rules of expressions, with the position of the first problem.
 * gbnf.ts checks the rules and compiles them.
 */

/** Most items (literals, classes, references, groups, repetitions) a grammar may have. */
export const MAX_ITEMS = 20_000;
/** Largest repetition count (llama.cpp's MAX_REPETITION_THRESHOLD). */
export const MAX_REPEAT = 2000;
/** Deepest nesting of parentheses. */
const MAX_NESTING = 64;
/** Deepest nesting of expressions (groups, repetitions of repetitions): the compiler recurses along it. */
const MAX_DEPTH = 256;
const MAX_CODE_POINT = 0x10ffff;

/** A grammar the parser cannot take; `line` and `column` (1-based, in characters) say where. */
export class GbnfError extends Error {
  readonly line: number;
  readonly column: number;

  constructor(detail: string, line: number, column: number) {
    super(`Cannot parse the grammar at line ${line}, column ${column}: ${detail}`);
    this.line = line;
    this.column = column;
  }
}

/** A parsed expression; `at` is a source offset, for errors. */
export type GbnfExpr =
  | { t: "text"; text: string }
  /** one character of sorted, disjoint code-point ranges (negation and `.` already resolved) */
  | { t: "chars"; ranges: [lo: number, hi: number][] }
  | { t: "ref"; name: string; at: number }
  | { t: "seq"; items: GbnfExpr[] }
  | { t: "alt"; options: GbnfExpr[] }
  | { t: "rep"; item: GbnfExpr; min: number; max: number; at: number };

/** A rule: `name ::= body`, defined at offset `at`. */
export interface GbnfRule {
  name: string;
  body: GbnfExpr;
  at: number;
  /** whether it can match empty text */
  empty: boolean;
}

const WORD = /[a-zA-Z0-9_-]/;
const RULE_START = /[a-zA-Z0-9_-]+[ \t]*::=/y;
const ESCAPES = new Map(Object.entries({ t: 9, r: 13, n: 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45 }));
const HEX_DIGITS = new Map(Object.entries({ x: 2, u: 4, U: 8 }));

/** The parser: `parse()` reads the rules; `refs` lists every rule reference for the checks. */
export class GbnfParser {
  readonly rules = new Map<string, GbnfRule>();
  readonly refs: (GbnfExpr & { t: "ref" })[] = [];
  #src: string;
  #i = 0;
  #items = 0;
  #groups = 0;
  #depths = new WeakMap<GbnfExpr, number>();

  constructor(src: string) {
    this.#src = src;
  }

  /** @returns the rules by name, unchecked (gbnf.ts checks them) */
  parse(): Map<string, GbnfRule> {
    this.#gap(true);
    while (this.#i < this.#src.length) this.#rule();
    return this.rules;
  }

  /** Throws the GbnfError of `detail` at source offset `at` (the cursor by default). */
  fail(detail: string, at = this.#i): never {
    throw new GbnfError(detail, ...lineColumn(this.#src, at));
  }

  #rule(): void {
    const at = this.#i;
    if (!WORD.test(this.#src[at])) this.fail(`expected a rule name, got ${quote(this.#src[at])}`);
    const name = this.#name();
    this.#gap(false);
    if (!this.#src.startsWith("::=", this.#i)) this.fail(`expected "::=" after the rule name "${name}"`);
    this.#i += 3;
    this.#gap(false);
    const body = this.#alternates(false);
    const c = this.#src[this.#i];
    if (c === ")") this.fail('")" closes no "("');
    if (c !== undefined && c !== "\n" && c !== "\r") this.fail(`unexpected ${quote(c)}`);
    const first = this.rules.get(name);
    if (first) {
      this.fail(`rule "${name}" is defined twice (first at line ${lineOf(this.#src, first.at)})`, at);
    }
    this.rules.set(name, { name, body, at, empty: false });
    this.#gap(true);
  }

  /**
   * Skips blanks and `#` comments; newlines too inside parentheses (`nested`), and at the top level where the
   * next line continues the rule (it does not start `name ::=`; llama.cpp itself ends a rule at its line).
   */
  #gap(nested: boolean): void {
    const src = this.#src;
    const blank = (j: number): number => {
      for (;;) {
        const c = src[j];
        if (c === " " || c === "\t" || (nested && (c === "\n" || c === "\r"))) j++;
        else if (c === "#") { while (j < src.length && src[j] !== "\n" && src[j] !== "\r") j++; }
        else return j;
      }
    };
    this.#i = blank(this.#i);
    if (nested || (src[this.#i] !== "\n" && src[this.#i] !== "\r")) return;
    let j = this.#i;
    while (/[ \t\r\n]/.test(src[j] ?? "") || src[j] === "#") {
      j = src[j] === "#" ? blank(j) : j + 1;
    }
    RULE_START.lastIndex = j;
    if (j < src.length && !RULE_START.test(src)) this.#i = j;
  }

  /** `e`, its nesting depth checked. */
  #made<T extends GbnfExpr>(e: T, at: number): T {
    const kids = e.t === "seq" ? e.items : e.t === "alt" ? e.options : e.t === "rep" ? [e.item] : [];
    let depth = 1;
    for (const k of kids) depth = Math.max(depth, 1 + (this.#depths.get(k) ?? 1));
    if (depth > MAX_DEPTH) this.fail(`the grammar nests over ${MAX_DEPTH} levels deep`, at);
    this.#depths.set(e, depth);
    return e;
  }

  #alternates(nested: boolean): GbnfExpr {
    const at = this.#i;
    const options = [this.#sequence(nested)];
    while (this.#src[this.#i] === "|") {
      this.#i++;
      this.#gap(nested);
      options.push(this.#sequence(nested));
    }
    return options.length === 1 ? options[0] : this.#made({ t: "alt", options }, at);
  }

  #sequence(nested: boolean): GbnfExpr {
    const start = this.#i;
    const items: GbnfExpr[] = [];
    for (;;) {
      const at = this.#i;
      const c = this.#src[at];
      if (c === undefined) break;
      if ("*+?{".includes(c)) {
        const last = items.pop();
        if (!last) this.fail(`"${c}" has nothing to repeat`);
        items.push(this.#made(this.#repeat(last, nested), at));
      } else if (c === '"') items.push(this.#literal());
      else if (c === "[") items.push(this.#class());
      else if (c === ".") {
        this.#i++;
        items.push({ t: "chars", ranges: [[0, MAX_CODE_POINT]] });
      } else if (c === "(") items.push(this.#group());
      else if (WORD.test(c)) {
        const ref = { t: "ref" as const, name: this.#name(), at };
        this.refs.push(ref);
        items.push(ref);
      } else if (c === "<" || c === "!") this.fail("token references (<…>, !<…>) are not supported");
      else break;
      if (++this.#items > MAX_ITEMS) this.fail(`the grammar is too large: over ${MAX_ITEMS} items`, at);
      this.#gap(nested);
    }
    return items.length === 1 ? items[0] : this.#made({ t: "seq", items }, start);
  }

  #group(): GbnfExpr {
    const open = this.#i++;
    if (++this.#groups > MAX_NESTING) this.fail(`parentheses nest over ${MAX_NESTING} deep`, open);
    this.#gap(true);
    const inner = this.#alternates(true);
    const c = this.#src[this.#i];
    if (c === undefined) this.fail('"(" is not closed', open);
    if (c !== ")") this.fail(`unexpected ${quote(c)}: expected ")" or an item`);
    this.#i++;
    this.#groups--;
    return inner;
  }

  #name(): string {
    const start = this.#i;
    while (WORD.test(this.#src[this.#i] ?? "")) this.#i++;
    return this.#src.slice(start, this.#i);
  }

  #literal(): GbnfExpr {
    const open = this.#i++;
    let text = "";
    while (this.#src[this.#i] !== '"') {
      if (this.#i >= this.#src.length) this.fail("the string is not closed", open);
      text += String.fromCodePoint(this.#char());
    }
    this.#i++;
    return { t: "text", text };
  }

  /** `[…]` or `[^…]`: ranges `a-z` and single characters, escaped as in strings (plus `\-`). */
  #class(): GbnfExpr {
    const open = this.#i++;
    const negate = this.#src[this.#i] === "^";
    if (negate) this.#i++;
    const ranges: [number, number][] = [];
    while (this.#src[this.#i] !== "]") {
      if (this.#i >= this.#src.length) this.fail("the character class is not closed", open);
      const at = this.#i;
      const lo = this.#char();
      let hi = lo;
      if (this.#src[this.#i] === "-" && this.#src[this.#i + 1] !== "]" && this.#i + 1 < this.#src.length) {
        this.#i++;
        hi = this.#char();
        if (hi < lo) this.fail(`the range ${quote(this.#src.slice(at, this.#i))} is out of order`, at);
      }
      ranges.push([lo, hi]);
    }
    this.#i++;
    if (ranges.length === 0) this.fail("the character class is empty", open);
    // Sorted and merged: the complement's complement.
    return { t: "chars", ranges: negate ? complement(ranges) : complement(complement(ranges)) };
  }

  /** One character of a string or class: its code point. */
  #char(): number {
    const at = this.#i;
    let cp: number;
    if (this.#src[at] !== "\\") {
      cp = this.#src.codePointAt(at)!;
      this.#i += cp > 0xffff ? 2 : 1;
    } else {
      const e = this.#src[at + 1];
      const digits = HEX_DIGITS.get(e);
      if (digits) {
        const hex = this.#src.slice(at + 2, at + 2 + digits);
        if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex)) {
          this.fail(`expected ${digits} hex digits after "\\${e}"`, at);
        }
        cp = parseInt(hex, 16);
        this.#i += 2 + digits;
      } else if (ESCAPES.has(e)) {
        cp = ESCAPES.get(e)!;
        this.#i += 2;
      } else this.fail(e === undefined ? "the grammar ends inside an escape" : `unknown escape "\\${e}"`, at);
    }
    if (cp > MAX_CODE_POINT || (cp >= 0xd800 && cp <= 0xdfff)) {
      this.fail(`${quote(this.#src.slice(at, this.#i))} is not a Unicode scalar value`, at);
    }
    return cp;
  }

  /** The repetition at the cursor (`*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`) of `item`. */
  #repeat(item: GbnfExpr, nested: boolean): GbnfExpr {
    const at = this.#i;
    const op = this.#src[this.#i++];
    if (op !== "{") {
      const [min, max] = op === "*" ? [0, Infinity] : op === "+" ? [1, Infinity] : [0, 1];
      return { t: "rep", item, min, max, at };
    }
    const int = (): number => {
      const m = /^[0-9]+/.exec(this.#src.slice(this.#i, this.#i + 12));
      if (!m) this.fail(`expected a number, got ${quote(this.#src[this.#i])}`);
      this.#i += m[0].length;
      this.#gap(nested);
      return Number(m[0]);
    };
    this.#gap(nested);
    const min = int();
    let max = min;
    if (this.#src[this.#i] === ",") {
      this.#i++;
      this.#gap(nested);
      max = /[0-9]/.test(this.#src[this.#i] ?? "") ? int() : Infinity;
    }
    if (this.#src[this.#i] !== "}") this.fail(`expected "}" or ",", got ${quote(this.#src[this.#i])}`);
    this.#i++;
    if (min > MAX_REPEAT || (max > MAX_REPEAT && max !== Infinity)) {
      this.fail(`a repetition count over ${MAX_REPEAT}`, at);
    }
    if (max < min) this.fail(`the repetition {${min},${max}} has its maximum below its minimum`, at);
    return { t: "rep", item, min, max, at };
  }
}

function quote(c: string | undefined): string {
  return c === undefined ? "the end of the grammar" : JSON.stringify(c);
}

function lineOf(src: string, at: number): number {
  return src.slice(0, at).split("\n").length;
}

/** The code points not in `ranges`, as sorted disjoint ranges. */
function complement(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  let next = 0;
  for (const [lo, hi] of [...ranges].sort((a, b) => a[0] - b[0])) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

/** Whether an expression can match empty text, given which references can. */
export function nullable(e: GbnfExpr, ref: (name: string) => boolean): boolean {
  switch (e.t) {
    case "text":
      return e.text === "";
    case "chars":
      return false;
    case "ref":
      return ref(e.name);
    case "seq":
      return e.items.every((i) => nullable(i, ref));
    case "alt":
      return e.options.some((o) => nullable(o, ref));
    case "rep":
      return e.min === 0 || nullable(e.item, ref);
  }
}

/** The references in an expression. */
export function refsIn(e: GbnfExpr): (GbnfExpr & { t: "ref" })[] {
  switch (e.t) {
    case "ref":
      return [e];
    case "seq":
      return e.items.flatMap(refsIn);
    case "alt":
      return e.options.flatMap(refsIn);
    case "rep":
      return refsIn(e.item);
    default:
      return [];
  }
}

/** The 1-based line and column (in characters) of offset `at` of `src`, as grammar errors report them. */
export function lineColumn(src: string, at: number): [line: number, column: number] {
  const before = src.slice(0, at);
  return [before.split("\n").length, [...before.slice(before.lastIndexOf("\n") + 1)].length + 1];
}
