import assert from "node:assert/strict";
import { compileJsonSchema } from "./json_schema.ts";
import { assertMasksAlong, assertRefused, verdict } from "../../tests/_walk.ts";

type Schema = boolean | { [key: string]: unknown };
const int = { type: "integer" };
const str = { type: "string" };
const bool = { type: "boolean" };
/** Pydantic's tuple[int, str] */
const PAIR = { type: "array", prefixItems: [int, str], minItems: 2, maxItems: 2 };
const ONE_OR_TWO_OF_THREE = {
  type: "object",
  properties: { a: int, b: str, c: bool },
  minProperties: 1,
  maxProperties: 2,
};
const BOOLS_AFTER = {
  properties: { a: int, b: str },
  required: ["a"],
  additionalProperties: bool,
  maxProperties: 3,
};
const INT_MAP = { type: "object", additionalProperties: int, minProperties: 1, maxProperties: 2 };
const NESTED = {
  type: "object",
  properties: {
    pt: { prefixItems: [int, int], items: false, minItems: 2 },
    tags: { type: "array", items: str, uniqueItems: false, maxItems: 2 },
  },
  required: ["pt"],
  additionalProperties: { prefixItems: [str], maxItems: 1 },
  maxProperties: 2,
};

Deno.test("json schema: prefixItems and items as a list, with minItems and maxItems", () => {
  const cases: [Schema, [string, ReturnType<typeof verdict>][]][] = [
    [PAIR, [
      ['[1, "a"]', "complete"],
      ["[1]", "reject"],
      ['[1, "a", 2]', "reject"],
      ['["a", 1]', "reject"],
      ["[]", "reject"],
      ["[1,", "partial"],
    ]],
    [{ prefixItems: [int, str] }, [
      ["[]", "complete"],
      ["[-3]", "complete"],
      ['[1, "a", true, {"k": [null]}]', "complete"], // items absent: anything after the prefix
      ['["a"]', "reject"],
      ["[1, 2]", "reject"],
    ]],
    [{ prefixItems: [int, str, bool], items: false, minItems: 1 }, [
      ["[]", "reject"],
      ["[1]", "complete"],
      ['[1, "a"]', "complete"],
      ['[1, "a", false]', "complete"],
      ['[1, "a", false, true]', "reject"],
    ]],
    [{ prefixItems: [int, str], items: bool, minItems: 4, maxItems: 5 }, [
      ['[1, "a", true]', "reject"],
      ['[1, "a", true, false]', "complete"],
      ['[1, "a", true, false, true]', "complete"],
      ['[1, "a", true, false, true, true]', "reject"],
      ['[1, "a", true, 2]', "reject"],
    ]],
    [{ prefixItems: [int, str, bool], maxItems: 1 }, [["[1]", "complete"], ['[1, "a"]', "reject"]]],
    [{ type: "array", items: [str, int], additionalItems: { type: "null" } }, [
      ['["a", 1, null, null]', "complete"],
      ['["a", 1, 2]', "reject"],
    ]],
    [{ type: "array", items: [str], additionalItems: false }, [
      ['["a"]', "complete"],
      ['["a", "b"]', "reject"],
    ]],
    // additionalItems is ignored beside a schema of items
    [{ type: "array", items: int, additionalItems: false }, [["[1, 2, 3]", "complete"]]],
    [{ type: "array", items: false }, [["[]", "complete"], ["[1]", "reject"]]],
    [{ type: "array", items: [], additionalItems: false }, [["[]", "complete"], ["[1]", "reject"]]],
    [{ type: "array", items: int, uniqueItems: false }, [["[1, 1]", "complete"]]], // constrains nothing
    [{ prefixItems: [{ prefixItems: [int, int], items: false, minItems: 2 }, str], items: false }, [
      ['[[1, 2], "a"]', "complete"],
      ['[[1], "a"]', "reject"],
      ['[[1, 2, 3], "a"]', "reject"],
    ]],
  ];
  for (const [schema, texts] of cases) {
    const g = compileJsonSchema(schema, "schema");
    for (const [text, want] of texts) {
      assert.equal(verdict(g, text), want, `${JSON.stringify(schema)}: ${text}`);
    }
  }
});

