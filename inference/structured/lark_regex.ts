/**
 * The regular expressions of Lark terminals (`/…/flags`, Python's `re` syntax) as GBNF expressions
 * (gbnf_syntax.ts), so that a terminal's regex joins the grammar's regular parts (one DFA, gbnf_regular.ts)
 * like any other terminal.
 *
 * Supported: literals, `.` (any character but a newline; with the `s` flag a newline too), classes `[…]` and
 * `[^…]` over any code points, `\d \w \s` and their negations (ASCII, as in structured output's `regex`),
 * the escapes `\n \t \r \f \v \a \0`, `\xHH`, `\uHHHH`, `\UHHHHHHHH` and escaped punctuation, groups `( )`,
 * `(?: )` and `(?P<name> )`, comments `(?#…)`, `|`, and `* + ? {m} {m,} {,n} {m,n}`, lazy or possessive
 * alike (only the language matters: the text the regex matches whole). Flags: `i` (case-insensitive, by
 * Unicode's case classes: lark_literals.ts), `s`, `x` (verbose), and `m` and `u`, which change nothing here
 * (no anchors, and Python 3's patterns are Unicode already). Anything
 * else (anchors, lookaround, backreferences, inline flags, `\b`, the `l` flag) is an error naming it.
 */
import { type GbnfExpr, MAX_REPEAT } from "./gbnf_syntax.ts";
import { charExpr, complement, foldCase, normalize, type Ranges, seqOf } from "./lark_literals.ts";

const MAX_CODE_POINT = 0x10ffff;
/** Deepest nesting of a regex's groups. */
const MAX_GROUPS = 64;
const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];
const SPACE: Ranges = [[0x09, 0x0d], [0x20, 0x20]];
const REGEX_CONTROL = new Map(Object.entries({ n: 10, t: 9, r: 13, f: 12, v: 11, a: 7 }));
const HEX_DIGITS = new Map(Object.entries({ x: 2, u: 4, U: 8 }));

/** How a regex reads (its flags after the closing `/`). */
interface RegexFlags {
  ignoreCase: boolean;
  dotAll: boolean;
  verbose: boolean;
}

/** Reports a problem at an offset into the regex's text (the caller adds where the text starts). */
type RegexFail = (detail: string, offset: number) => never;

/**
 * The regex literal `/…/flags` at `open` (Lark's: `\/` is a slash; newlines only with the flag `x`).
 * @param src the grammar text
 * @param open the offset of the opening slash
 * @param fail throws the caller's error at an offset of `src`
 * @returns its expression, matched whole, and the offset after the literal
 */
export function regexLiteral(
  src: string,
  open: number,
  fail: (detail: string, at: number) => never,
): { expr: GbnfExpr; end: number } {
  let i = open + 1;
  while (src[i] !== "/") {
    if (i >= src.length) fail("the regex is not closed", open);
    i += src[i] === "\\" ? 2 : 1;
  }
  const body = src.slice(open + 1, i++);
  const flags = /^[imslux]*/.exec(src.slice(i, i + 12))![0];
  if (flags.includes("l")) fail('the regex flag "l" (locale) is not supported', open);
  if (/[\r\n]/.test(body) && !flags.includes("x")) {
    fail("a regex spans lines only with the x (verbose) flag", open);
  }
  const expr = regexExpr(
    body,
    { ignoreCase: flags.includes("i"), dotAll: flags.includes("s"), verbose: flags.includes("x") },
    (detail, offset) => fail(`in the regex: ${detail}`, open + 1 + offset),
  );
  if (expr.t === "text" && expr.text === "") fail("the regex matches only empty text", open);
  return { expr, end: i + flags.length };
}

/**
 * The expression of a regex, matched whole.
 * @param body the text between the slashes
 * @param flags its flags
 * @param fail throws the caller's error at an offset into `body`
 * @returns the expression
 */
function regexExpr(body: string, flags: RegexFlags, fail: RegexFail): GbnfExpr {
  return new RegexParser(body, flags, fail).parse();
}

class RegexParser {
  #src: string;
  #flags: RegexFlags;
  #fail: RegexFail;
  #i = 0;
  #groups = 0;

  constructor(src: string, flags: RegexFlags, fail: RegexFail) {
    this.#src = src;
    this.#flags = flags;
    this.#fail = fail;
  }

