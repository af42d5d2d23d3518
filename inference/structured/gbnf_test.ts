import assert from "node:assert/strict";
import { GbnfError, type GbnfExpr, MAX_ITEMS, parseGbnf } from "./gbnf.ts";

const text = (t: string): GbnfExpr => ({ t: "text", text: t });
const ref = (name: string, at: number): GbnfExpr => ({ t: "ref", name, at });
const ANY: [number, number][] = [[0, 0x10ffff]];

/** The body of `root` in a grammar. */
function root(source: string): GbnfExpr {
  return parseGbnf(source).get("root")!.body;
}

Deno.test("parseGbnf(): repetition binds tighter than sequence, sequence tighter than |", () => {
  assert.deepEqual(root('root ::= "a" "b" | "c"*'), {
    t: "alt",
    options: [
      { t: "seq", items: [text("a"), text("b")] },
      { t: "rep", item: text("c"), min: 0, max: Infinity, at: 22 },
    ],
  });
  assert.deepEqual(root('root ::= ("a" | "b")+ x\nx ::= "x"'), {
    t: "seq",
    items: [
      { t: "rep", item: { t: "alt", options: [text("a"), text("b")] }, min: 1, max: Infinity, at: 20 },
      ref("x", 22),
    ],
  });
  // A repetition applies to the item before it, even a repetition (llama.cpp's rewrite does the same).
  assert.deepEqual(root('root ::= "a"+?'), {
    t: "rep",
    item: { t: "rep", item: text("a"), min: 1, max: Infinity, at: 12 },
    min: 0,
    max: 1,
    at: 13,
  });
});

Deno.test("parseGbnf(): string escapes and raw Unicode", () => {
  assert.deepEqual(
    root(String.raw`root ::= "\x41\u00e9\U0001F600\t\r\n\\\"\[\]\-é😀 #"`),
    text('Aé😀\t\r\n\\"[]-é😀 #'),
  );
  assert.deepEqual(root('root ::= ""'), text(""));
});

Deno.test("parseGbnf(): character classes, negated classes and . as sorted code-point ranges", () => {
  const chars = (src: string) => (root(`root ::= ${src}`) as { ranges: [number, number][] }).ranges;
  assert.deepEqual(chars("[a-c0-9_]"), [[0x30, 0x39], [0x5f, 0x5f], [0x61, 0x63]]);
  assert.deepEqual(chars("[a-cb-dx]"), [[0x61, 0x64], [0x78, 0x78]]);
  assert.deepEqual(chars("[^a]"), [[0, 0x60], [0x62, 0x10ffff]]);
  assert.deepEqual(chars(String.raw`[^"\\\x00-\x1F]`), [[0x20, 0x21], [0x23, 0x5b], [0x5d, 0x10ffff]]);
  assert.deepEqual(chars(String.raw`[\]\-\[]`), [[0x2d, 0x2d], [0x5b, 0x5b], [0x5d, 0x5d]]);
  assert.deepEqual(chars("[a-]"), [[0x2d, 0x2d], [0x61, 0x61]]); // a "-" before "]" is itself
  assert.deepEqual(chars("[-a]"), [[0x2d, 0x2d], [0x61, 0x61]]);
  assert.deepEqual(chars("[α-ω😀]"), [[0x3b1, 0x3c9], [0x1f600, 0x1f600]]);
  assert.deepEqual(chars("[\\u0100-\\U0010FFFF]"), [[0x100, 0x10ffff]]);
  assert.deepEqual(chars("."), ANY);
});

Deno.test("parseGbnf(): repetition bounds", () => {
  const bounds = (op: string) => {
    const r = root(`root ::= "a"${op}`) as { min: number; max: number };
    return [r.min, r.max];
  };
  assert.deepEqual(bounds("*"), [0, Infinity]);
  assert.deepEqual(bounds("+"), [1, Infinity]);
  assert.deepEqual(bounds("?"), [0, 1]);
  assert.deepEqual(bounds("{3}"), [3, 3]);
  assert.deepEqual(bounds("{2,}"), [2, Infinity]);
  assert.deepEqual(bounds("{0,5}"), [0, 5]);
  assert.deepEqual(bounds("{ 1 , 2 }"), [1, 2]);
  assert.deepEqual(bounds("{2000}"), [2000, 2000]);
});

Deno.test("parseGbnf(): recursion, comments, blank lines and rules over several lines", () => {
  const rules = parseGbnf(
    [
      "# balanced parentheses",
      "",
      'root ::= "(" root ")" root | ""   # recursion on the right',
      "list ::= (",
      '  item ("," item)*',
      ")",
      'item ::= "x" |',
      '  "y"',
      '  | "[" list "]"',
      "rest ::=",
      "  item\r",
      'empty ::= ""',
    ].join("\n"),
  );
  assert.deepEqual([...rules.keys()], ["root", "list", "item", "rest", "empty"]);
  assert.deepEqual(rules.get("root")!.body, {
    t: "alt",
    options: [{ t: "seq", items: [text("("), ref("root", 37), text(")"), ref("root", 46)] }, text("")],
  });
  assert.equal(rules.get("root")!.empty, true);
  assert.equal((rules.get("item")!.body as { options: GbnfExpr[] }).options.length, 3);
  assert.deepEqual(rules.get("rest")!.body, ref("item", 164));
  assert.deepEqual(
    [...rules.values()].map((r) => r.empty),
    [true, false, false, false, true],
  );
  // Rule names take letters, digits, "-" and "_".
  assert.ok(parseGbnf('root ::= my-rule_2\nmy-rule_2 ::= "a"').has("my-rule_2"));
});

