/**
 * The regular-expression syntax of structured output (vLLM's `structured_outputs.regex` / `guided_regex`)
 * parsed straight into a byte-level NFA (regex_nfa.ts) by Thompson's construction over the pattern's UTF-8;
 * regex.ts makes its DFA. Apart from the DFA because the syntax is the larger half and nothing else needs it.
 *
 * The whole output must match (as with `^…$`; anchors at the ends are accepted and ignored). Supported:
 * literals (any Unicode), `.` (any character but a newline), classes `[a-z_]`, `[^…]` (ranges of ASCII; other
 * characters listed one by one), `\d \w \s \D \W \S`, escapes of punctuation and `\n \t \r`, groups `( )` and
 * `(?: )`, `|`, and `* + ? {n} {n,} {n,m}` (greedy and lazy alike: only the language matters). Anything else
 * (backreferences, lookaround, other anchors, named groups, Unicode classes) is an error naming it.
 */
import { anyChar, type ByteSeq, bytesOf, type Nfa, RegexError } from "./regex_nfa.ts";

/** Most NFA states a pattern may compile to (bounds repetition counts and the work per byte). */
const MAX_STATES = 20_000;

/** A fragment under construction: its entry and exit states. */
interface Frag {
  in: number;
  out: number;
}

/** The parser of one pattern: `compile()` returns its NFA. */
export class Parser {
  #src: string;
  #i = 0;
  nfa: Nfa = { edges: [], eps: [], start: 0, accept: 0 };

  constructor(src: string) {
    this.#src = src;
  }

  compile(): Nfa {
    let body = this.#src;
    if (body.startsWith("^")) body = body.slice(1);
    if (body.endsWith("$") && !body.endsWith("\\$")) body = body.slice(0, -1);
    this.#src = body;
    const f = this.#alternation();
    if (this.#i < this.#src.length) {
      throw new RegexError(`Cannot compile the regex: unexpected "${this.#src[this.#i]}"`);
    }
    this.nfa.start = f.in;
    this.nfa.accept = f.out;
    return this.nfa;
  }

