import assert from "node:assert/strict";
import { compileJsonSchema } from "./json_schema.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";
import { assertRefused, verdict } from "../../tests/_walk.ts";

const enc = new TextEncoder();

const BOUNDED = {
  type: "object",
  properties: {
    age: { type: "integer", minimum: 0, maximum: 150 },
    ratio: { type: "number", exclusiveMinimum: 0, maximum: 1 },
    temps: { type: "array", items: { type: "number", minimum: -273.15 }, maxItems: 3 },
    step: { type: "integer", multipleOf: 5, exclusiveMaximum: 100 },
  },
  required: ["age"],
};

Deno.test("json schema: number bounds hold inside objects and arrays", () => {
  const g = compileJsonSchema(BOUNDED, "schema");
  const ok = [
    '{"age": 0}',
    '{"age": 150, "ratio": 1}',
    '{"age": 42, "ratio": 0.0001, "temps": [-273.15, 0, 1000.25], "step": 95}',
    '{"age":7,"temps":[ -273.1499 , 12.5 ],"step":-5}',
    '{\n  "age": 99,\n  "ratio": 0.5\n}',
  ];
  for (const text of ok) assert.equal(verdict(g, text), "complete", text);
  const bad = [
    '{"age": 151}',
    '{"age": -1}',
    '{"age": -0}',
    '{"age": 007}',
    '{"age": 1.5}',
    '{"age": 3, "ratio": 0}',
    '{"age": 3, "ratio": 1.0000001}',
    '{"age": 3, "ratio": -0.5}',
    '{"age": 3, "temps": [-273.16]}',
    '{"age": 3, "temps": [-274]}',
    '{"age": 3, "step": 100}',
    '{"age": 3, "step": 12}',
    '{"age": 3, "temps": [1e0]}', // no exponent under bounds
  ];
  for (const text of bad) assert.equal(verdict(g, text), "reject", text);
  // Prefixes: a number that may still grow into range is partial, one that cannot is refused at once.
  assert.equal(verdict(g, '{"age": 15'), "partial");
  assert.equal(verdict(g, '{"age": 16'), "partial"); // 16 itself is fine
  assert.equal(verdict(g, '{"age": 160'), "reject");
  assert.equal(verdict(g, '{"age": 1, "ratio": 0.'), "partial");
  assert.equal(verdict(g, '{"age": 1, "ratio": 1.'), "partial"); // 1.0, 1.00
  assert.equal(verdict(g, '{"age": 1, "ratio": 1.1'), "reject");
});

Deno.test("json schema: a bounded number at the top ends where its text may", () => {
  const small = compileJsonSchema({ type: "integer", minimum: 1, maximum: 12 }, "schema");
  assert.equal(verdict(small, "1"), "canEnd"); // or 10, 11, 12
  assert.equal(verdict(small, "2"), "complete"); // nothing extends it
  assert.equal(verdict(small, "12"), "complete");
  assert.equal(verdict(small, "13"), "reject");
  assert.equal(verdict(small, "0"), "reject");
  const drafts = [
    { type: "number", minimum: 2, exclusiveMinimum: true }, // draft 4
    { type: "number", exclusiveMinimum: 2 }, // 2019+
  ];
  for (const s of drafts) {
    const g = compileJsonSchema(s, "schema");
    assert.equal(verdict(g, "2"), "partial", JSON.stringify(s)); // 2.5 may follow
    assert.equal(verdict(g, "2.0"), "partial");
    assert.equal(verdict(g, "2.01"), "canEnd");
    assert.equal(verdict(g, "1.99"), "reject");
  }
  const implied = compileJsonSchema({ maximum: -1 }, "schema"); // a number, by its keyword
  assert.equal(verdict(implied, "-1"), "canEnd");
  assert.equal(verdict(implied, "0"), "reject");
  assert.equal(verdict(implied, '"x"'), "reject");
  const int32 = compileJsonSchema({ type: "integer", format: "int32" }, "schema");
  assert.equal(verdict(int32, "2147483647"), "complete");
  assert.equal(verdict(int32, "-2147483648"), "complete");
  assert.equal(verdict(int32, "2147483648"), "reject");
});

Deno.test("json schema: string formats hold inside objects", () => {
  const g = compileJsonSchema({
    type: "object",
    properties: {
      when: { type: "string", format: "date-time" },
      id: { type: ["string", "null"], format: "uuid" },
      mail: { type: "string", format: "email", maxLength: 12 },
    },
    required: ["when"],
  }, "schema");
  assert.equal(verdict(g, '{"when": "2024-02-29T13:45:00Z"}'), "complete");
  assert.equal(verdict(g, '{"when": "2023-02-29T13:45:00Z"}'), "reject");
  assert.equal(verdict(g, '{"when": "2024-13-01T00:00:00Z"}'), "reject");
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00+01:00", "id": null}'), "complete");
  assert.equal(
    verdict(g, '{"when": "2024-01-01T00:00:00Z", "id": "123e4567-e89b-12d3-a456-426614174000"}'),
    "complete",
  );
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z", "id": "123e4567"}'), "reject");
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z", "mail": "a.b@ex.org"}'), "complete");
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z", "mail": "a.b@example.org"}'), "reject"); // maxLength
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z", "mail": "a..b@ex.org"}'), "reject");
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z", "mail": "ab@ex"}'), "reject");
  assert.equal(verdict(g, '{"when": "2024\\u002d01-01T00:00:00Z"}'), "reject"); // no \u under a format
  assert.equal(verdict(g, '{"when": "2024-01-01T00:00:00Z'), "partial");
  // A string format leaves other types alone.
  const mixed = compileJsonSchema({ type: ["integer", "string"], format: "date" }, "schema");
  assert.equal(verdict(mixed, "12"), "canEnd");
  assert.equal(verdict(mixed, '"2024-01-31"'), "complete");
  assert.equal(verdict(mixed, '"2024-04-31"'), "reject");
});