Deno.test("json schema: minProperties and maxProperties offer a key only while the bounds can be met", () => {
  const g = compileJsonSchema(ONE_OR_TWO_OF_THREE, "schema"); // a, b, c optional; 1..2 keys
  assert.equal(verdict(g, "{}"), "reject");
  assert.equal(verdict(g, '{"c": true}'), "complete");
  assert.equal(verdict(g, '{"a": 1, "c": true}'), "complete");
  assert.equal(verdict(g, '{"a": 1, "b": "x", "c": true}'), "reject");
  assert.equal(verdict(g, '{"a": 1, "b": "x",'), "reject"); // no comma where no key may follow
  const req = compileJsonSchema(
    { properties: { a: int, b: int, c: int }, required: ["c"], maxProperties: 2 },
    "s",
  );
  assert.equal(verdict(req, '{"a": 1, "b"'), "reject"); // b would leave no room for c
  assert.equal(verdict(req, '{"a": 1, "c": 3}'), "complete");
  assert.equal(verdict(req, '{"b": 1, "c": 3}'), "complete");
  const least = compileJsonSchema({
    properties: { a: int, b: int, c: int },
    required: ["a"],
    minProperties: 2,
  }, "s");
  assert.equal(verdict(least, '{"a": 1}'), "reject");
  assert.equal(verdict(least, '{"a": 1'), "partial");
  assert.equal(verdict(least, '{"a": 1, "c": 1}'), "complete");
  const last = compileJsonSchema({ properties: { a: int, b: int }, minProperties: 2 }, "s");
  assert.equal(verdict(last, '{"b"'), "reject"); // after b nothing is left to reach 2
  const map = compileJsonSchema(INT_MAP, "schema");
  assert.equal(verdict(map, "{}"), "reject");
  assert.equal(verdict(map, '{"k": 1}'), "complete");
  assert.equal(verdict(map, '{"k": 1, "j": 2}'), "complete");
  assert.equal(verdict(map, '{"k": 1, "j": 2, "i": 3}'), "reject");
  assert.equal(verdict(map, '{"k": 1, "j": 2,'), "reject");
  // Known limit: entries are counted as written, so a repeated key counts twice.
  assert.equal(
    verdict(compileJsonSchema({ type: "object", minProperties: 2 }, "s"), '{"k": 1, "k": 2}'),
    "complete",
  );
});

Deno.test("json schema: additionalProperties beside properties allows other keys after them, not listed names", () => {
  const g = compileJsonSchema(BOOLS_AFTER, "schema"); // a required, b optional, others boolean, ≤ 3 keys
  const cases: [string, ReturnType<typeof verdict>][] = [
    ['{"a": 1}', "complete"],
    ['{"a": 1, "x": true}', "complete"],
    ['{"a": 1, "b": "s", "x": true}', "complete"],
    ['{"a": 1, "x": true, "y": false}', "complete"],
    ['{"a": 1, "b": "s", "x": true, "y": false}', "reject"], // maxProperties
    ['{"a": 1, "x": true, "b": "s"}', "reject"], // listed keys come first
    ['{"x": true, "a": 1}', "reject"], // after the required ones
    ['{"a": 1, "b": true}', "reject"], // b is a string, and no other key may be named b
    ['{"a": 1, "a": true}', "reject"],
    ['{"a": 1, "x": 1}', "reject"], // other values are booleans
    ['{"a": 1, "ab": true, "": false}', "complete"], // a listed name's prefix or extension is another key
    ['{"a": 1, "\\u0078": true}', "reject"], // no \u escapes in other keys
    ['{"a": 1, "b\\n": true}', "complete"],
  ];
  for (const [text, want] of cases) assert.equal(verdict(g, text), want, text);
  const names = compileJsonSchema({ properties: { "é": int, "a\nb": int }, additionalProperties: {} }, "s");
  assert.equal(verdict(names, '{"é": 1, "e": 2}'), "complete");
  assert.equal(verdict(names, '{"e": 2, "é": 1}'), "reject");
  assert.equal(verdict(names, '{"a\\nb": 1, "a\\tb": 2}'), "complete");
  // The escape decodes to the listed name.
  assert.equal(verdict(names, '{"é": 1, "a\\nb": 1, "a\\nb": 2}'), "reject");
  // Absent or false beside properties: no other keys (OpenAI's strict mode).
  for (const extra of [{}, { additionalProperties: false }]) {
    const strict = compileJsonSchema({ properties: { a: int }, ...extra }, "s");
    assert.equal(verdict(strict, '{"a": 1, "x": 1}'), "reject");
    assert.equal(verdict(strict, '{"a": 1}'), "complete");
  }
});

