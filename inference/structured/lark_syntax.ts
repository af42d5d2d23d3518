/**
 * Lark's grammar syntax (https://lark-parser.readthedocs.io/en/latest/grammar.html), parsed as Lark's
 * `load_grammar.py` reads it, to definitions whose bodies are GBNF expressions (gbnf_syntax.ts): rules
 * (lower-case names), terminals (upper-case names), `%import` and `%ignore`, with the position of the first
 * problem. In a rule, each string, regex or range is an anonymous terminal (a reference to a definition named
 * by its source text), so lark.ts can put what `%ignore` skips between a rule's terminals; in a terminal they
 * are inline. lark.ts assembles the definitions into GBNF rules.
 */
import { GbnfError, type GbnfExpr, lineColumn, MAX_ITEMS, MAX_REPEAT } from "./gbnf_syntax.ts";
import { seqOf, stringOrRange } from "./lark_literals.ts";
import { regexLiteral } from "./lark_regex.ts";

/** Deepest nesting of parentheses and brackets. */
const MAX_NESTING = 64;
const NAME = /[_a-zA-Z][_a-zA-Z0-9]*/y;

/** A Lark grammar the parser cannot take; `line` and `column` (1-based, in characters) say where. */
export class LarkError extends GbnfError {
  constructor(detail: string, line: number, column: number) {
    super(detail, line, column);
    this.message = `Cannot parse the Lark grammar at line ${line}, column ${column}: ${detail}`;
  }
}

/** A rule or terminal: `name: body`, its name at offset `at`; `anonymous` for a rule's literal. */
export interface LarkDef {
  name: string;
  terminal: boolean;
  body: GbnfExpr;
  at: number;
  anonymous: boolean;
}

/** `%import common.name -> as` (or one name of `%import common (…)`), at offset `at`. */
export interface LarkImport {
  name: string;
  as: string;
  at: number;
}

/** Throws the LarkError of `detail` at offset `at` of `src`. */
export function larkFail(src: string, detail: string, at: number): never {
  throw new LarkError(detail, ...lineColumn(src, at));
}

/** The parser: `parse()` reads the definitions, imports and ignores, unchecked (lark.ts checks them). */
export class LarkParser {
  readonly defs: LarkDef[] = [];
  readonly imports: LarkImport[] = [];
  readonly ignores: { body: GbnfExpr; at: number }[] = [];
  #anonymous = new Map<string, LarkDef>();
  #src: string;
  #i = 0;
  #items = 0;
  #nesting = 0;
  #inRule = false;

  constructor(src: string) {
    this.#src = src;
  }