Deno.test("json schema: bounds and formats it cannot enforce name where they are", () => {
  const bad: [unknown, string][] = [
    [{ type: "string", format: "iri" }, "schema.format"],
    [{ type: "string", format: 3 }, "schema.format"],
    [{ type: "string", format: "date", pattern: "^2" }, "schema.format"],
    [{ enum: [1, 2], format: "nope" }, "schema.format"],
    [{ type: "integer", minimum: 5, maximum: 4 }, "schema.minimum"],
    [{ type: "integer", exclusiveMinimum: 4, exclusiveMaximum: 5 }, "schema.exclusiveMinimum"],
    [{ type: "number", minimum: 4, exclusiveMaximum: 4 }, "schema.minimum"],
    [{ type: "number", exclusiveMaximum: true }, "schema.exclusiveMaximum"],
    [{ type: "number", maximum: 1e300 }, "schema.maximum"],
    [{ type: "number", minimum: null }, "schema.minimum"],
    [{ type: "integer", multipleOf: 3 }, "schema.multipleOf"],
    [{ type: "integer", multipleOf: 0 }, "schema.multipleOf"],
    [{ type: "number", multipleOf: 0.01, minimum: 0, maximum: 100 }, "schema.multipleOf"],
    [
      { type: "object", properties: { a: { type: "integer", multipleOf: 7, minimum: 0 } } },
      "schema.properties.a.multipleOf",
    ],
  ];
  for (const [schema, param] of bad) assertRefused(schema, param);
  // What is fine: draft 4's false, a multipleOf with both bounds, number formats.
  for (
    const ok of [
      { type: "number", minimum: 1, exclusiveMinimum: false },
      { type: "integer", multipleOf: 7, minimum: 0, maximum: 700 },
      { type: "number", format: "double" },
      { type: "integer", format: "int64", minimum: 0 },
    ]
  ) compileJsonSchema(ok, "schema");
});

/** A small vocabulary: every printable ASCII byte, and some multi-byte tokens a model would have. */
const WORDS = [
  ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)),
  '{"',
  '":',
  '": ',
  "age",
  "10",
  "15",
  "150",
  "151",
  "99",
  "-1",
  "0.",
  ".5",
  "e5",
  "},",
  "}",
  "2024",
  "-02-",
  "29",
  "T12",
  ":00Z",
];

Deno.test("token mask: the ids a bounded number allows are exactly those whose bytes stay in range", () => {
  const vocab = new TokenVocab(WORDS.map((w) => enc.encode(w)), WORDS.length + 1);
  const id = (w: string) => WORDS.indexOf(w);
  const has = (mask: Uint32Array, i: number) => ((mask[i >>> 5] >>> (i & 31)) & 1) === 1;
  const schema = {
    type: "object",
    properties: { age: { type: "integer", minimum: 0, maximum: 150 }, d: { type: "string", format: "date" } },
    required: ["age", "d"],
  };
  const g = compileJsonSchema(schema, "schema");
  const text = ['{"', "age", '": ', "15", "0", ",", " ", '"', "d", '":', '"', "2024", "-02-", "29", '"', "}"];
  const m = new GrammarMatcher(g, vocab);
  for (const [i, w] of text.entries()) {
    const mask = m.mask([]);
    // Brute force: the ids a copy of the matcher accepts.
    for (let t = 0; t < vocab.size; t++) {
      const copy = new GrammarMatcher(g, vocab);
      for (const p of text.slice(0, i)) assert.ok(copy.accept(id(p)));
      assert.equal(
        has(mask, t),
        copy.accept(t),
        `after ${JSON.stringify(text.slice(0, i).join(""))}: ${WORDS[t]}`,
      );
    }
    assert.ok(has(mask, id(w)), w);
    assert.ok(m.accept(id(w)), w);
  }
  assert.ok(m.complete);
  // At the number's start: digits, not "-", "-1" or an exponent; after "15", "0" but not "1" (151).
  const at = new GrammarMatcher(g, vocab);
  for (const w of ['{"', "age", '": ']) at.accept(id(w));
  const start = at.mask([]);
  assert.ok(has(start, id("150")) && has(start, id("99")) && has(start, id("0")));
  assert.ok(!has(start, id("-")) && !has(start, id("-1")) && !has(start, id("151")) && !has(start, id("0.")));
  at.accept(id("15"));
  const after15 = at.mask([]);
  assert.ok(has(after15, id("0")) && has(after15, id(",")) && has(after15, id(" ")));
  assert.ok(
    !has(after15, id("1")) && !has(after15, id(".5")) && !has(after15, id("e5")) && !has(after15, id("}")),
  );
});

Deno.test("json schema: a discriminated union (Pydantic's oneOf with an OpenAPI discriminator) compiles to its options", () => {
  const schema = {
    oneOf: [
      {
        type: "object",
        properties: { kind: { const: "cat" }, lives: { type: "integer" } },
        required: ["kind", "lives"],
      },
      {
        type: "object",
        properties: { kind: { const: "dog" }, good: { type: "boolean" } },
        required: ["kind", "good"],
      },
    ],
    discriminator: { propertyName: "kind", mapping: { cat: "#/$defs/Cat", dog: "#/$defs/Dog" } },
  };
  const g = compileJsonSchema(schema, "response_format.json_schema.schema");
  assert.equal(verdict(g, '{"kind": "cat", "lives": 9}'), "complete");
  assert.equal(verdict(g, '{"kind": "dog", "good": true}'), "complete");
  assert.equal(verdict(g, '{"kind": "cat", "good"'), "reject");
});