  #state(): number {
    if (this.nfa.edges.length >= MAX_STATES) {
      throw new RegexError(`Cannot compile the regex: more than ${MAX_STATES} states`);
    }
    this.nfa.edges.push([]);
    this.nfa.eps.push([]);
    return this.nfa.edges.length - 1;
  }

  #seqFrag(seqs: ByteSeq[]): Frag {
    const start = this.#state();
    const end = this.#state();
    for (const seq of seqs) {
      let at = start;
      seq.forEach(([lo, hi], k) => {
        const to = k === seq.length - 1 ? end : this.#state();
        this.nfa.edges[at].push([lo, hi, to]);
        at = to;
      });
    }
    return { in: start, out: end };
  }

  #alternation(): Frag {
    const branches = [this.#concat()];
    while (this.#src[this.#i] === "|") {
      this.#i++;
      branches.push(this.#concat());
    }
    if (branches.length === 1) return branches[0];
    const f = { in: this.#state(), out: this.#state() };
    for (const b of branches) {
      this.nfa.eps[f.in].push(b.in);
      this.nfa.eps[b.out].push(f.out);
    }
    return f;
  }

  #concat(): Frag {
    const s = this.#state();
    let f: Frag = { in: s, out: s };
    while (this.#i < this.#src.length && this.#src[this.#i] !== "|" && this.#src[this.#i] !== ")") {
      const start = this.#i;
      const atom = this.#quantified(start);
      this.nfa.eps[f.out].push(atom.in);
      f = { in: f.in, out: atom.out };
    }
    return f;
  }

  /** An atom and its quantifier; the atom is re-parsed from `start` for each copy a count needs. */
  #quantified(start: number): Frag {
    const atom = this.#atom();
    const end = this.#i;
    const q = this.#src[this.#i];
    let min = 1;
    let max = 1;
    if (q === "*" || q === "+" || q === "?") {
      this.#i++;
      [min, max] = q === "*" ? [0, Infinity] : q === "+" ? [1, Infinity] : [0, 1];
    } else if (q === "{" && /^\{\d+(,\d*)?\}/.test(this.#src.slice(this.#i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.#src.slice(this.#i))!;
      this.#i += m[0].length;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
      if (max < min) throw new RegexError(`Cannot compile the regex: {${min},${max}}`);
      if (min > 1000 || (Number.isFinite(max) && max > 1000)) {
        throw new RegexError("Cannot compile the regex: a repetition count over 1000");
      }
    } else return atom;
    if (this.#src[this.#i] === "?" || this.#src[this.#i] === "+") this.#i++; // lazy/possessive: same language
    const after = this.#i;
    const copy = () => {
      this.#i = start;
      const f = this.#atom();
      this.#i = end;
      return f;
    };
    const s = this.#state();
    let f: Frag = { in: s, out: s };
    const append = (a: Frag) => {
      this.nfa.eps[f.out].push(a.in);
      f = { in: f.in, out: a.out };
    };
    for (let k = 0; k < min; k++) append(k === 0 ? atom : copy());
    if (!Number.isFinite(max)) {
      const loop = min > 0 ? copy() : atom;
      const hub = this.#state();
      this.nfa.eps[f.out].push(hub);
      this.nfa.eps[hub].push(loop.in);
      this.nfa.eps[loop.out].push(hub);
      f = { in: f.in, out: hub };
    } else {
      for (let k = min; k < max; k++) {
        const opt = k === 0 && min === 0 ? atom : copy();
        const out = this.#state();
        this.nfa.eps[f.out].push(opt.in, out);
        this.nfa.eps[opt.out].push(out);
        f = { in: f.in, out };
      }
    }
    this.#i = after;
    return f;
  }

  #atom(): Frag {
    const c = this.#src[this.#i];
    if (c === "(") {
      this.#i++;
      if (this.#src[this.#i] === "?") {
        if (this.#src[this.#i + 1] !== ":") {
          throw new RegexError(`Unsupported regex syntax "(?${this.#src[this.#i + 1]}"`);
        }
        this.#i += 2;
      }
      const f = this.#alternation();
      if (this.#src[this.#i] !== ")") throw new RegexError("Cannot compile the regex: a group is not closed");
      this.#i++;
      return f;
    }
    if (c === "[") return this.#seqFrag(this.#classSeqs());
    if (c === ".") {
      this.#i++;
      return this.#seqFrag(anyChar((b) => b === 0x0a));
    }
    if (c === "\\") return this.#seqFrag(this.#escape(false));
    if (c === "*" || c === "+" || c === "?" || c === "{" || c === ")") {
      throw new RegexError(`Cannot compile the regex: "${c}" has nothing to repeat`);
    }
    if (c === "^" || c === "$") throw new RegexError(`Unsupported regex anchor "${c}" inside the pattern`);
    const cp = this.#src.codePointAt(this.#i)!;
    this.#i += cp > 0xffff ? 2 : 1;
    return this.#seqFrag([bytesOf(cp)]);
  }

  /** An escape at the cursor: its byte sequences (in a class, `\b` is a backspace). */
  #escape(inClass: boolean): ByteSeq[] {
    const e = this.#src[this.#i + 1];
    if (e === undefined) throw new RegexError("Cannot compile the regex: it ends with \\");
    this.#i += 2;
    const digit = (b: number) => b >= 0x30 && b <= 0x39;
    const word = (b: number) =>
      digit(b) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f;
    const space = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);
    const ascii = (keep: (b: number) => boolean): ByteSeq[] => {
      const out: ByteSeq[] = [];
      for (let b = 0; b < 0x80; b++) if (keep(b)) out.push([[b, b]]);
      return out;
    };
    switch (e) {
      case "d":
        return [[[0x30, 0x39]]];
      case "w":
        return ascii(word);
      case "s":
        return ascii(space);
      case "D":
        return anyChar(digit);
      case "W":
        return anyChar(word);
      case "S":
        return anyChar(space);
      case "n":
        return [[[0x0a, 0x0a]]];
      case "t":
        return [[[0x09, 0x09]]];
      case "r":
        return [[[0x0d, 0x0d]]];
      case "b":
        if (inClass) return [[[0x08, 0x08]]];
        throw new RegexError("Unsupported regex syntax \\b");
    }
    if (/[0-9a-zA-Z]/.test(e)) throw new RegexError(`Unsupported regex escape \\${e}`);
    return [bytesOf(e.codePointAt(0)!)];
  }

  /** A class `[…]` at the cursor: byte sequences of its characters. */
  #classSeqs(): ByteSeq[] {
    this.#i++;
    const negate = this.#src[this.#i] === "^";
    if (negate) this.#i++;
    const ascii = new Uint8Array(128);
    const other: ByteSeq[] = [];
    let first = true;
    while (this.#i < this.#src.length && (this.#src[this.#i] !== "]" || first)) {
      first = false;
      if (this.#src[this.#i] === "\\") {
        for (const seq of this.#escape(true)) {
          if (seq.length === 1) { for (let b = seq[0][0]; b <= seq[0][1]; b++) ascii[b] = 1; }
          else if (negate) throw new RegexError("Unsupported regex: a negated class with a non-ASCII escape");
          else other.push(seq);
        }
        continue;
      }
      const lo = this.#src.codePointAt(this.#i)!;
      this.#i += lo > 0xffff ? 2 : 1;
      let hi = lo;
      if (this.#src[this.#i] === "-" && this.#src[this.#i + 1] !== "]" && this.#i + 1 < this.#src.length) {
        hi = this.#src.codePointAt(this.#i + 1)!;
        this.#i += hi > 0xffff ? 3 : 2;
      }
      if (hi < lo) throw new RegexError("Cannot compile the regex: a class range out of order");
      if (hi < 0x80) { for (let b = lo; b <= hi; b++) ascii[b] = 1; }
      else if (lo !== hi) throw new RegexError("Unsupported regex: a class range of non-ASCII characters");
      else if (negate) throw new RegexError("Unsupported regex: a negated class with non-ASCII characters");
      else other.push(bytesOf(lo));
    }
    if (this.#src[this.#i] !== "]") throw new RegexError("Cannot compile the regex: a class is not closed");
    this.#i++;
    if (negate) return anyChar((b) => ascii[b] === 1);
    const out: ByteSeq[] = [];
    for (let b = 0; b < 0x80; b++) if (ascii[b]) out.push([[b, b]]);
    return [...out, ...other];
  }
}
