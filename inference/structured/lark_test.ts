/**
 * Lark grammars through the byte automaton (lark.ts → gbnf.ts): grammars clients send (SQL, JSON, arithmetic)
 * walked byte by byte, accepted texts alive at every prefix, random walks parsed back by hand-written readers,
 * common.lark's terminals against RegExps of Lark's own definitions, and the errors.
 */
import assert from "node:assert/strict";
import { GbnfError, gbnfGrammar, MAX_ITEMS } from "./gbnf.ts";
import { LarkError, larkGrammar, parseLark } from "./lark.ts";
import type { JsonGrammar } from "./grammar.ts";
import { randomWalks, rng, verdict } from "../../tests/_walk.ts";

const enc = new TextEncoder();

/** Whether the automaton takes the whole text (complete, or where more may follow). */
function takes(g: JsonGrammar, text: string): boolean {
  return ["complete", "canEnd"].includes(verdict(g, text));
}

/** That the grammar takes each text, and every byte prefix of it stays alive. */
function assertTakes(g: JsonGrammar, texts: string[]): void {
  for (const text of texts) {
    const bytes = enc.encode(text);
    for (let n = 0; n < bytes.length; n++) {
      assert.notEqual(
        verdict(g, bytes.subarray(0, n)),
        "reject",
        `${JSON.stringify(text)} dies after ${n} bytes`,
      );
    }
    assert.ok(takes(g, text), `${JSON.stringify(text)}: ${verdict(g, text)}`);
  }
}

function assertRefuses(g: JsonGrammar, texts: string[]): void {
  for (const text of texts) assert.ok(!takes(g, text), `${JSON.stringify(text)}: ${verdict(g, text)}`);
}

Deno.test("larkGrammar(): %ignore WS puts whitespace before, between and after the tokens", () => {
  const g = larkGrammar('start: "a" "b"\n%import common.WS\n%ignore WS');
  assertTakes(g, ["a b", " a  b ", "ab", "\ta\n\r\fb\n"]);
  assertRefuses(g, ["a", "a c", "ba", "a b b", "a\vb"]);
  assert.equal(verdict(g, "ab"), "canEnd"); // whitespace may follow
  // Inside a terminal nothing is skipped; without %ignore nothing anywhere.
  const word = larkGrammar('start: WORD "!"\nWORD: "ab"\n%ignore " "');
  assertTakes(word, ["ab!", " ab ! "]);
  assertRefuses(word, ["a b!"]);
  const bare = larkGrammar('start: "a" "b"');
  assert.equal(verdict(bare, "ab"), "complete");
  assertRefuses(bare, ["a b", " ab", "ab "]);
  // Several ignores, and an inline one.
  const two = larkGrammar('start: "x"+\n%ignore " "\n%ignore /#[^\\n]*\\n/');
  assertTakes(two, ["x x", "x # note\n x", "# first\nxx"]);
  assertRefuses(two, ["x #", "x\nx"]);
});

const SQL_LARK = String.raw`
start: select_statement
select_statement: "SELECT " column " from " table " where " condition
column: "col_1 " | "col_2 "
table: "table_1 " | "table_2 "
condition: column "= " number
number: "1 " | "2 "
`;
const SQL_GBNF = String.raw`
root ::= select_statement
select_statement ::= "SELECT " column " from " table " where " condition
column ::= "col_1 " | "col_2 "
table ::= "table_1 " | "table_2 "
condition ::= column "= " number
number ::= "1 " | "2 "
`;

Deno.test("larkGrammar(): vLLM's SQL example in Lark takes what its GBNF form takes", () => {
  const lark = larkGrammar(SQL_LARK);
  const gbnf = gbnfGrammar(SQL_GBNF);
  const rand = rng(17);
  const pick = (xs: string[]) => xs[rand(xs.length)];
  for (let i = 0; i < 200; i++) {
    let text = `SELECT ${pick(["col_1 ", "col_2 "])} from ${pick(["table_1 ", "table_2 "])} where ` +
      `${pick(["col_1 ", "col_2 "])}= ${pick(["1 ", "2 "])}`;
    text = rand(2)
      ? text
      : text.slice(0, rand(text.length)) + pick(["", "x", " ", "1"]) + text.slice(rand(3));
    assert.equal(verdict(lark, text), verdict(gbnf, text), JSON.stringify(text));
  }
  assertTakes(lark, ["SELECT col_1  from table_2  where col_2 = 1 "]);
  assert.equal(verdict(lark, "SELECT col_1  from table_2  where col_2 = 1 "), "complete");
});