/** [grammar, line, column, what the message says] */
const ERRORS: [string, number, number, RegExp][] = [
  ["root ::= foo", 1, 10, /undefined rule "foo"/],
  ['root ::= ("a" "b"', 1, 10, /"\(" is not closed/],
  ['root ::= ("a" ]', 1, 15, /unexpected "\]": expected "\)"/],
  ['root ::= "a")', 1, 13, /"\)" closes no "\("/],
  ['rot ::= "a"', 1, 1, /no "root" rule/],
  ["# nothing", 1, 1, /no "root" rule/],
  ['root ::= "a"\n\nroot ::= "b"', 3, 1, /rule "root" is defined twice \(first at line 1\)/],
  ['root ::= "a\\q"', 1, 12, /unknown escape "\\q"/],
  ['root ::= "\\x4"', 1, 11, /expected 2 hex digits after "\\x"/],
  ['root ::= "\\uD800"', 1, 11, /"\\\\uD800" is not a Unicode scalar value/],
  ['root ::= "\\U00110000"', 1, 11, /not a Unicode scalar value/],
  ['root ::= "abc', 1, 10, /the string is not closed/],
  ["root ::= [a-", 1, 10, /the character class is not closed/],
  ["root ::= [z-a]", 1, 11, /the range "z-a" is out of order/],
  ["root ::= []", 1, 10, /the character class is empty/],
  ['root ::= *"a"', 1, 10, /"\*" has nothing to repeat/],
  ['root ::= ("a" | +)', 1, 17, /"\+" has nothing to repeat/],
  ['root ::= "a"{3,2}', 1, 13, /\{3,2\} has its maximum below its minimum/],
  ['root ::= "a"{2001}', 1, 13, /a repetition count over 2000/],
  ['root ::= "a"{1,99999999999}', 1, 13, /a repetition count over 2000/],
  ['root ::= "a"{x}', 1, 14, /expected a number, got "x"/],
  ['root ::= "a"{1;}', 1, 15, /expected "\}" or ",", got ";"/],
  ['root "a"', 1, 6, /expected "::=" after the rule name "root"/],
  ['root ::= "a" ; "b"', 1, 14, /unexpected ";"/],
  ['| "a"', 1, 1, /expected a rule name, got "\|"/],
  ["root ::= <think>", 1, 10, /token references .* are not supported/],
  [
    'root ::= expr\nexpr ::= expr "+" num | num\nnum ::= [0-9]+',
    2,
    10,
    /"expr" is left-recursive.*expr → expr/,
  ],
  ['root ::= a\na ::= b "x"\nb ::= "c"? a', 3, 12, /"a" is left-recursive.*\(a → b → a\)/],
  ['root ::= ("a"?)*', 1, 16, /the repeated item can match empty text/],
  ['root ::= x{2}\nx ::= "a" | ""', 1, 11, /the repeated item can match empty text/],
];

Deno.test("parseGbnf() refuses bad grammars with the line and column", () => {
  for (const [source, line, column, message] of ERRORS) {
    assert.throws(() => parseGbnf(source), (err: unknown) => {
      assert.ok(err instanceof GbnfError, `${source}: ${err}`);
      assert.deepEqual([err.line, err.column], [line, column], `${source}: ${err.message}`);
      assert.match(err.message, message, source);
      assert.match(err.message, new RegExp(`^Cannot parse the grammar at line ${line}, column ${column}: `));
      return true;
    });
  }
});

Deno.test("parseGbnf() bounds a grammar's size and nesting", () => {
  assert.throws(() => parseGbnf(`root ::= ${'"a" '.repeat(MAX_ITEMS + 1)}`), /over 20000 items/);
  assert.throws(
    () => parseGbnf(`root ::= ${"(".repeat(100)}"a"${")".repeat(100)}`),
    /parentheses nest over 64/,
  );
  assert.throws(() => parseGbnf(`root ::= "a"${"?".repeat(300)}`), /nests over 256 levels/);
  const chain = Array.from({ length: 1100 }, (_, i) => `r${i} ::= r${i + 1} "x"`).join("\n");
  assert.throws(
    () => parseGbnf(`root ::= r0\n${chain}\nr1100 ::= "y"`),
    /nest over 1000 deep before any text/,
  );
  // A long chain that reads text first is fine: the automaton recurses only until a byte is read.
  const right = Array.from({ length: 1100 }, (_, i) => `r${i} ::= "x" r${i + 1}`).join("\n");
  assert.ok(parseGbnf(`root ::= r0\n${right}\nr1100 ::= "y"`).size === 1102);
  // x? of an x that may be empty is x, as llama.cpp allows it.
  assert.ok(parseGbnf('root ::= ws? "a"\nws ::= [ ]*'));
});
