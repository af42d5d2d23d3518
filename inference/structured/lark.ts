/**
 * Lark grammars (the EBNF of Python's lark parser, https://lark-parser.readthedocs.io/en/latest/grammar.html,
 * which vLLM takes in `structured_outputs.grammar` / `guided_grammar`) as GBNF rules, which gbnf.ts checks and
 * compiles as it does a GBNF grammar's (left recursion, empty repetitions, regular parts as DFAs, bounds).
 * lark_syntax.ts parses the text; here the definitions become rules:
 *
 * - each terminal (upper case, or a rule's string, regex or range) is a rule of its own, so the regular parts
 *   take it whole; `%import common.X` defines X as common.lark does (its helpers named `common.Y`);
 * - `%ignore X`: what X matches may come before the first token, between tokens and after the last, so each
 *   terminal a rule uses is followed by any number of ignored texts, and the start rule preceded by them;
 * - a rule that is directly left-recursive, `a: a x | a y | b | c` (Lark's LALR and Earley both take it),
 *   becomes `a: (b | c) (x | y)*`, the same text; other left recursion is refused by gbnf.ts;
 * - a repetition of something that can match empty text repeats its non-empty texts (`("a"?)*` is `"a"*`).
 *
 * Lark's lexer cuts text into the longest tokens; this grammar takes any cut that parses, as Lark's Earley
 * parser with `lexer="dynamic"` does, so it may allow texts a LALR parser would refuse (`NAME NAME` of "ab").
 */
import { type GbnfExpr, type GbnfRule, nullable, refsIn } from "./gbnf_syntax.ts";
import { checkRules, compileRules, type GbnfOptions } from "./gbnf.ts";
import type { JsonGrammar } from "./grammar.ts";
import { type LarkDef, larkFail, type LarkImport, LarkParser } from "./lark_syntax.ts";
import { ignoreAfterTokens, leftRecursionAsLoop, nonEmptyRepeats } from "./lark_rewrite.ts";

export { LarkError } from "./lark_syntax.ts";

/** A Lark grammar's GBNF rules, unchecked by gbnf.ts: its start rule, and how to report at a source offset. */
export interface LarkRules {
  rules: Map<string, GbnfRule>;
  start: string;
  fail(detail: string, at: number): never;
}

/**
 * Lark's common.lark (lark/grammars/common.lark), its terminals' texts kept: ESCAPED_STRING and C_COMMENT,
 * written there with a lazy `.*?` and a lookbehind, are the texts those match (a string ends at the first `"`
 * after an even number of backslashes; a comment at the first `*` `/`).
 */
const COMMON = String.raw`
DIGIT: "0".."9"
HEXDIGIT: "a".."f"|"A".."F"|DIGIT
INT: DIGIT+
SIGNED_INT: ["+"|"-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e"|"E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+"|"-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+"|"-"] NUMBER
ESCAPED_STRING: "\"" /([^"\\\n]|\\.)*/ "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_"|LETTER) ("_"|LETTER|DIGIT)*
WS_INLINE: (" "|/\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: /\/\*([^*]|\*+[^*\/])*\*+\//
SQL_COMMENT: /--[^\n]*/
`;

/** The rule of what `%ignore` skips, and the start rule with it in front (names no Lark name can be). */
const IGNORED = "%ignore";
const START = "%start";

/** Reports a problem at an offset of the grammar text. */
type Fail = (detail: string, at: number) => never;

/**
 * Parses a Lark grammar to GBNF rules with the checks of gbnf.ts's parseGbnf.
 * @param source the grammar text
 * @returns the rules by name and the name of the rule the output must match
 * @throws LarkError (a GbnfError) with the line and column of the first problem
 */
export function parseLark(source: string): { rules: Map<string, GbnfRule>; start: string } {
  const lark = larkRules(source);
  checkRules(lark.rules, lark.fail);
  return lark;
}