  parse(): this {
    for (this.#blank(true); this.#i < this.#src.length; this.#blank(true)) {
      if (this.#src[this.#i] === "%") this.#statement();
      else this.#definition();
      this.#blank(false);
      const c = this.#src[this.#i];
      if (c === ")" || c === "]") this.fail(`"${c}" closes no "${c === ")" ? "(" : "["}"`);
      if (c !== undefined && c !== "\n" && c !== "\r") this.fail(`unexpected ${quote(c)}`);
    }
    return this;
  }

  /** Throws the LarkError of `detail` at source offset `at` (the cursor by default). */
  fail(detail: string, at = this.#i): never {
    return larkFail(this.#src, detail, at);
  }

  /** Skips blanks, `//` and `#` comments and `\` line continuations; newlines too where `newlines`. */
  #blank(newlines: boolean): void {
    const src = this.#src;
    for (;;) {
      const c = src[this.#i];
      if (c === " " || c === "\t" || (newlines && (c === "\n" || c === "\r"))) this.#i++;
      else if (c === "#" || (c === "/" && src[this.#i + 1] === "/")) {
        while (this.#i < src.length && src[this.#i] !== "\n" && src[this.#i] !== "\r") this.#i++;
      } else if (c === "\\" && /^\\[ ]*\r?\n/.test(src.slice(this.#i, this.#i + 80))) {
        this.#i = src.indexOf("\n", this.#i) + 1;
      } else return;
    }
  }

  #name(): string {
    NAME.lastIndex = this.#i;
    const m = NAME.exec(this.#src);
    if (!m) this.fail(`expected a name, got ${quote(this.#src[this.#i])}`);
    this.#i += m[0].length;
    return m[0];
  }

  /** Whether a name is a terminal's (upper case) or a rule's (lower case). */
  #isTerminal(name: string, at: number): boolean {
    if (/^_?[A-Z][_A-Z0-9]*$/.test(name)) return true;
    if (/^_?[a-z][_a-z0-9]*$/.test(name)) return false;
    return this.fail(`"${name}" is neither a rule name (lower case) nor a terminal name (upper case)`, at);
  }

  /** `name: expansions`, `?name:` or `!name:` (tree shaping, which changes no text). */
  #definition(): void {
    const src = this.#src;
    const first = this.#i;
    while (src[this.#i] === "!" || src[this.#i] === "?") this.#i++;
    const modified = this.#i > first;
    const at = this.#i;
    if (!/[_a-zA-Z]/.test(src[at] ?? "")) {
      this.fail(`expected a rule, a terminal or a statement (%import, %ignore), got ${quote(src[at])}`);
    }
    const name = this.#name();
    const terminal = this.#isTerminal(name, at);
    if (terminal && modified) this.fail(`a terminal takes no "!" or "?" ("${name}")`, at - 1);
    if (src[this.#i] === "{") this.fail(`templates ("${name}{…}") are not supported`);
    this.#blank(false);
    if (src[this.#i] === ".") {
      this.fail(`priorities ("${name}.N") are not supported: they rank parses, and any parse will do here`);
    }
    if (src[this.#i] !== ":") {
      this.fail(`expected ":" after the ${terminal ? "terminal" : "rule"} name "${name}"`);
    }
    this.#i++;
    this.#blank(false);
    this.#inRule = !terminal;
    this.defs.push({ name, terminal, body: this.#alternates(false), at, anonymous: false });
  }

  /** `%ignore expansions`, `%import common.NAME [-> ALIAS]`, `%import common (A, B)`; others are refused. */
  #statement(): void {
    const at = this.#i;
    const word = /^%[a-z]*/.exec(this.#src.slice(at, at + 20))![0];
    this.#i += word.length;
    this.#blank(false);
    if (word === "%ignore") {
      this.#inRule = false;
      this.ignores.push({ body: this.#alternates(false), at });
    } else if (word === "%import") this.#import();
    else if (word === "%declare") {
      this.fail("%declare is not supported: declared terminals come from a custom lexer or postlexer", at);
    } else if (word === "%override" || word === "%extend") {
      this.fail(`${word} is not supported: only common.lark can be imported, and it has no rules`, at);
    } else this.fail(`unknown statement "${word}"`, at);
  }

  #import(): void {
    const at = this.#i;
    if (this.#src[at] === ".") {
      this.fail("relative imports are not supported: only common.lark can be imported");
    }
    const path = [this.#name()];
    while (this.#src[this.#i] === ".") {
      this.#i++;
      path.push(this.#name());
    }
    if (path[0] !== "common" || path.length > 2) {
      this.fail(`cannot import "${path.join(".")}": only common.lark can be imported (common.NAME)`, at);
    }
    this.#blank(false);
    if (path.length === 2) {
      let as = path[1];
      if (this.#src.startsWith("->", this.#i)) {
        this.#i += 2;
        this.#blank(false);
        as = this.#name();
      }
      this.imports.push({ name: path[1], as, at });
      return;
    }
    if (this.#src[this.#i] !== "(") {
      this.fail('expected "." and a name, or "(" and names, after "%import common"');
    }
    do {
      this.#i++;
      this.#blank(true);
      const nameAt = this.#i;
      const name = this.#name();
      this.imports.push({ name, as: name, at: nameAt });
      this.#blank(true);
    } while (this.#src[this.#i] === ",");
    if (this.#src[this.#i] !== ")") this.fail(`expected "," or ")", got ${quote(this.#src[this.#i])}`);
    this.#i++;
  }

  /** Alternatives: `a | b`, a line that starts with `|` continuing them; `-> alias` names a tree only. */
  #alternates(nested: boolean): GbnfExpr {
    const options = [this.#sequence(nested)];
    for (;;) {
      if (this.#src.startsWith("->", this.#i)) {
        this.#i += 2;
        this.#blank(nested);
        const at = this.#i;
        if (this.#isTerminal(this.#name(), at)) this.fail('expected a rule name after "->"', at);
        this.#blank(nested);
      }
      const save = this.#i;
      if (!nested) this.#blank(true);
      if (this.#src[this.#i] !== "|") {
        this.#i = save;
        break;
      }
      this.#i++;
      this.#blank(nested);
      options.push(this.#sequence(nested));
    }
    return options.length === 1 ? options[0] : { t: "alt", options };
  }

  #sequence(nested: boolean): GbnfExpr {
    const items: GbnfExpr[] = [];
    let repeated = false; // whether the last item has its repetition already
    for (;;) {
      const at = this.#i;
      const c = this.#src[at];
      if (c === undefined) break;
      if (c === "+" || c === "*" || c === "?" || c === "~") {
        const last = items.pop();
        if (!last) this.fail(`"${c}" has nothing to repeat`);
        if (repeated) this.fail(`"${c}" repeats a repetition (put it in parentheses)`);
        items.push(this.#repeat(last));
        repeated = true;
      } else {
        const item = this.#atom();
        if (!item) break;
        items.push(item);
        repeated = false;
        if (++this.#items > MAX_ITEMS) this.fail(`the grammar is too large: over ${MAX_ITEMS} items`, at);
      }
      this.#blank(nested);
    }
    return seqOf(items);
  }

  /** The repetition at the cursor (`+`, `*`, `?`, `~ n`, `~ n..m`) of `item`. */
  #repeat(item: GbnfExpr): GbnfExpr {
    const at = this.#i;
    const op = this.#src[this.#i++];
    if (op !== "~") {
      const [min, max] = op === "*" ? [0, Infinity] : op === "+" ? [1, Infinity] : [0, 1];
      return { t: "rep", item, min, max, at };
    }
    const int = (): number => {
      this.#blank(false);
      const m = /^[+-]?[0-9]+/.exec(this.#src.slice(this.#i, this.#i + 12));
      if (!m) this.fail(`expected a number, got ${quote(this.#src[this.#i])}`);
      this.#i += m[0].length;
      return Number(m[0]);
    };
    const min = int();
    let max = min;
    this.#blank(false);
    if (this.#src.startsWith("..", this.#i)) {
      this.#i += 2;
      max = int();
    }
    if (min < 0 || max < min) this.fail(`the repetition ~ ${min}..${max} is not a range of counts`, at);
    if (max > MAX_REPEAT) this.fail(`a repetition count over ${MAX_REPEAT}`, at);
    return { t: "rep", item, min, max, at };
  }

  /** An item: a name, string, range, regex, `( … )` or `[ … ]`; null where the sequence ends. */
  #atom(): GbnfExpr | null {
    const at = this.#i;
    const c = this.#src[at];
    if (c === "(" || c === "[") {
      this.#i++;
      if (++this.#nesting > MAX_NESTING) this.fail(`parentheses nest over ${MAX_NESTING} deep`, at);
      this.#blank(true);
      const inner = this.#alternates(true);
      const close = c === "(" ? ")" : "]";
      if (this.#src[this.#i] === undefined) this.fail(`"${c}" is not closed`, at);
      if (this.#src[this.#i] !== close) {
        this.fail(`unexpected ${quote(this.#src[this.#i])}: expected "${close}"`);
      }
      this.#i++;
      this.#nesting--;
      return c === "(" ? inner : { t: "rep", item: inner, min: 0, max: 1, at };
    }
    if (c === '"' || c === "'") return this.#literal();
    if (c === "/") {
      const { expr, end } = regexLiteral(this.#src, at, (detail, where) => this.fail(detail, where));
      this.#i = end;
      this.#items += end - at;
      return this.#token(at, expr);
    }
    if (!/[_a-zA-Z]/.test(c)) return null;
    const name = this.#name();
    this.#isTerminal(name, at);
    if (this.#src[this.#i] === "{") this.fail(`templates ("${name}{…}") are not supported`);
    return { t: "ref", name, at };
  }

  /** A string (`"…"`, `"…"i`) or a range of characters (`"a".."z"`). */
  #literal(): GbnfExpr {
    const at = this.#i;
    const { expr, end } = stringOrRange(this.#src, at, (detail, where) => this.fail(detail, where));
    this.#i = end;
    return this.#token(at, expr);
  }

  /** A literal in a rule: a reference to an anonymous terminal named by its source text; inline elsewhere. */
  #token(at: number, body: GbnfExpr): GbnfExpr {
    if (!this.#inRule) return body;
    const name = this.#src.slice(at, this.#i);
    if (!this.#anonymous.has(name)) {
      const def = { name, terminal: true, body, at, anonymous: true };
      this.#anonymous.set(name, def);
      this.defs.push(def);
    }
    return { t: "ref", name, at };
  }
}

function quote(c: string | undefined): string {
  return c === undefined ? "the end of the grammar" : JSON.stringify(c);
}