Deno.test("json schema: array and object keywords it cannot enforce, or that contradict, name where they are", () => {
  const bad: [unknown, string][] = [
    [{ type: "array", uniqueItems: true }, "schema.uniqueItems"],
    [{ type: "array", uniqueItems: "yes" }, "schema.uniqueItems"],
    [
      { properties: { xs: { type: "array", items: int, uniqueItems: true } } },
      "schema.properties.xs.uniqueItems",
    ],
    [{ prefixItems: [int], items: [int] }, "schema.items"],
    [{ prefixItems: [int], additionalItems: false }, "schema.additionalItems"],
    [{ prefixItems: { type: "integer" } }, "schema.prefixItems"],
    [{ prefixItems: [int, { uniqueItems: true }] }, "schema.prefixItems[1].uniqueItems"],
    [{ prefixItems: [int], items: false, minItems: 2 }, "schema.minItems"],
    [{ type: "array", items: [int], additionalItems: false, minItems: 2 }, "schema.minItems"],
    [{ type: "array", contains: int }, "schema.contains"],
    [{ type: "string", contentEncoding: "base64" }, "schema.contentEncoding"],
    [{ type: "object", minProperties: 3, maxProperties: 2 }, "schema.minProperties"],
    [{ properties: { a: int, b: int }, required: ["a", "b"], maxProperties: 1 }, "schema.maxProperties"],
    [{ properties: { a: int, b: int }, minProperties: 3 }, "schema.minProperties"],
    [{ type: "object", additionalProperties: false, minProperties: 1 }, "schema.minProperties"],
    [{ type: "object", maxProperties: -1 }, "schema.maxProperties"],
    [
      { properties: { a: int }, additionalProperties: { uniqueItems: true } },
      "schema.additionalProperties.uniqueItems",
    ],
    [ // a key matching no pattern would take another schema than one that does
      { type: "object", patternProperties: { "^x": int }, additionalProperties: str },
      "schema.patternProperties",
    ],
    [ // other keys beside 200 long names: the names' trie would pass the DFA's state bound
      {
        properties: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`${i}`.padEnd(60, "x"), {}])),
        additionalProperties: true,
      },
      "schema.additionalProperties",
    ],
  ];
  for (const [schema, param] of bad) assertRefused(schema, param);
});

/** Single bytes and tokens that cross the new keywords' boundaries (a key's prefix, a tuple's comma). */
const WORDS = [
  ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)),
  ...[
    '{"',
    '":',
    '": ',
    '"a"',
    '"ab"',
    '"a":',
    '"b',
    "[1",
    ", ",
    '", "',
    '"]',
    "],",
    "}",
    "true",
    "1,",
    "12",
  ],
];

Deno.test("token mask: tuples, key counts and other keys allow exactly the ids whose bytes the automaton takes", () => {
  const runs: [Schema, string][] = [
    [{ prefixItems: [int, str, bool], items: false, minItems: 2 }, '[12, "ab", true]'],
    [
      { properties: { a: int, ab: str }, additionalProperties: bool, maxProperties: 3 },
      '{"a": 1, "ab": "x", "abc": true}',
    ],
    [ONE_OR_TWO_OF_THREE, '{"a": 1, "c": true}'],
    [NESTED, '{"pt": [1, 12], "a": ["b"]}'],
  ];
  for (const [schema, text] of runs) assertMasksAlong(schema, text, WORDS);
});
