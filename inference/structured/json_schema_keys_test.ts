import assert from "node:assert/strict";
import { compileJsonSchema } from "./json_schema.ts";
import { assertMasksAlong, assertRefused, verdict } from "../../tests/_walk.ts";

const int = { type: "integer" };
const str = { type: "string" };
const bool = { type: "boolean" };
type Verdict = ReturnType<typeof verdict>;

/** Each schema's texts and what the automaton must make of them. */
function check(cases: [unknown, [string, Verdict][]][]): void {
  for (const [schema, texts] of cases) {
    const g = compileJsonSchema(schema, "schema");
    for (const [text, want] of texts) {
      assert.equal(verdict(g, text), want, `${JSON.stringify(schema)}: ${text}`);
    }
  }
}

Deno.test("json schema: propertyNames limits a map's keys (Pydantic's dict[constr(pattern=…), V])", () => {
  check([
    [{ type: "object", additionalProperties: int, propertyNames: { pattern: "^[a-z]+$" } }, [
      ["{}", "complete"],
      ['{"abc": 1, "d": 2}', "complete"],
      ['{"ab1": 1}', "reject"],
      ['{"": 1}', "reject"],
      ['{"Ab": 1}', "reject"],
      ['{"ab": "x"}', "reject"], // values still follow additionalProperties
      ['{"ab', "partial"],
      ['{"ab"', "partial"],
      ['{"a\\u0062": 1}', "reject"], // no \u escapes in constrained keys
    ]],
    // Search semantics: unanchored, the pattern may match anywhere in the key.
    [{ type: "object", propertyNames: { pattern: "id" } }, [
      ['{"my_id_x": 1, "id": null}', "complete"],
      ['{"i": 1}', "reject"],
      ['{"xi', "partial"],
    ]],
    // Anchors bind to the top-level alternatives, as ECMA-262 has them.
    [{ additionalProperties: true, propertyNames: { pattern: "^a|b$" } }, [
      ['{"ax": 1, "xb": 2, "b": 3}', "complete"],
      ['{"xa": 1}', "reject"],
      ['{"bx": 1}', "reject"],
    ]],
    [{ additionalProperties: true, propertyNames: { pattern: "^a\\nb$" } }, [
      ['{"a\\nb": 1}', "complete"], // the escape decodes to the newline the pattern wants
      ['{"anb": 1}', "reject"],
    ]],
    [{ additionalProperties: bool, propertyNames: { minLength: 2, maxLength: 3 } }, [
      ['{"ab": true, "abc": false, "éé": true, "😀😀😀": true}', "complete"], // characters, not bytes
      ['{"a": true}', "reject"],
      ['{"abcd": true}', "reject"],
      ['{"😀😀😀😀": true}', "reject"],
    ]],
    [{ additionalProperties: int, propertyNames: { format: "date" } }, [
      ['{"2024-02-29": 1}', "complete"],
      ['{"2024-13-01": 1}', "reject"],
      ['{"today": 1}', "reject"],
    ]],
    // A format of numbers, or type string, leaves keys alone; another type allows none.
    [{ additionalProperties: int, propertyNames: { format: "int32", type: "string" } }, [[
      '{"x": 1}',
      "complete",
    ]]],
    [{ additionalProperties: int, propertyNames: { type: "integer" } }, [["{}", "complete"], [
      '{"1": 1}',
      "reject",
    ]]],
    [{ additionalProperties: int, propertyNames: false }, [["{}", "complete"], ['{"a": 1}', "reject"]]],
  ]);
});

Deno.test("json schema: a propertyNames enum allows exactly its names (Pydantic's dict[Literal[…], V])", () => {
  check([
    [{ type: "object", additionalProperties: int, propertyNames: { enum: ["a", "b", 3] } }, [
      ['{"a": 1, "b": 2}', "complete"],
      ['{"b": 2}', "complete"],
      ['{"c": 1}', "reject"],
      ['{"ab": 1}', "reject"],
      ['{"3": 1}', "reject"], // keys are strings: the number names none
    ]],
    [{ additionalProperties: int, propertyNames: { const: "k", title: "the key" } }, [
      ['{"k": 1}', "complete"],
      ['{"kk": 1}', "reject"],
    ]],
    // Beside listed names: other keys are the enum's names but those.
    [{ properties: { a: int }, additionalProperties: bool, propertyNames: { enum: ["a", "b", "c"] } }, [
      ['{"a": 1, "b": true, "c": false}', "complete"],
      ['{"b": true}', "complete"],
      ['{"a": 1, "a": true}', "reject"],
      ['{"a": 1, "d": true}', "reject"],
    ]],
    // Every name in the enum is listed: no other key at all.
    [{ properties: { a: int }, additionalProperties: bool, propertyNames: { enum: ["a"] } }, [
      ['{"a": 1}', "complete"],
      ['{"a": 1, "b": true}', "reject"],
    ]],
  ]);
});