const SQL = String.raw`
// A small SELECT: keywords in any case, whitespace between tokens.
?start: select ";"?
select: "SELECT"i columns "FROM"i NAME ("WHERE"i condition ("AND"i condition)*)? ("LIMIT"i INT)?
columns: "*" | NAME ("," NAME)*
condition: NAME OP value
OP: "=" | "!=" | "<" | ">" | "<=" | ">="
?value: SIGNED_NUMBER | ESCAPED_STRING | NAME

%import common (INT, SIGNED_NUMBER, ESCAPED_STRING, WS)
%import common.CNAME -> NAME
%ignore WS
`;

Deno.test("larkGrammar(): a SQL grammar with case-insensitive keywords", () => {
  const g = larkGrammar(SQL);
  assertTakes(g, [
    "SELECT * FROM users",
    'select name, age from people where age >= -3 and name != "Bob" limit 10;',
    "SeLeCt a FROM t WHERE a=b",
    "SELECT\n  a,\n  b\nFROM t;\n",
  ]);
  assertRefuses(g, ["SELECT FROM t", "SELECT a FROM t WHERE a =", "SELECT a, FROM t", "SELECT a FROM t;;"]);
  assert.equal(verdict(g, "SELECT a FR"), "partial");
  assert.equal(verdict(g, "select a from t where a < 'x'"), "reject"); // only double-quoted strings
});

const JSON_LARK = String.raw`
// Lark's JSON example (https://lark-parser.readthedocs.io/en/latest/json_tutorial.html)
?start: value

?value: object
      | array
      | string
      | SIGNED_NUMBER      -> number
      | "true"             -> true
      | "false"            -> false
      | "null"             -> null

array  : "[" [value ("," value)*] "]"
object : "{" [pair ("," pair)*] "}"
pair   : string ":" value

string : ESCAPED_STRING

%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
`;

/**
 * A JSON-in-Lark text as JSON: each ESCAPED_STRING made `""` and each SIGNED_NUMBER `0` (Lark's allow more
 * than JSON's: `\q`, `+.5`), whitespace dropped. Throws where a character starts no token.
 */
function asJson(text: string): string {
  const token =
    /[ \t\f\r\n]+|"(?:[^"\\\n]|\\.)*"|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|true|false|null|[{}[\],:]/y;
  let out = "";
  for (let at = 0; at < text.length;) {
    token.lastIndex = at;
    const m = token.exec(text);
    if (!m) throw new Error(`no token at ${at} of ${JSON.stringify(text)}`);
    const t = m[0];
    out += /^\s/.test(t) ? "" : t[0] === '"' ? '""' : /^[+\-.\d]/.test(t) ? "0" : t;
    at += t.length;
  }
  return out;
}

Deno.test("larkGrammar(): JSON in Lark (ESCAPED_STRING, SIGNED_NUMBER, %ignore WS) takes JSON", () => {
  const g = larkGrammar(JSON_LARK);
  const value = { name: 'Ada "L"\n\té😀', tags: ["a", [], {}], n: -12.5e-3, ok: true, none: null };
  assertTakes(g, [
    JSON.stringify(value),
    JSON.stringify(value, null, 2),
    "  [ 1 , +2 , .5 , 3. ]  ",
    '"\\q"',
  ]);
  assertRefuses(g, ['{"a" 1}', "[1,]", '{"a":1,}', "[1 2]", "{a:1}", '"a\nb"', "01x", "tru e"]);
  assert.equal(verdict(g, '{"a": [tr'), "partial");
  assert.equal(verdict(g, '"abc'), "partial");
});

