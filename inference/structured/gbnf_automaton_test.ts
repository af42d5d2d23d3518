/**
 * GBNF grammars through the byte automaton: texts fed byte by byte must be accepted exactly when an
 * independent reference says they match, a JavaScript RegExp for regular grammars and, for any grammar, a
 * plain recursive matcher over the parsed rules (sets of end positions over code points: no automaton, no
 * UTF-8). The texts are derivations of the grammar, mutations of them and random strings, from a seeded RNG.
 */
import assert from "node:assert/strict";
import { type GbnfExpr, gbnfGrammar, type GbnfRule, parseGbnf } from "./gbnf.ts";
import { canEnd, initialStates, MAX_STACKS, stepStates } from "./json_automaton.ts";
import type { JsonGrammar } from "./grammar.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";
import { rng, verdict } from "../../tests/_walk.ts";

const enc = new TextEncoder();

const accepts = (g: JsonGrammar, text: string) => ["complete", "canEnd"].includes(verdict(g, text));

/** The reference: whether `root` matches the whole text, by sets of end positions over code points. */
function referenceMatcher(rules: Map<string, GbnfRule>): (text: string) => boolean {
  return (text) => {
    const cps = [...text].map((c) => c.codePointAt(0)!);
    const memo = new Map<string, Set<number>>();
    const ends = (e: GbnfExpr, pos: number): Set<number> => {
      switch (e.t) {
        case "text": {
          const want = [...e.text].map((c) => c.codePointAt(0)!);
          return want.every((c, k) => cps[pos + k] === c) ? new Set([pos + want.length]) : new Set();
        }
        case "chars":
          return e.ranges.some(([lo, hi]) => cps[pos] >= lo && cps[pos] <= hi)
            ? new Set([pos + 1])
            : new Set();
        case "ref": {
          const key = `${e.name}@${pos}`;
          if (!memo.has(key)) memo.set(key, ends(rules.get(e.name)!.body, pos));
          return memo.get(key)!;
        }
        case "seq":
          return e.items.reduce(
            (at, item) => new Set([...at].flatMap((p) => [...ends(item, p)])),
            new Set([pos]),
          );
        case "alt":
          return new Set(e.options.flatMap((o) => [...ends(o, pos)]));
        case "rep": {
          const out = new Set<number>(e.min === 0 ? [pos] : []);
          let frontier = new Set([pos]);
          // Items read text (parseGbnf refuses empty ones), so the frontier empties past the text's end.
          for (let k = 1; k <= e.max && frontier.size > 0; k++) {
            frontier = new Set([...frontier].flatMap((p) => [...ends(e.item, p)]));
            if (k >= e.min) frontier.forEach((p) => out.add(p));
          }
          return out;
        }
      }
    };
    return ends(rules.get("root")!.body, 0).has(cps.length);
  };
}

const POOL = [...' \t\n"\\azAZ09_-+*/=().,:;[]{}!éωα中😀'].map((c) => c.codePointAt(0)!);

/** Random derivations of `root` (null when one recurses past `depth`), each item repeated at most 3 times. */
function deriver(rules: Map<string, GbnfRule>, rand: (n: number) => number, depth = 12) {
  const gen = (e: GbnfExpr, d: number): string | null => {
    switch (e.t) {
      case "text":
        return e.text;
      case "chars": {
        const inside = POOL.filter((c) => e.ranges.some(([lo, hi]) => c >= lo && c <= hi));
        if (inside.length > 0 && rand(4) > 0) return String.fromCodePoint(inside[rand(inside.length)]);
        const [lo, hi] = e.ranges[rand(e.ranges.length)];
        const c = lo + rand(Math.min(hi - lo + 1, 0x3000));
        return c >= 0xd800 && c <= 0xdfff ? null : String.fromCodePoint(c);
      }
      case "ref":
        return d > depth ? null : gen(rules.get(e.name)!.body, d + 1);
      case "seq": {
        let out = "";
        for (const item of e.items) {
          const s = gen(item, d);
          if (s === null) return null;
          out += s;
        }
        return out;
      }
      case "alt":
        return gen(e.options[rand(e.options.length)], d);
      case "rep": {
        const n = e.min + rand(Math.min(e.max - e.min, 3) + 1);
        return gen({ t: "seq", items: Array(n).fill(e.item) }, d);
      }
    }
  };
  return () => {
    for (;;) {
      const s = gen(rules.get("root")!.body, 0);
      if (s !== null) return s;
    }
  };
}