Deno.test("json schema: beside properties, other keys satisfy propertyNames and are never a listed name", () => {
  check([
    [{ properties: { ab: int }, additionalProperties: bool, propertyNames: { pattern: "^a" } }, [
      ['{"ab": 1, "ac": true, "abc": false}', "complete"],
      ['{"ac": true}', "complete"],
      ['{"ab": 1, "ab": true}', "reject"],
      ['{"ab": 1, "b": true}', "reject"],
      ['{"ab": 1, "ab', "partial"], // abc may follow
      ['{"ab": 1, "ab"', "reject"],
    ]],
    // additionalProperties absent beside properties: no other keys, whatever propertyNames allows.
    [{ properties: { ab: int }, propertyNames: { maxLength: 5 } }, [
      ['{"ab": 1}', "complete"],
      ['{"ab": 1, "x": 1}', "reject"],
    ]],
  ]);
});

Deno.test("json schema: patternProperties with one schema gives other keys the patterns match", () => {
  check([
    [{ type: "object", patternProperties: { "^x_": int } }, [
      ["{}", "complete"],
      ['{"x_a": 1, "x_": 2}', "complete"],
      ['{"y": 1}', "reject"], // additionalProperties absent: as false
      ['{"x_a": "s"}', "reject"],
      ['{"ax_": 1}', "reject"],
    ]],
    [{
      properties: { name: str },
      required: ["name"],
      patternProperties: { "^n_": int },
      additionalProperties: false,
    }, [
      ['{"name": "a", "n_1": 2}', "complete"],
      ['{"n_1": 2}', "reject"],
      ['{"name": "a", "name": 2}', "reject"],
      ['{"name": "a", "x": 1}', "reject"],
    ]],
    // Several patterns of one schema: their union.
    [{ patternProperties: { "^a": int, "b$": int, "[0-9]": { type: "integer" } } }, [
      ['{"ax": 1, "xb": 2, "x9y": 3}', "complete"],
      ['{"xa": 1}', "reject"],
      ['{"ax": true}', "reject"],
    ]],
    [{ patternProperties: { "^[a-z]+$": int }, propertyNames: { maxLength: 2 } }, [
      ['{"ab": 1}', "complete"],
      ['{"abc": 1}', "reject"],
      ['{"A": 1}', "reject"],
    ]],
    [{ patternProperties: { "^x": false } }, [["{}", "complete"], ['{"x": 1}', "reject"]]],
    // A listed name the pattern matches is harmless when the pattern's schema adds nothing to its own.
    [{ properties: { x1: int }, patternProperties: { "^x": int } }, [
      ['{"x1": 1, "x2": 2}', "complete"],
      ['{"x1": 1, "x1": 2}', "reject"],
      ['{"x2": 2}', "complete"],
    ]],
    [{ properties: { x1: str }, patternProperties: { "^x": {} } }, [['{"x1": "s", "x2": [1]}', "complete"]]],
  ]);
});