/**
 * The grammar of a Lark text (vLLM's `structured_outputs.grammar` / `guided_grammar` without `::=`): the
 * whole output must match its `start` rule, compiled as GBNF's rules are (gbnf.ts).
 * @param source the grammar text
 * @param options how to compile
 * @returns the compiled grammar
 * @throws LarkError (a GbnfError) with the line and column of the first problem
 * @example
 * ```ts
 * import { larkGrammar } from "./lark.ts";
 * const sum = larkGrammar('start: NUMBER ("+" NUMBER)*\n%import common.NUMBER\n%ignore " "');
 * ```
 */
export function larkGrammar(source: string, options: GbnfOptions = {}): JsonGrammar {
  const { rules, start } = parseLark(source);
  return compileRules(rules, start, options);
}

/**
 * Parses a Lark grammar to GBNF rules, unchecked ({@link parseLark} checks them).
 * @param source the grammar text
 * @returns the rules, the start rule's name and the error reporter
 * @throws LarkError with the line and column of the first problem
 */
export function larkRules(source: string): LarkRules {
  const fail: Fail = (detail, at) => larkFail(source, detail, at);
  const parser = new LarkParser(source).parse();
  const defs = new Map<string, LarkDef>();
  // In source order, so that a name defined twice is reported where it comes second.
  for (const def of [...parser.defs, ...importCommon(parser.imports, fail)].sort((x, y) => x.at - y.at)) {
    const first = defs.get(def.name);
    if (first) {
      fail(
        `"${def.name}" is defined twice (first at line ${source.slice(0, first.at).split("\n").length})`,
        def.at,
      );
    }
    defs.set(def.name, def);
  }
  const ignores = parser.ignores;
  checkReferences(defs, ignores, fail);
  const start = defs.get("start");
  if (!start || start.terminal) {
    return fail(
      'the grammar has no "start" rule (Lark\'s start; a grammar without "::=" is read as Lark)',
      0,
    );
  }
  const terminalEmpty = checkTerminals(defs, fail);
  for (const g of ignores) {
    if (nullable(g.body, terminalEmpty)) {
      fail("%ignore can match empty text: what it skips must read some", g.at);
    }
  }
  // Rules that can match empty text (the least fixpoint), then the rewrites.
  const ruleEmpty = new Set<string>();
  for (let changed = true; changed;) {
    changed = false;
    for (const def of defs.values()) {
      if (!def.terminal && !ruleEmpty.has(def.name) && nullable(def.body, (n) => ruleEmpty.has(n))) {
        ruleEmpty.add(def.name);
        changed = true;
      }
    }
  }
  const isEmpty = (n: string) => ruleEmpty.has(n);
  const isTerminal = (n: string) => defs.get(n)!.terminal;
  const rules = new Map<string, GbnfRule>();
  const add = (name: string, body: GbnfExpr, at: number) => rules.set(name, { name, body, at, empty: false });
  for (const def of defs.values()) {
    let body = def.terminal ? def.body : leftRecursionAsLoop(def.name, def.body, def.at);
    body = nonEmptyRepeats(body, isEmpty);
    if (!def.terminal && ignores.length > 0) body = ignoreAfterTokens(body, isTerminal, IGNORED);
    add(def.name, body, def.at);
  }
  if (ignores.length === 0) return { rules, start: "start", fail };
  const at = ignores[0].at;
  const skipped: GbnfExpr = ignores.length === 1
    ? ignores[0].body
    : { t: "alt", options: ignores.map((g) => g.body) };
  add(IGNORED, { t: "rep", item: nonEmptyRepeats(skipped, isEmpty), min: 0, max: Infinity, at }, at);
  add(START, {
    t: "seq",
    items: [{ t: "ref", name: IGNORED, at }, { t: "ref", name: "start", at: start.at }],
  }, 0);
  return { rules, start: START, fail };
}

