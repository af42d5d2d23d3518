import assert from "node:assert/strict";
import { gbnfGrammar } from "./gbnf.ts";
import { afterReasoning, type JsonGrammar, regexGrammar } from "./grammar.ts";
import { GrammarCache, packGrammar, unpackGrammar } from "./grammar_transfer.ts";
import { compileJsonSchema } from "./json_schema.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";

const enc = new TextEncoder();
const WORDS = [
  "{",
  "}",
  '"',
  "name",
  "kids",
  ":",
  ",",
  " ",
  "[",
  "]",
  "a",
  "b",
  "ab",
  "1",
  "2",
  "0",
  "-",
  "<think>",
  "</think>",
  "x",
];
const vocab = () => new TokenVocab(WORDS.map((w) => enc.encode(w)), WORDS.length + 1);

/** A person with a patterned name and a recursive list of children ($ref back to the root). */
const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", pattern: "^[ab]{1,3}$" },
    kids: { type: "array", items: { $ref: "#" }, maxItems: 2 },
  },
  required: ["name", "kids"],
  additionalProperties: false,
};

/** The masks a matcher meets along `text`, one per word, as sets of ids. */
function masksAlong(g: JsonGrammar, text: string[]): number[][] {
  const v = vocab();
  const m = new GrammarMatcher(g, v);
  const out: number[][] = [];
  for (const word of text) {
    const mask = m.mask([WORDS.length]);
    out.push([...Array(v.size).keys()].filter((id) => (mask[id >>> 5] >>> (id & 31)) & 1));
    assert.ok(m.accept(WORDS.indexOf(word)), `accepts ${JSON.stringify(word)}`);
  }
  return out;
}

// A two-level person, one word at a time (the words are WORDS'; none is a space).
const ANSWER = '{ " name " : " ab " , " kids " : [ { " name " : " b " , " kids " : [ ] } ] }'.split(" ");

Deno.test("a grammar crosses postMessage's structured clone whole: regexes, a $ref cycle, reasoning and GBNF", () => {
  const grammars = [
    compileJsonSchema(SCHEMA, "response_format"),
    afterReasoning(compileJsonSchema(SCHEMA, "response_format"), {
      open: "<think>",
      close: "</think>",
      opensInPrompt: false,
    }),
  ];
  for (const g of grammars) {
    const back = unpackGrammar(structuredClone(packGrammar(g)));
    assert.notEqual(back.id, g.id, "a new grammar id: masks are cached by it");
    assert.deepEqual(masksAlong(back, ANSWER), masksAlong(g, ANSWER));
  }
  const gbnf = gbnfGrammar('root ::= "a" ("b" | "x")+ "1"');
  const back = unpackGrammar(structuredClone(packGrammar(gbnf)));
  assert.deepEqual(masksAlong(back, ["a", "b", "x", "1"]), masksAlong(gbnf, ["a", "b", "x", "1"]));
});

Deno.test("a GrammarCache gives the requests of one schema one grammar, and another schema its own", () => {
  const cache = new GrammarCache(2);
  const send = (g: JsonGrammar) => cache.unpack(structuredClone(packGrammar(g)));
  // Each compilation has new node ids, as each request's has.
  const a = send(compileJsonSchema(SCHEMA, "response_format"));
  const again = send(compileJsonSchema(SCHEMA, "response_format"));
  assert.equal(again, a);
  const other = send(compileJsonSchema({ ...SCHEMA, required: ["name"] }, "response_format"));
  assert.notEqual(other, a);
  const regex = send(regexGrammar("a[b]+"));
  assert.equal(cache.size, 2, "at most `limit` kept");
  assert.equal(send(regexGrammar("a[b]+")), regex);
  assert.notEqual(send(compileJsonSchema(SCHEMA, "response_format")), a, "the oldest went first");
  assert.deepEqual(
    masksAlong(again, ANSWER),
    masksAlong(compileJsonSchema(SCHEMA, "response_format"), ANSWER),
  );
});