Deno.test("larkGrammar(): random walks of JSON in Lark read back as JSON", () => {
  const g = larkGrammar(JSON_LARK);
  const texts = randomWalks(g, { walks: 300, maxLength: 60, closers: '"]}', rand: rng(29) });
  assert.ok(texts.length > 150, `${texts.length} walks finished`);
  for (const text of texts) JSON.parse(asJson(text));
  assert.ok(texts.some((t) => /[[{]/.test(t)) && texts.some((t) => t.includes('"')));
});

const CALC = String.raw`
// Lark's calculator (examples/calc.py): left-recursive sums and products
?start: sum
      | NAME "=" sum    -> assign_var

?sum: product
    | sum "+" product   -> add
    | sum "-" product   -> sub

?product: atom
    | product "*" atom  -> mul
    | product "/" atom  -> div

?atom: NUMBER           -> number
     | "-" atom         -> neg
     | NAME             -> var
     | "(" sum ")"

%import common.CNAME -> NAME
%import common.NUMBER
%import common.WS_INLINE

%ignore WS_INLINE
`;

/** Whether a text is a calculator line, by recursive descent over maximal-munch tokens. */
function isCalc(text: string): boolean {
  const tokens = text.match(
    /[ \t]+|[_a-zA-Z][_a-zA-Z0-9]*|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[-+*/()=]|[^]/g,
  )!
    .filter((t) => !/^[ \t]+$/.test(t));
  let i = 0;
  const name = (t = tokens[i]) => /^[_a-zA-Z]/.test(t ?? "");
  const atom = (): boolean => {
    const t = tokens[i++];
    if (t === "-") return atom();
    if (t === "(") return sum() && tokens[i++] === ")";
    return name(t) || /^[.\d]/.test(t ?? "");
  };
  const loop = (item: () => boolean, ops: string) => {
    if (!item()) return false;
    while (ops.includes(tokens[i] ?? "x")) {
      i++;
      if (!item()) return false;
    }
    return true;
  };
  const product = () => loop(atom, "*/");
  const sum = () => loop(product, "+-");
  if (name() && tokens[i + 1] === "=") i += 2;
  return sum() && i === tokens.length;
}

Deno.test("larkGrammar(): Lark's left-recursive calculator, and its random walks parse", () => {
  const g = larkGrammar(CALC);
  assertTakes(g, ["1+2*3", "x = (1 + 2) * -y", "-(-3.5e2)/b_2 - .5", "  a\t=b  "]);
  assertRefuses(g, ["1 +* 2", "(1 + 2", ")", "1 2", "a = b = c", "x =", "*1"]);
  assert.equal(verdict(g, "(1 +"), "partial");
  const texts = randomWalks(g, { walks: 300, maxLength: 40, closers: ")", rand: rng(41) });
  assert.ok(texts.length > 150, `${texts.length} walks finished`);
  for (const text of texts) assert.ok(isCalc(text), JSON.stringify(text));
  // The rewrite: sum: product ("+" product | "-" product)*.
  const sum = parseLark(CALC).rules.get("sum")!.body;
  assert.equal(sum.t === "seq" && sum.items[1].t === "rep" && sum.items[1].max, Infinity);
});

Deno.test("larkGrammar(): strings, ranges, repetitions, groups and comments", () => {
  const cases: [string, string[], string[]][] = [
    [String.raw`start: "a\"b\\c\n\t\x41\u00e9\U0001F600" "\d"`, ['a"b\\c\n\tAé😀\\d'], ['a"b\\c\n\tAé😀d']],
    ['start: "Hello"i " " "é"i', ["hello é", "HeLLo É"], ["hello e", "hello  É"]],
    ['start: ("a".."c" | "x")+ "0".."9"', ["abx7", "c0"], ["d0", "ab"]],
    ['start: "a" ~ 3 "b" ~ 1..2', ["aaab", "aaabb"], ["aab", "aaabbb"]],
    ['start: "a" ["b"] "c"? ("d" | "e")*', ["a", "abcdde", "ace"], ["abb", "af"]],
    ["start: 'single' \"double\"", ["singledouble"], ["single double"]],
    ['start: A B\nA: "a"+ // a comment\nB: "b" # another\n', ["aab"], ["b"]],
    ['start: x\n    | y\n\n    // comment between\n    | "z"\nx: "x"\ny: "y"', ["x", "y", "z"], ["xy"]],
    ['!start: _item+\n?_item: "a" -> first\n    | "b" -> second', ["abba"], [""]],
    ['start: ("a"?)* "b" ("c"? "d"?)+', ["b", "aab", "bcdd", "bc"], ["ab_"]],
    ['start: "a" \\\n  "b"', ["ab"], ["a"]],
    ['start: "a"\r\n    | "b"\r\n', ["a", "b"], ["\r"]],
    ['start: list\nlist: list "," ITEM | ITEM\nITEM: "x" | "y"', ["x", "x,y,x"], ["x,", ",x"]],
  ];
  for (const [source, yes, no] of cases) {
    const g = larkGrammar(source);
    assertTakes(g, yes);
    assertRefuses(g, no);
  }
});

Deno.test("larkGrammar(): regex terminals and their flags", () => {
  const cases: [string, string[], string[]][] = [
    [String.raw`start: /[a-z_]\w*(\.\d{2,3})?/`, ["ab_1", "x.123"], ["1a", "x.1", "x.1234", "é"]],
    [String.raw`start: /[^"\\]+/ "|" /\S\s\D\W./`, ["ab|x a-\t", "é😀|a\nxé\t"], [
      "a|x a-\n",
      "a|x a_\t",
      "a|x 1-\t",
    ]],
    [String.raw`start: /(?:ab|c)+?(?P<n>x)?(?#note)y*+/`, ["abcabx", "c", "cyy"], ["ab c"]],
    [String.raw`start: /[\x41-\x43\u00e9\n-]+/`, ["ABé-\n"], ["D"]],
    [String.raw`start: /a.b/s /c.d/`, ["a\nbcxd"], ["a\nbc\nd"]],
    ["start: /select|k/i", ["SELECT", "sElEct", "K", "\u212a"], ["SELEC"]],
    [String.raw`start: /[^a-c]x/i`, ["dx", "DX"], ["ax", "Bx"]],
    [String.raw`start: /a{2}b{,2}c{1,}/`, ["aac", "aabbccc"], ["ac", "aabbbc"]],
    ["start: /a # letter a\n  b{2}  # two b\n/x", ["abb"], ["a b"]],
    [String.raw`start: /\/\/[^\n]*/ "{"`, ["// x{"], ["/{"]],
    [String.raw`start: /(a|b?)+c/`, ["c", "abac", "bbc"], ["d", "ab"]],
  ];
  for (const [source, yes, no] of cases) {
    const g = larkGrammar(source);
    assertTakes(g, yes);
    assertRefuses(g, no);
  }
});

/**
 * common.lark's terminals and a RegExp each: whether a whole text is one token, as Lark's lexer reads it
 * (the lazy ESCAPED_STRING and C_COMMENT as written there: the shortest match must be the whole text; Python's
 * `.` is `[^\n]`, JavaScript's also stops at `\r`).
 */
const COMMON: [string, RegExp | ((t: string) => boolean)][] = [
  ["DIGIT", /^\d$/],
  ["HEXDIGIT", /^[0-9a-fA-F]$/],
  ["INT", /^\d+$/],
  ["SIGNED_INT", /^[+-]?\d+$/],
  ["DECIMAL", /^(\d+\.\d*|\.\d+)$/],
  ["FLOAT", /^(\d+[eE][+-]?\d+|(\d+\.\d*|\.\d+)([eE][+-]?\d+)?)$/],
  ["SIGNED_FLOAT", /^[+-]?(\d+[eE][+-]?\d+|(\d+\.\d*|\.\d+)([eE][+-]?\d+)?)$/],
  ["NUMBER", /^(\d+[eE][+-]?\d+|(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+)$/],
  ["SIGNED_NUMBER", /^[+-]?(\d+[eE][+-]?\d+|(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+)$/],
  ["ESCAPED_STRING", (t) => /^"[^\n]*?(?<!\\)(\\\\)*?"/.exec(t)?.[0] === t],
  ["LCASE_LETTER", /^[a-z]$/],
  ["UCASE_LETTER", /^[A-Z]$/],
  ["LETTER", /^[a-zA-Z]$/],
  ["WORD", /^[a-zA-Z]+$/],
  ["CNAME", /^[_a-zA-Z][_a-zA-Z0-9]*$/],
  ["WS_INLINE", /^[ \t]+$/],
  ["WS", /^[ \t\f\r\n]+$/],
  ["CR", /^\r$/],
  ["LF", /^\n$/],
  ["NEWLINE", /^(\r?\n)+$/],
  ["SH_COMMENT", /^#[^\n]*$/],
  ["CPP_COMMENT", /^\/\/[^\n]*$/],
  ["C_COMMENT", (t) => /^\/\*[^]*?\*\//.exec(t)?.[0] === t],
  ["SQL_COMMENT", /^--[^\n]*$/],
];

Deno.test("larkGrammar(): %import common.X defines X as common.lark does", () => {
  const pool = [...'0189aefAFzZ_.eE+-"\\/*#\n\r\t \f'];
  const rand = rng(5);
  const samples = [
    ...[
      "1.5e-3",
      '"\r"',
      "/*\r\n*/",
      ".5",
      "5.",
      "+12",
      "-0",
      "1e5",
      "0x1F",
      '"a\\"b"',
      '"\\\\"',
      '"a\\"',
      '"é"',
      "/* a ** b */",
    ],
    ...["/**/", "/* a */ */", "\r\n\n", "# x", "-- q", "// c", "_a1", "aZ", "\t \t"],
    ...Array.from(
      { length: 3000 },
      () => Array.from({ length: 1 + rand(6) }, () => pool[rand(pool.length)]).join(""),
    ),
  ];
  for (const [name, reference] of COMMON) {
    const g = larkGrammar(`start: ${name}\n%import common.${name}`);
    const want = (t: string) => typeof reference === "function" ? reference(t) : reference.test(t);
    let matched = 0;
    for (const text of samples) {
      assert.equal(takes(g, text), want(text), `${name}: ${JSON.stringify(text)}`);
      if (want(text)) matched++;
    }
    assert.ok(matched > 0, `${name} matched no sample`);
  }
  // Renamed, listed, and their helpers kept apart from the grammar's own names.
  const g = larkGrammar('start: NUM " " INT\n%import common.NUMBER -> NUM\nINT: "i"\n%import common (WS)');
  assertTakes(g, ["1.5 i"]);
  assertRefuses(g, ["1.5 2"]);
});

/** [grammar, line, column, what the message says] */
const ERRORS: [string, number, number, RegExp][] = [
  ["start: foo", 1, 8, /undefined rule "foo"/],
  ['start: "a" FOO', 1, 12, /undefined terminal "FOO"/],
  ['start: "a"\n\nstart: "b"', 3, 1, /"start" is defined twice \(first at line 1\)/],
  ['a: "x"', 1, 1, /no "start" rule/],
  ['START: "x"', 1, 1, /no "start" rule/],
  ['start: ("a" "b"', 1, 8, /"\(" is not closed/],
  ['start: ["a"', 1, 8, /"\[" is not closed/],
  ['start: ("a"]', 1, 12, /unexpected "\]": expected "\)"/],
  ['start: "a")', 1, 11, /"\)" closes no "\("/],
  ['start: "abc', 1, 8, /the string is not closed/],
  ['start: "ab\nc"', 1, 8, /the string is not closed/],
  ["start: /abc", 1, 8, /the regex is not closed/],
  ['start: ""', 1, 8, /empty strings are not allowed/],
  ['start: "\\x4"', 1, 9, /expected 2 hex digits after "\\x"/],
  ['start: "\\ud800"', 1, 9, /not a Unicode scalar value/],
  ['start: "a".."bc"', 1, 8, /a range .* one character each/],
  ['start: "z".."a"', 1, 8, /the range "z".."a" is out of order/],
  ['start: "a" ~ 3..2', 1, 12, /~ 3\.\.2 is not a range/],
  ['start: "a" ~ 3000', 1, 12, /a repetition count over 2000/],
  ['start: *"a"', 1, 8, /"\*" has nothing to repeat/],
  ['start: "a"+*', 1, 12, /"\*" repeats a repetition/],
  ['start: "a" ; "b"', 1, 12, /unexpected ";"/],
  ['start: "a"\n"b"', 2, 1, /expected a rule, a terminal or a statement .*, got "\\""/],
  ['start "a"', 1, 7, /expected ":" after the rule name "start"/],
  ['Start: "a"', 1, 1, /"Start" is neither a rule name \(lower case\) nor a terminal name/],
  ['!A: "a"\nstart: A', 1, 1, /a terminal takes no "!" or "\?"/],
  ['start: "a" -> B', 1, 15, /expected a rule name after "->"/],
  ["start: _sep{x}", 1, 12, /templates \("_sep\{…\}"\) are not supported/],
  ['_sep{x, s}: x (s x)*\nstart: "a"', 1, 5, /templates \("_sep\{…\}"\) are not supported/],
  ['start.2: "a"', 1, 6, /priorities \("start\.N"\) are not supported/],
  ['start: A\nA.2: "a"', 2, 2, /priorities \("A\.N"\) are not supported/],
  ["%declare FOO\nstart: FOO", 1, 1, /%declare is not supported/],
  ['%override start: "a"', 1, 1, /%override is not supported/],
  ['%frobnicate\nstart: "a"', 1, 1, /unknown statement "%frobnicate"/],
  ['%import python.NAME\nstart: "a"', 1, 9, /cannot import "python\.NAME": only common\.lark/],
  ['%import .local.X\nstart: "a"', 1, 9, /relative imports are not supported/],
  ['%import common.FOO\nstart: "a"', 1, 9, /common\.lark has no terminal "FOO" \(it has DIGIT, /],
  ['%import common (WS, nope)\nstart: "a"', 1, 21, /common\.lark has no terminal "nope"/],
  ['%import common.WS\nWS: " "\nstart: WS', 2, 1, /"WS" is defined twice \(first at line 1\)/],
  ['WS: " "\n%import common.WS\nstart: WS', 2, 9, /"WS" is defined twice \(first at line 1\)/],
  ["start: /(?=a)b/", 1, 9, /in the regex: lookaround "\(\?=…\)" is not supported/],
  ["start: /(?<!a)b/", 1, 9, /lookaround "\(\?<!…\)"/],
  ["start: /(a)\\1/", 1, 12, /backreferences \("\\1"\) are not supported/],
  ["start: /^a/", 1, 9, /the anchor "\^" is not supported/],
  ["start: /a\\b/", 1, 10, /the anchor "\\b" is not supported/],
  ["start: /(?i)a/", 1, 9, /inline flags \(\?…\) are not supported/],
  ["start: /a/l", 1, 8, /the regex flag "l" \(locale\) is not supported/],
  ["start: /[z-a]/", 1, 10, /the range "z-a" is out of order/],
  ["start: /(a/", 1, 9, /"\(" is not closed/],
  ["start: /a{3,2}/", 1, 10, /\{3,2\} has its maximum below its minimum/],
  ["start: /a\\q/", 1, 10, /unknown escape "\\q"/],
  ["start: /a\nb/", 1, 8, /spans lines only with the x \(verbose\) flag/],
  ["start: /()/", 1, 8, /the regex matches only empty text/],
  ['start: A\nA: "a" B\nB: A "b"', 2, 1, /terminal "A" refers to itself \(A → B → A\)/],
  ['start: A\nA: "a" b\nb: "b"', 2, 8, /terminal "A" refers to rule "b"/],
  ['start: A\nA: "a"?', 2, 1, /terminal "A" can match empty text/],
  ["start: /a*/", 1, 8, /terminal \/a\*\/ can match empty text/],
  ['%ignore x\nstart: "a"\nx: "b"', 1, 9, /%ignore refers to rule "x"/],
  ['%ignore " "?\nstart: "a"', 1, 1, /%ignore can match empty text/],
  ['start: a\na: b "x"\nb: a "y" | "z"', 3, 4, /rule "a" is left-recursive.*\(a → b → a\)/],
  ['start: a\na: a "x"', 2, 4, /rule "a" is left-recursive/],
  ['start: a+\na: "x"?', 1, 9, /the repeated item can match empty text/],
];

Deno.test("larkGrammar() refuses bad and unsupported grammars with the line and column", () => {
  for (const [source, line, column, message] of ERRORS) {
    assert.throws(() => larkGrammar(source), (err: unknown) => {
      assert.ok(err instanceof LarkError && err instanceof GbnfError, `${source}: ${err}`);
      assert.deepEqual([err.line, err.column], [line, column], `${source}: ${err.message}`);
      assert.match(err.message, message, source);
      assert.match(
        err.message,
        new RegExp(`^Cannot parse the Lark grammar at line ${line}, column ${column}: `),
      );
      return true;
    });
  }
});

Deno.test("larkGrammar() bounds a grammar's size and nesting", () => {
  assert.throws(() => larkGrammar(`start: ${'"a" '.repeat(MAX_ITEMS + 1)}`), /over 20000 items/);
  assert.throws(() => larkGrammar(`start: ${"(".repeat(100)}"a"${")".repeat(100)}`), /nest over 64 deep/);
  assert.throws(() => larkGrammar(`start: /${"(".repeat(100)}a${")".repeat(100)}/`), /groups nest over 64/);
  assert.throws(() => larkGrammar(`start: /${"a".repeat(MAX_ITEMS + 1)}/`), /over 20000 items/);
  const chain = Array.from({ length: 1100 }, (_, i) => `r${i}: r${i + 1} "x"`).join("\n");
  assert.throws(() => larkGrammar(`start: r0\n${chain}\nr1100: "y"`), /nest over 1000 deep/);
});