/** That every reference is defined, and that terminals and `%ignore` refer to terminals only. */
function checkReferences(defs: Map<string, LarkDef>, ignores: { body: GbnfExpr }[], fail: Fail): void {
  const owned = [...defs.values()].map((d) => [d, d.body] as const);
  for (const [owner, body] of [...owned, ...ignores.map((g) => [null, g.body] as const)]) {
    for (const ref of refsIn(body)) {
      const kind = /^_?[A-Z]/.test(ref.name) ? "terminal" : "rule";
      const to = defs.get(ref.name) ?? fail(`undefined ${kind} "${ref.name}"`, ref.at);
      if ((owner === null || owner.terminal) && !to.terminal) {
        const what = owner === null ? "%ignore" : `terminal "${owner.name}"`;
        fail(
          `${what} refers to rule "${ref.name}": terminals are made of strings, regexes and terminals`,
          ref.at,
        );
      }
    }
  }
}

/**
 * That no terminal refers to itself and each reads something (Lark's lexer refuses zero-width terminals).
 * @returns whether a terminal can match empty text (false for all, past the checks)
 */
function checkTerminals(defs: Map<string, LarkDef>, fail: Fail): (name: string) => boolean {
  const empty = new Map<string, boolean>();
  const open: string[] = [];
  const terminalEmpty = (name: string): boolean => {
    if (open.includes(name)) {
      const path = [...open.slice(open.indexOf(name)), name].join(" → ");
      fail(`terminal "${name}" refers to itself (${path}): recursion is for rules`, defs.get(name)!.at);
    }
    if (!empty.has(name)) {
      const body = defs.get(name)!.body;
      open.push(name);
      refsIn(body).forEach((ref) => terminalEmpty(ref.name)); // every reference, for the recursion
      empty.set(name, nullable(body, (n) => empty.get(n)!));
      open.pop();
    }
    return empty.get(name)!;
  };
  for (const def of defs.values()) {
    if (def.terminal && terminalEmpty(def.name)) {
      const name = def.anonymous ? def.name : `"${def.name}"`;
      fail(`terminal ${name} can match empty text: a token must read some`, def.at);
    }
  }
  return terminalEmpty;
}

/** The imported terminals as common.lark defines them, and the terminals they use as `common.NAME`. */
function importCommon(imports: LarkImport[], fail: Fail): LarkDef[] {
  const defs: LarkDef[] = [];
  if (imports.length === 0) return defs;
  const common = new Map(new LarkParser(COMMON).parse().defs.map((d) => [d.name, d.body]));
  const added = new Set<string>();
  /** A body of common.lark with its references renamed, placed at the import (for errors). */
  const copy = (e: GbnfExpr, at: number): GbnfExpr => {
    switch (e.t) {
      case "ref":
        return { t: "ref", name: `common.${e.name}`, at };
      case "seq":
        return { t: "seq", items: e.items.map((i) => copy(i, at)) };
      case "alt":
        return { t: "alt", options: e.options.map((o) => copy(o, at)) };
      case "rep":
        return { ...e, item: copy(e.item, at), at };
      default:
        return e;
    }
  };
  const uses = (body: GbnfExpr, at: number) => {
    for (const { name } of refsIn(body)) {
      if (added.has(name)) continue;
      added.add(name);
      const used = common.get(name)!;
      defs.push({ name: `common.${name}`, terminal: true, body: copy(used, at), at, anonymous: false });
      uses(used, at);
    }
  };
  for (const { name, as, at } of imports) {
    const body = common.get(name);
    if (!body || name.startsWith("_")) {
      const names = [...common.keys()].filter((n) => !n.startsWith("_")).join(", ");
      fail(`common.lark has no terminal "${name}" (it has ${names})`, at);
    }
    if (!/^_?[A-Z][_A-Z0-9]*$/.test(as)) {
      fail(`an imported terminal's name must be upper case, not "${as}"`, at);
    }
    defs.push({ name: as, terminal: true, body: copy(body, at), at, anonymous: false });
    uses(body, at);
  }
  return defs;
}