  parse(): GbnfExpr {
    const e = this.#alternation();
    if (this.#i < this.#src.length) this.#fail('")" closes no "("', this.#i);
    return e;
  }

  /** Skips whitespace and `#` comments of a verbose regex (outside classes). */
  #blank(): void {
    if (!this.#flags.verbose) return;
    for (const src = this.#src; this.#i < src.length;) {
      if (/\s/.test(src[this.#i])) this.#i++;
      else if (src[this.#i] === "#") { while (this.#i < src.length && src[this.#i] !== "\n") this.#i++; }
      else return;
    }
  }

  #alternation(): GbnfExpr {
    const options = [this.#concat()];
    while (this.#src[this.#i] === "|") {
      this.#i++;
      options.push(this.#concat());
    }
    return options.length === 1 ? options[0] : { t: "alt", options };
  }

  #concat(): GbnfExpr {
    const items: GbnfExpr[] = [];
    for (this.#blank(); this.#i < this.#src.length && !"|)".includes(this.#src[this.#i]); this.#blank()) {
      items.push(this.#quantified());
    }
    return seqOf(items);
  }

  #quantified(): GbnfExpr {
    const item = this.#atom();
    this.#blank();
    const at = this.#i;
    const bounds = this.#quantifier();
    if (!bounds) return item;
    if ("?+".includes(this.#src[this.#i] ?? "x")) this.#i++; // lazy or possessive: the same language
    this.#blank();
    if (this.#quantifier()) this.#fail("a repetition of a repetition (put the first in a group)", at);
    const [min, max] = bounds;
    return max === 0 ? { t: "text", text: "" } : { t: "rep", item, min, max, at };
  }

  /** The bounds of a quantifier at the cursor (consumed), or null. */
  #quantifier(): [number, number] | null {
    const c = this.#src[this.#i];
    if (c === "*" || c === "+" || c === "?") {
      this.#i++;
      return c === "*" ? [0, Infinity] : c === "+" ? [1, Infinity] : [0, 1];
    }
    // Python reads "{" that starts no valid count as itself.
    const m = c === "{" ? /^\{(\d*)(,(\d*))?\}/.exec(this.#src.slice(this.#i, this.#i + 40)) : null;
    if (!m || (m[1] === "" && m[2] === undefined)) return null;
    const at = this.#i;
    this.#i += m[0].length;
    const min = m[1] === "" ? 0 : Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
    if (min > MAX_REPEAT || (max > MAX_REPEAT && max !== Infinity)) {
      this.#fail(`a repetition count over ${MAX_REPEAT}`, at);
    }
    if (max < min) this.#fail(`the repetition ${m[0]} has its maximum below its minimum`, at);
    return [min, max];
  }

  #atom(): GbnfExpr {
    const at = this.#i;
    const c = this.#src[at];
    if (c === "(") return this.#group();
    if (c === "[") return this.#class();
    if (c === ".") {
      this.#i++;
      return { t: "chars", ranges: this.#flags.dotAll ? [[0, MAX_CODE_POINT]] : complement([[10, 10]]) };
    }
    if (c === "^" || c === "$") {
      this.#fail(`the anchor "${c}" is not supported (a terminal matches whole)`, at);
    }
    if (c === "*" || c === "+" || c === "?" || (c === "{" && this.#quantifier())) {
      this.#fail(`"${c}" has nothing to repeat`, at);
    }
    if (c === "\\") {
      const { ranges, fold } = this.#escape(false);
      return fold && ranges.length === 1 && ranges[0][0] === ranges[0][1]
        ? charExpr(ranges[0][0], this.#flags.ignoreCase)
        : { t: "chars", ranges };
    }
    const cp = this.#src.codePointAt(at)!;
    this.#i += cp > 0xffff ? 2 : 1;
    return charExpr(cp, this.#flags.ignoreCase);
  }

  #group(): GbnfExpr {
    const open = this.#i++;
    const src = this.#src;
    if (src[this.#i] === "?") {
      const rest = src.slice(this.#i, this.#i + 4);
      if (rest.startsWith("?:")) this.#i += 2;
      else if (rest.startsWith("?P<")) {
        const close = src.indexOf(">", this.#i);
        if (close < 0) this.#fail("the group name is not closed", open);
        this.#i = close + 1;
      } else if (rest.startsWith("?#")) {
        const close = src.indexOf(")", this.#i);
        if (close < 0) this.#fail('"(" is not closed', open);
        this.#i = close + 1;
        return { t: "text", text: "" };
      } else if (/^\?(=|!|<=|<!)/.test(rest)) {
        this.#fail(`lookaround "(${/^\?<?[=!]/.exec(rest)![0]}…)" is not supported`, open);
      } else if (rest.startsWith("?P=")) this.#fail("backreferences are not supported", open);
      else if (/^\?[aiLmsux-]/.test(rest)) {
        this.#fail("inline flags (?…) are not supported: put the flags after the closing /", open);
      } else this.#fail(`the group "(${rest.slice(0, 2)}" is not supported`, open);
    }
    if (++this.#groups > MAX_GROUPS) this.#fail(`groups nest over ${MAX_GROUPS} deep`, open);
    const inner = this.#alternation();
    if (src[this.#i] !== ")") this.#fail('"(" is not closed', open);
    this.#i++;
    this.#groups--;
    return inner;
  }

  /** `[…]` or `[^…]`: the listed characters folded with `i` before negating, as Python does. */
  #class(): GbnfExpr {
    const open = this.#i++;
    const src = this.#src;
    const negate = src[this.#i] === "^";
    if (negate) this.#i++;
    const listed: Ranges = [];
    const escapes: Ranges = []; // \d \w \s and their negations: not folded
    for (let first = true; src[this.#i] !== "]" || first; first = false) {
      if (this.#i >= src.length) this.#fail("the character class is not closed", open);
      const at = this.#i;
      const lo = this.#classChar();
      if (lo.length !== 1 || lo[0][0] !== lo[0][1]) {
        escapes.push(...lo);
        if (src[this.#i] === "-" && src[this.#i + 1] !== "]") {
          this.#fail("a class escape cannot bound a range", at);
        }
        continue;
      }
      let hi = lo[0][0];
      if (src[this.#i] === "-" && src[this.#i + 1] !== "]" && this.#i + 1 < src.length) {
        this.#i++;
        const end = this.#classChar();
        if (end.length !== 1 || end[0][0] !== end[0][1]) {
          this.#fail("a class escape cannot bound a range", at);
        }
        hi = end[0][0];
        if (hi < lo[0][0]) {
          this.#fail(`the range ${JSON.stringify(src.slice(at, this.#i))} is out of order`, at);
        }
      }
      listed.push([lo[0][0], hi]);
    }
    this.#i++;
    const chars = normalize([...(this.#flags.ignoreCase ? foldCase(listed) : listed), ...escapes]);
    const ranges = negate ? complement(chars) : chars;
    if (ranges.length === 0) this.#fail("the character class matches no character", open);
    return { t: "chars", ranges };
  }

  /** One item of a class: a character (one range of one code point) or an escape's ranges. */
  #classChar(): Ranges {
    if (this.#src[this.#i] === "\\") return this.#escape(true).ranges;
    const cp = this.#src.codePointAt(this.#i)!;
    this.#i += cp > 0xffff ? 2 : 1;
    return [[cp, cp]];
  }

  /** The escape at the cursor: its characters, and whether `i` folds them (not \d \w \s and negations). */
  #escape(inClass: boolean): { ranges: Ranges; fold: boolean } {
    const at = this.#i;
    const e = this.#src[at + 1];
    if (e === undefined) this.#fail("the regex ends inside an escape", at);
    this.#i += 2;
    const one = (cp: number) => ({ ranges: [[cp, cp]] as Ranges, fold: true });
    const classes: Record<string, Ranges> = { d: DIGIT, w: WORD, s: SPACE };
    if (e in classes) return { ranges: classes[e], fold: false };
    if (e.toLowerCase() in classes) return { ranges: complement(classes[e.toLowerCase()]), fold: false };
    if (REGEX_CONTROL.has(e)) return one(REGEX_CONTROL.get(e)!);
    if (e === "b" && inClass) return one(8);
    const digits = HEX_DIGITS.get(e);
    if (digits) {
      const hex = this.#src.slice(this.#i, this.#i + digits);
      if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex)) {
        this.#fail(`expected ${digits} hex digits after "\\${e}"`, at);
      }
      this.#i += digits;
      const cp = parseInt(hex, 16);
      if (cp > MAX_CODE_POINT) this.#fail(`"\\${e}${hex}" is not a Unicode code point`, at);
      return one(cp);
    }
    if (e === "0") {
      const oct = /^[0-7]{0,2}/.exec(this.#src.slice(this.#i, this.#i + 2))![0];
      this.#i += oct.length;
      return one(parseInt("0" + oct, 8));
    }
    if (/[1-9]/.test(e)) this.#fail(`backreferences ("\\${e}") are not supported`, at);
    if ("bBAZG".includes(e)) {
      this.#fail(`the anchor "\\${e}" is not supported (a terminal matches whole)`, at);
    }
    if (/[a-zA-Z]/.test(e)) this.#fail(`unknown escape "\\${e}"`, at);
    const cp = this.#src.codePointAt(at + 1)!;
    this.#i = at + 1 + (cp > 0xffff ? 2 : 1);
    return one(cp);
  }
}
