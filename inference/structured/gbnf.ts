/**
 * GBNF, llama.cpp's grammar format (https://github.com/ggml-org/llama.cpp/blob/master/grammars/README.md;
 * gbnf_syntax.ts parses it), compiled to the node graph the byte automaton walks (grammar.ts,
 * json_automaton.ts). Each rule is a ref node, so rules refer to each other (and themselves) by reference.
 * A part of the grammar that is regular (its references never lead back to themselves: strings, numbers,
 * whitespace) becomes one regex node, its DFA built by gbnf_regular.ts; the rest maps kind to kind: a string
 * literal to a literal node, a class or `.` to a regex node of one character, a sequence or alternation to
 * seq or any-of, a repetition to a list node. The automaton reads these kinds exactly: no whitespace is
 * implied anywhere.
 *
 * Refused with a {@link GbnfError} at a line and column: what does not parse, undefined or twice-defined
 * rules, no `root`, left recursion (a rule that reaches itself before reading text: the automaton would
 * expand it forever), repeating something that can match empty text, and grammars past the size bounds.
 *
 * Lark grammars (lark.ts) become GBNF rules and are checked ({@link checkRules}) and compiled
 * ({@link compileRules}) here the same way.
 */
import { grammarOf, type JsonGrammar, type JsonNode, makeNode } from "./grammar.ts";
import { type GbnfExpr, GbnfParser, type GbnfRule, nullable } from "./gbnf_syntax.ts";
import { isRegular, partBudget, partDfa, regularRules } from "./gbnf_regular.ts";
import { RegexDfa } from "./regex.ts";

export { GbnfError, type GbnfExpr, type GbnfRule, MAX_ITEMS, MAX_REPEAT } from "./gbnf_syntax.ts";

/** Longest chain of rules and groups entered before any text is read (the automaton recurses along it). */
const MAX_LEFT_DEPTH = 1000;

/**
 * Parses a GBNF grammar to its rules, checked: every rule referred to is defined, `root` is, no rule is
 * left-recursive and no repeated item can match empty text (but `x?` of such an x, which is x itself).
 * @param source the grammar text
 * @returns the rules by name
 * @throws GbnfError with the line and column of the first problem
 */
export function parseGbnf(source: string): Map<string, GbnfRule> {
  const parser = new GbnfParser(source);
  const rules = parser.parse();
  for (const ref of parser.refs) {
    if (!rules.has(ref.name)) parser.fail(`undefined rule "${ref.name}"`, ref.at);
  }
  if (!rules.has("root")) parser.fail('the grammar has no "root" rule', 0);
  checkRules(rules, (detail, at) => parser.fail(detail, at));
  return rules;
}

/**
 * The checks of rules whose references are all defined: which can match empty text (`empty`), no repeated
 * item can (but `x?` of such an x, which is x itself), and none is left-recursive or nests too deep.
 * @param fail reports a problem at an offset of the grammar's text
 */
export function checkRules(rules: Map<string, GbnfRule>, fail: (detail: string, at: number) => never): void {
  const empty = (name: string) => rules.get(name)!.empty;
  // Which rules can match empty text: the least fixpoint.
  for (let changed = true; changed;) {
    changed = false;
    for (const r of rules.values()) {
      if (!r.empty && nullable(r.body, empty)) changed = r.empty = true;
    }
  }
  const checkRepeats = (e: GbnfExpr): void => {
    if (e.t === "seq") e.items.forEach(checkRepeats);
    else if (e.t === "alt") e.options.forEach(checkRepeats);
    else if (e.t === "rep") {
      if (nullable(e.item, empty) && !(e.min <= 1 && e.max === 1)) {
        fail("the repeated item can match empty text (repeat a non-empty item instead)", e.at);
      }
      checkRepeats(e.item);
    }
  };
  for (const r of rules.values()) checkRepeats(r.body);
  // Left recursion, and how deep the automaton recurses before it reads text: a walk over what each rule
  // may begin with (items up to the first that cannot be empty).
  const depth = new Map<string, number>();
  const open: string[] = [];
  const tooDeep = (at: number): never =>
    fail(`rules and groups nest over ${MAX_LEFT_DEPTH} deep before any text is read`, at);
  const ruleDepth = (name: string, at: number, level: number): number => {
    if (open.includes(name)) {
      const path = [...open.slice(open.indexOf(name)), name].join(" → ");
      fail(
        `rule "${name}" is left-recursive: it can reach itself before reading any text (${path}); ` +
          "write the repetition with * or + instead",
        at,
      );
    }
    let d = depth.get(name);
    if (d === undefined) {
      open.push(name);
      d = left(rules.get(name)!.body, level + 1, at);
      open.pop();
      depth.set(name, d);
    }
    return level + d > MAX_LEFT_DEPTH ? tooDeep(at) : d;
  };
  /** How deep the walk goes along what `e` may begin with (`level`: how deep it is already). */
  const left = (e: GbnfExpr, level: number, at: number): number => {
    if (level > MAX_LEFT_DEPTH) tooDeep(at);
    switch (e.t) {
      case "text":
      case "chars":
        return 1;
      case "ref":
        return 1 + ruleDepth(e.name, e.at, level + 1);
      case "seq": {
        let d = 0;
        for (const item of e.items) {
          d = Math.max(d, 1 + left(item, level + 1, at));
          if (!nullable(item, empty)) break;
        }
        return d;
      }
      case "alt":
        return 1 + Math.max(...e.options.map((o) => left(o, level + 1, at)));
      case "rep":
        return 1 + (e.max > 0 ? left(e.item, level + 1, at) : 0);
    }
  };
  for (const r of rules.values()) ruleDepth(r.name, r.at, 0);
}