/** Derivations, their mutations (a character inserted, dropped or replaced; a cut) and random strings. */
function samples(source: string, seed: number, count = 300): string[] {
  const rand = rng(seed);
  const derive = deriver(parseGbnf(source), rand);
  const char = () => String.fromCodePoint(POOL[rand(POOL.length)]);
  const out: string[] = [""];
  for (let i = 0; i < count; i++) {
    const s = derive();
    const cs = [...s];
    const k = rand(cs.length + 1);
    out.push(s);
    out.push([...cs.slice(0, k), char(), ...cs.slice(k)].join(""));
    out.push([...cs.slice(0, k), ...cs.slice(k + 1)].join(""));
    out.push([...cs.slice(0, k), char(), ...cs.slice(k + 1)].join(""));
    out.push(cs.slice(0, k).join(""));
    out.push(Array.from({ length: rand(8) }, char).join(""));
  }
  return out;
}

/**
 * Checks the automaton against the reference (and a RegExp) on every sample, the grammar compiled with its
 * regular parts as DFAs and as nodes throughout; returns how many samples matched.
 */
function compare(source: string, seed: number, regex?: RegExp): number {
  const compiled = [gbnfGrammar(source), gbnfGrammar(source, { regularAsDfa: false })];
  const reference = referenceMatcher(parseGbnf(source));
  let matched = 0;
  for (const text of samples(source, seed)) {
    const want = reference(text);
    if (regex) assert.equal(regex.test(text), want, `RegExp vs reference on ${JSON.stringify(text)}`);
    for (const [k, g] of compiled.entries()) {
      const got = verdict(g, text);
      assert.equal(
        ["complete", "canEnd"].includes(got),
        want,
        `${k ? "nodes" : "DFAs"}: ${JSON.stringify(text)} ${got}`,
      );
    }
    if (want) matched++;
  }
  return matched;
}

const CODES = String.raw`
root ::= code ("-" code){2,3} "!"?
code ::= [A-Z]{2} [0-9]   # two capitals and a digit
`;

Deno.test("gbnf automaton: a grammar with {2,3} matches as its RegExp does", () => {
  const matched = compare(CODES, 7, /^[A-Z]{2}[0-9](?:-[A-Z]{2}[0-9]){2,3}!?$/u);
  assert.ok(matched > 250, `${matched} texts matched`);
  const g = gbnfGrammar(CODES);
  assert.equal(verdict(g, "AB1-CD2-EF3"), "canEnd"); // a fourth code or "!" may follow
  assert.equal(verdict(g, "AB1-CD2-EF3-GH4!"), "complete");
  assert.equal(verdict(g, "AB1-CD2-EF3-GH4-IJ5"), "reject");
  assert.equal(verdict(g, "AB1-CD2"), "partial");
});

Deno.test("gbnf automaton: Unicode classes, negation and . (newline too) match as RegExp", () => {
  const source = String.raw`root ::= [^\n;]+ (";" [α-ω]* .)? "\n"?`;
  const matched = compare(source, 11, /^[^\n;]+(?:;[α-ω]*[\s\S])?\n?$/u);
  assert.ok(matched > 200, `${matched} texts matched`);
  const g = gbnfGrammar(source);
  for (const text of ["中😀;αβ\n", "a;😀", "é;\n\n", "x\n"]) assert.ok(accepts(g, text), text);
  // A character's bytes are checked as they come: a lone continuation byte or a cut-off lead is refused.
  let s = initialStates(g);
  for (const b of [0xe4, 0xb8]) s = stepStates(s, b);
  assert.ok(s.length > 0 && !canEnd(s));
  assert.equal(stepStates(initialStates(g), 0x80).length, 0);
});

Deno.test("gbnf automaton: a regular part whose DFA would be large stays a graph of nodes", () => {
  // The 13th byte from the end decides: a DFA needs 2^13 states, more than a part may have.
  const matched = compare('root ::= [ab]* "a" [ab]{12}', 13, /^[ab]*a[ab]{12}$/u);
  assert.ok(matched > 250, `${matched} texts matched`);
  const g = gbnfGrammar('root ::= [ab]* "a" [ab]{12}');
  assert.equal(g.root.kind === "ref" && g.root.to?.kind, "seq");
  assert.equal(verdict(g, "b".repeat(40) + "a" + "b".repeat(12)), "canEnd");
  assert.equal(verdict(g, "b".repeat(40) + "a" + "b".repeat(11)), "partial");
});

const ARITHMETIC = String.raw`
root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
`;