Deno.test("json schema: propertyNames and patternProperties it cannot keep, or that contradict, name where they are", () => {
  const bad: [unknown, string][] = [
    [{ patternProperties: { "^x": int }, additionalProperties: str }, "schema.patternProperties"],
    [{ patternProperties: { "^x": int }, additionalProperties: true }, "schema.patternProperties"],
    [{ patternProperties: { "^x": int, "^y": str } }, "schema.patternProperties"],
    [{ properties: { x1: str }, patternProperties: { "^x": int } }, "schema.patternProperties"],
    [{ properties: { x1: str }, patternProperties: { "^x": false } }, "schema.patternProperties"],
    [{ patternProperties: ["^x"] }, "schema.patternProperties"],
    [{ patternProperties: { "(x": int } }, "schema.patternProperties"],
    [{ patternProperties: { "(?=x)": int } }, "schema.patternProperties"],
    [{ patternProperties: { "^x": { uniqueItems: true } } }, "schema.patternProperties.^x.uniqueItems"],
    [
      { additionalProperties: int, propertyNames: { anyOf: [{ pattern: "a" }] } },
      "schema.propertyNames.anyOf",
    ],
    [
      { additionalProperties: int, propertyNames: { $ref: "#/$defs/K" }, $defs: { K: str } },
      "schema.propertyNames.$ref",
    ],
    [{ additionalProperties: int, propertyNames: "a" }, "schema.propertyNames"],
    [{ properties: { A: int }, propertyNames: { pattern: "^[a-z]+$" } }, "schema.propertyNames"],
    [{ properties: { a: int }, propertyNames: { enum: ["b"] } }, "schema.propertyNames"],
    [{ additionalProperties: int, propertyNames: { pattern: "a^b" } }, "schema.propertyNames.pattern"],
    [{ additionalProperties: int, propertyNames: { pattern: 3 } }, "schema.propertyNames.pattern"],
    [
      { additionalProperties: int, propertyNames: { minLength: 3, maxLength: 2 } },
      "schema.propertyNames.minLength",
    ],
    [{ additionalProperties: int, propertyNames: { maxLength: 5000 } }, "schema.propertyNames.maxLength"],
    [{ additionalProperties: int, propertyNames: { format: "color" } }, "schema.propertyNames.format"],
    [{ additionalProperties: int, propertyNames: { enum: [] } }, "schema.propertyNames.enum"],
    [{ additionalProperties: int, propertyNames: { type: [] } }, "schema.propertyNames.type"],
    [
      { properties: { m: { additionalProperties: int, propertyNames: { not: {} } } } },
      "schema.properties.m.propertyNames.not",
    ],
    // A pattern whose DFA passes the state bound (an "a" 14 characters from the end): refused, not cut short.
    [{ additionalProperties: int, propertyNames: { pattern: "a[\\s\\S]{14}$" } }, "schema.propertyNames"],
  ];
  for (const [schema, param] of bad) assertRefused(schema, param);
});

Deno.test("json schema: a string pattern's anchors bind to its top-level alternatives, as RegExp's do", () => {
  const patterns = ["^a|b$", "^(a|b)$", "a|^b|c$", "^[|]$", "x\\|y", "^a\\\\$", "^a\\$"];
  const texts = ["a", "b", "c", "ab", "ba", "xa", "bx", "cx", "xc", "|", "x|y", "a\\", "a$", "a\\$", ""];
  for (const pattern of patterns) {
    const g = compileJsonSchema({ type: "string", pattern }, "schema");
    const re = new RegExp(pattern, "u");
    for (const t of texts) {
      const got = verdict(g, JSON.stringify(t)) === "complete";
      assert.equal(got, re.test(t), `${pattern} on ${JSON.stringify(t)}`);
    }
  }
});

/** Single bytes and tokens that cross a key's boundaries. */
const WORDS = [
  ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)),
  ...['{"', '":', '": ', '"a"', '"ab"', '"x_', '"b', ", ", '", "', "}", "1,", "12", "é", "😀"],
];

Deno.test("token mask: constrained keys allow exactly the ids whose bytes the automaton takes", () => {
  const runs: [unknown, string][] = [
    [
      { properties: { ab: int }, additionalProperties: int, propertyNames: { pattern: "^a" } },
      '{"ab": 1, "abc": 12}',
    ],
    [{ additionalProperties: int, propertyNames: { enum: ["a", "ab", "é"] } }, '{"ab": 1, "é": 12}'],
    [{ properties: { a: int }, patternProperties: { "^x_": int, "b$": int } }, '{"a": 1, "x_": 12, "ab": 1}'],
    [{ additionalProperties: int, propertyNames: { maxLength: 2 } }, '{"😀é": 1, "ab": 12}'],
  ];
  for (const [schema, text] of runs) assertMasksAlong(schema, text, WORDS);
});
