import assert from "node:assert/strict";
import { exceptTextsDfa, intersectDfas, lengthDfa, onlyTextsDfa, RegexDfa } from "./regex.ts";
import { RegexError } from "./regex_nfa.ts";
import { dfaMatches } from "../../tests/_walk.ts";

const enc = new TextEncoder();

const PATTERNS = [
  "[0-9]{3}-[0-9]{4}",
  "(yes|no|maybe)",
  "\\d+(\\.\\d{1,2})?",
  "[A-Z][a-z]*( [A-Z][a-z]*)*",
  "a{2,4}b?",
  "(ab|a)*c",
  "[^,\\n]+(,[^,\\n]+)*",
  "\\w+@\\w+\\.(com|org)",
  ".{0,3}é+",
  "(?:x|y)+z{0,}",
  "^\\s*[-+]?\\d+\\s*$",
  "colou?r",
  "[a-c\\d_]{2}",
  "😀|😀😀",
];

const SAMPLES = [
  "",
  "555-1234",
  "55-1234",
  "yes",
  "no",
  "maybe",
  "yess",
  "3",
  "3.14",
  "3.141",
  "12.",
  "Hello World",
  "hello",
  "Hello world",
  "aa",
  "aaaab",
  "aaaaa",
  "aab",
  "c",
  "abac",
  "ababc",
  "aac",
  "x,y,z",
  "x,,y",
  "a\nb",
  "me@ex.com",
  "me@ex.net",
  "abcé",
  "abcdé",
  "éé",
  "xyxyz",
  "xyzzz",
  "z",
  "  -42 ",
  "+7",
  "4 2",
  "color",
  "colour",
  "colouur",
  "a1",
  "_c",
  "ad",
  "😀",
  "😀😀",
  "😀😀😀",
];

Deno.test("regex: the DFA accepts exactly what JavaScript's RegExp matches whole", () => {
  for (const p of PATTERNS) {
    const dfa = new RegexDfa(p);
    const re = new RegExp(`^(?:${p.replace(/^\^/, "").replace(/\$$/, "")})$`, "u");
    for (const s of SAMPLES) assert.equal(dfaMatches(dfa, s), re.test(s), `${p} on ${JSON.stringify(s)}`);
  }
});

Deno.test("regex: what it cannot compile is an error naming it", () => {
  for (const p of ["(a", "a)", "[a-", "*a", "a{3,2}", "(?=a)", "\\1", "a\\bb", "\\p{L}", "a^b", "x{1001}"]) {
    assert.throws(() => new RegexDfa(p), RegexError, p);
  }
});

Deno.test("regex: a match nothing can extend has no exits", () => {
  const dfa = new RegexDfa("(yes|no)");
  let d = 0;
  for (const b of enc.encode("yes")) d = dfa.step(d, b);
  assert.ok(dfa.accepting(d) && !dfa.hasExits(d));
  const open = new RegexDfa("a+");
  assert.ok(open.hasExits(open.step(0, 0x61)));
});

Deno.test("exceptTextsDfa(): every text but the listed ones, byte for byte", () => {
  const names = ["a", "ab", "abc", "b", "é", "😀x", ""];
  const dfa = exceptTextsDfa(names);
  const probes = [...names, "abcd", "ac", "ba", "e", "é😀", "😀", "😀xx", "x", "\u0000", "aab"];
  for (const text of probes) assert.equal(dfaMatches(dfa, text), !names.includes(text), JSON.stringify(text));
  assert.equal(dfaMatches(exceptTextsDfa(["a"]), ""), true);
  // A text that leaves the trie takes any bytes after it, invalid UTF-8 too (the string frame checks that).
  let d = dfa.step(0, 0xff);
  for (const b of [0x00, 0xff, 0x61]) d = dfa.step(d, b);
  assert.ok(d >= 0 && dfa.accepting(d));
});

Deno.test("onlyTextsDfa(), lengthDfa(), intersectDfas(): exactly the texts their definitions give", () => {
  const names = ["a", "ab", "é", "😀x", ""];
  const probes = [...names, "b", "abc", "e", "😀", "aa", "éé", "abcd", "a😀", "😀😀😀", "\n"];
  const only = onlyTextsDfa(names);
  const short = lengthDfa(2, 3), long = lengthDfa(1, Infinity);
  const both = intersectDfas("a, not ab, 2 or 3 characters", [
    exceptTextsDfa(["ab"]),
    new RegexDfa("a.*"),
    short,
  ])!;
  for (const t of probes) {
    const n = [...t].length;
    assert.equal(dfaMatches(only, t), names.includes(t), `only ${JSON.stringify(t)}`);
    assert.equal(dfaMatches(short, t), n >= 2 && n <= 3, `2..3 ${JSON.stringify(t)}`);
    assert.equal(dfaMatches(long, t), n >= 1, `1.. ${JSON.stringify(t)}`);
    const want = t !== "ab" && /^a.*$/u.test(t) && n >= 2 && n <= 3;
    assert.equal(dfaMatches(both, t), want, `both ${JSON.stringify(t)}`);
  }
  assert.equal(intersectDfas("none", [new RegexDfa("a+"), new RegexDfa("b+")]), null);
  // Only states that still lead to a match are kept: "c" could go on in one DFA but never in both.
  const trimmed = intersectDfas("ab", [new RegexDfa("ab|cd"), new RegexDfa("[a-c]b*")])!;
  assert.equal(trimmed.step(0, 0x63), -1);
  assert.ok(dfaMatches(trimmed, "ab") && !dfaMatches(trimmed, "cd"));
  assert.throws(() => lengthDfa(0, 5000), RegexError);
});