Deno.test("gbnf automaton: llama.cpp's arithmetic grammar matches as the reference does", () => {
  const matched = compare(ARITHMETIC, 3);
  assert.ok(matched > 250, `${matched} texts matched`);
  const g = gbnfGrammar(ARITHMETIC);
  assert.equal(verdict(g, "(a +12)*b2 = 3\n"), "canEnd");
  assert.equal(verdict(g, "a + 1=2\n"), "reject"); // no space after an operator
  assert.equal(verdict(g, "x=(1+(2*(3-y)))\nz = 4\n"), "canEnd");
  assert.equal(verdict(g, "(a +12"), "partial");
  assert.equal(verdict(g, "(a +12))"), "reject");
  assert.equal(verdict(g, " a=1\n"), "reject"); // whitespace only where ws is
});

const JSONISH = String.raw`
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws
string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
# Optional space: a space, or a newline with indentation
ws ::= | " " | "\n" [ \t]{0,20}
`;

Deno.test("gbnf automaton: llama.cpp's json.gbnf matches as the reference and JSON.parse", () => {
  const matched = compare(JSONISH, 5);
  assert.ok(matched > 150, `${matched} texts matched`);
  const g = gbnfGrammar(JSONISH);
  const value = { name: 'Ada "L"\n\u0001é😀', tags: ["a", [], {}], n: -12.5, ok: true, none: null };
  for (const text of [JSON.stringify(value), JSON.stringify(value, null, 2)]) {
    assert.equal(verdict(g, text), "canEnd", text); // trailing ws may follow
  }
  for (const text of samples(JSONISH, 9)) if (accepts(g, text)) JSON.parse(text);
  assert.equal(verdict(g, '{"a":01}'), "reject");
  assert.equal(verdict(g, '{"a"  :1}'), "reject");
});

Deno.test("gbnf automaton: no whitespace is implied, and a finished value is complete", () => {
  const g = gbnfGrammar('root ::= "yes" | "no" | [0-9]{3}');
  for (const [text, want] of [["yes", "complete"], ["123", "complete"], ["12", "partial"], ["", "partial"]]) {
    assert.equal(verdict(g, text), want, text);
  }
  for (const text of [" yes", "yes ", "1 23", "1234", "\nno"]) assert.equal(verdict(g, text), "reject", text);
  const braces = gbnfGrammar('root ::= "{" "}"');
  assert.equal(verdict(braces, "{}"), "complete");
  assert.equal(verdict(braces, "{ }"), "reject");
  // Whitespace the grammar asks for, at the start too; a grammar that may be empty may end at once.
  const spaced = gbnfGrammar('root ::= [ \\t\\n]* "x"* ws\nws ::= " "?');
  assert.equal(verdict(spaced, ""), "canEnd");
  assert.equal(verdict(spaced, "\n\t xx "), "complete");
  const parens = gbnfGrammar('root ::= "(" root ")" root | ""');
  assert.equal(verdict(parens, "(()(()))()"), "canEnd");
  assert.equal(verdict(parens, "(()"), "partial");
  assert.equal(verdict(parens, "())"), "reject");
});

Deno.test("gbnf automaton: a grammar whose parses multiply with each byte is cut off at MAX_STACKS", () => {
  const g = gbnfGrammar('root ::= "a" root "b" | "a" root "c" | ""');
  assert.equal(verdict(g, "aaaaa" + "bcbbc"), "complete");
  const doubling = Math.log2(MAX_STACKS);
  assert.equal(verdict(g, "a".repeat(doubling)), "partial");
  assert.equal(verdict(g, "a".repeat(doubling + 1)), "reject");
});

Deno.test("gbnf automaton: token masks allow the ids whose bytes fit", () => {
  const words = ["yes", "no", "1", "12", "123", "1234", "y", "es", " ", "n", "o"];
  const vocab = new TokenVocab(words.map((w) => enc.encode(w)), words.length + 1);
  const m = new GrammarMatcher(gbnfGrammar('root ::= "yes" | "no" | [0-9]{3}'), vocab);
  const allowed = (mask: Uint32Array) => words.filter((_, id) => (mask[id >>> 5] >>> (id & 31)) & 1);
  assert.deepEqual(allowed(m.mask([words.length])), ["yes", "no", "1", "12", "123", "y", "n"]);
  assert.ok(m.accept(words.indexOf("12")));
  assert.deepEqual(allowed(m.mask([words.length])), ["1"]);
  assert.ok(m.accept(words.indexOf("1")) && m.complete);
});