/** How {@link gbnfGrammar} compiles. */
export interface GbnfOptions {
  /** each regular part (its references never lead back to themselves) one DFA where small (default true) */
  regularAsDfa?: boolean;
}

/**
 * The grammar of a GBNF text (vLLM's `structured_outputs.grammar` / `guided_grammar`, llama-server's
 * `grammar`): the whole output must match its `root` rule.
 * @param source the grammar text
 * @param options how to compile
 * @returns the compiled grammar
 * @throws GbnfError with the line and column of the first problem
 * @example
 * ```ts
 * import { gbnfGrammar } from "./gbnf.ts";
 * const answer = gbnfGrammar('root ::= "yes" | "no" | [0-9]{3}');
 * ```
 */
export function gbnfGrammar(source: string, options: GbnfOptions = {}): JsonGrammar {
  return compileRules(parseGbnf(source), "root", options);
}

/**
 * Compiles checked rules (parseGbnf, or lark.ts's) to the node graph: the whole output must match `start`.
 * @param rules the rules by name, checked by {@link checkRules}
 * @param start the rule the output must match
 * @param options how to compile
 */
export function compileRules(
  rules: Map<string, GbnfRule>,
  start: string,
  { regularAsDfa = true }: GbnfOptions = {},
): JsonGrammar {
  const regular = regularAsDfa ? regularRules(rules) : new Set<string>();
  const empty = (name: string) => rules.get(name)!.empty;
  const budget = partBudget();
  const refs = new Map<string, JsonNode & { kind: "ref" }>();
  // The rules compiled: those the output reaches through a ref node (not those only inlined in a DFA).
  const reached = new Set([start]);
  const todo = [start];
  for (const name of rules.keys()) refs.set(name, makeNode({ kind: "ref", to: null as JsonNode | null }));
  const EMPTY = makeNode({ kind: "regex", dfa: new RegexDfa("") });
  const classes = new Map<string, RegexDfa>();
  const encoder = new TextEncoder();
  const literal = (texts: string[]) =>
    makeNode({ kind: "literal", texts: [...new Set(texts)].map((t) => encoder.encode(t)) });
  /** A regular part as one regex node, or null (not regular, or its DFA too big). */
  const asDfa = (e: GbnfExpr): JsonNode | null => {
    if (!regularAsDfa || !isRegular(e, regular)) return null;
    const dfa = partDfa(e, rules, budget);
    return dfa && makeNode({ kind: "regex", dfa });
  };
  const compile = (e: GbnfExpr): JsonNode => {
    if (e.t === "seq" || e.t === "alt" || e.t === "rep") {
      const whole = asDfa(e);
      if (whole) return whole;
    }
    switch (e.t) {
      case "text":
        return e.text === "" ? EMPTY : literal([e.text]);
      case "chars": {
        // Not joined to a larger part: the class alone (bounded only by its size).
        const key = e.ranges.join(" ");
        if (!classes.has(key)) classes.set(key, partDfa(e, rules, null)!);
        return makeNode({ kind: "regex", dfa: classes.get(key)! });
      }
      case "ref":
        if (!reached.has(e.name)) {
          reached.add(e.name);
          todo.push(e.name);
        }
        return refs.get(e.name)!;
      case "seq": {
        // Each run of regular items one DFA (else each item its own nodes).
        const items = flatSeq(e);
        const nodes: JsonNode[] = [];
        for (let i = 0; i < items.length;) {
          let j = i + 1;
          while (isRegular(items[i], regular) && j < items.length && isRegular(items[j], regular)) j++;
          const whole = j - i === items.length; // its DFA was too big
          const run = j - i > 1 && !whole ? asDfa({ t: "seq", items: items.slice(i, j) }) : null;
          nodes.push(...(run ? [run] : items.slice(i, j).map(compile)));
          i = j;
        }
        const kept = nodes.filter((n) => n !== EMPTY);
        return kept.length === 0
          ? EMPTY
          : kept.length === 1
          ? kept[0]
          : makeNode({ kind: "seq", items: kept });
      }
      case "alt": {
        // The strings among the options: one literal node, its alternatives matched side by side.
        const options = flatAlt(e);
        const texts = options.flatMap((o) => (o.t === "text" && o.text !== "" ? [o.text] : []));
        const nodes = new Set(options.filter((o) => o.t !== "text" || o.text === "").map(compile));
        if (texts.length > 0) nodes.add(literal(texts));
        return nodes.size === 1 ? [...nodes][0] : makeNode({ kind: "anyOf", options: [...nodes] });
      }
      case "rep": {
        if (e.max === 0) return EMPTY;
        const item = compile(e.item);
        // x{1} is x; so is x? of an x that can be empty.
        if (e.max === 1 && (e.min === 1 || nullable(e.item, empty))) return item;
        return makeNode({ kind: "list", item, more: item, min: e.min, max: e.max });
      }
    }
  };
  while (todo.length > 0) {
    const name = todo.pop()!;
    refs.get(name)!.to = compile(rules.get(name)!.body);
  }
  return grammarOf(refs.get(start)!);
}

/** A sequence's items with nested sequences spliced in and adjacent strings joined. */
function flatSeq(e: GbnfExpr & { t: "seq" }): GbnfExpr[] {
  const out: GbnfExpr[] = [];
  for (const item of e.items.flatMap((i) => (i.t === "seq" ? flatSeq(i) : [i]))) {
    const last = out.at(-1);
    if (item.t === "text" && last?.t === "text") {
      out[out.length - 1] = { t: "text", text: last.text + item.text };
    } else out.push(item);
  }
  return out;
}

/** An alternation's options with nested alternations spliced in. */
function flatAlt(e: GbnfExpr & { t: "alt" }): GbnfExpr[] {
  return e.options.flatMap((o) => (o.t === "alt" ? flatAlt(o) : [o]));
}
