import assert from "node:assert/strict";
import { assertAcceptsExactlyValid, assertWalksValid, rng } from "../../tests/_walk.ts";
import { compileJsonSchema } from "./json_schema.ts";

type Schema = boolean | { [key: string]: unknown };
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const TYPE_OF: Record<string, (v: unknown) => boolean> = {
  object: isObj,
  array: Array.isArray,
  string: (v) => typeof v === "string",
  number: (v) => typeof v === "number",
  integer: Number.isInteger,
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
};

/**
 * JSON Schema validity for the keywords these tests use. `asWritten`: also what the grammar adds (a type its
 * keywords imply; listed keys in schema order before the others; beside `properties`, no other keys unless
 * additionalProperties says so).
 */
function valid(s: Schema, v: unknown, asWritten = false): boolean {
  if (typeof s === "boolean") return s;
  const ok = (sub: unknown, x: unknown) => valid(sub as Schema, x, asWritten);
  const same = (x: unknown) => JSON.stringify(x) === JSON.stringify(v);
  if ("const" in s && !same(s.const)) return false;
  if (s.enum && !(s.enum as unknown[]).some(same)) return false;
  const implied = ["properties", "additionalProperties", "minProperties", "maxProperties"].some((k) => k in s)
    ? "object"
    : ["items", "prefixItems", "minItems", "maxItems"].some((k) => k in s)
    ? "array"
    : undefined;
  const type = s.type ?? (asWritten ? implied : undefined);
  if (type && ![type].flat().some((t) => TYPE_OF[t as string](v))) return false;
  if (Array.isArray(v)) {
    const tuple = Array.isArray(s.items);
    const prefix = (tuple ? s.items : s.prefixItems ?? []) as Schema[];
    const after = (tuple ? s.additionalItems : s.items) ?? true;
    if (v.length < (s.minItems as number ?? 0) || v.length > (s.maxItems as number ?? Infinity)) return false;
    return v.every((x, k) => ok(k < prefix.length ? prefix[k] : after, x));
  }
  if (!isObj(v)) return true;
  const props = (s.properties ?? {}) as Record<string, Schema>;
  const keys = Object.keys(v);
  if (
    keys.length < (s.minProperties as number ?? 0) || keys.length > (s.maxProperties as number ?? Infinity)
  ) {
    return false;
  }
  if (((s.required ?? []) as string[]).some((r) => !(r in v))) return false;
  const extra = s.additionalProperties ?? !(asWritten && s.properties);
  if (!keys.every((k) => ok(Object.hasOwn(props, k) ? props[k] : extra, v[k]))) return false;
  const names = Object.keys(props);
  const rank = (k: string) => (names.includes(k) ? names.indexOf(k) : names.length);
  return !asWritten || keys.every((k, i) => i === 0 || rank(keys[i - 1]) <= rank(k));
}

const int = { type: "integer" };
const str = { type: "string" };
const bool = { type: "boolean" };
const SCHEMAS: Schema[] = [
  { type: "array", prefixItems: [int, str], minItems: 2, maxItems: 2 }, // Pydantic's tuple[int, str]
  { prefixItems: [int, str], items: bool, minItems: 1 },
  { type: "array", items: [str, int, { type: "null" }], additionalItems: false, minItems: 1 }, // draft 4
  { type: "array", items: [int], additionalItems: str, maxItems: 3 },
  { prefixItems: [{ const: 1 }, { const: "a" }, bool], maxItems: 2 },
  { prefixItems: [int, int], items: false },
  {
    type: "object",
    properties: { a: int, b: str, c: bool },
    required: ["b"],
    minProperties: 2,
    maxProperties: 2,
  },
  { type: "object", properties: { a: int, b: str, c: bool }, minProperties: 1, maxProperties: 2 },
  { properties: { a: int, b: int, c: int }, required: ["c"], maxProperties: 2 },
  { properties: { a: int, b: str }, required: ["a"], additionalProperties: bool, maxProperties: 3 },
  { properties: { a: int, ab: str }, additionalProperties: true, minProperties: 2 },
  { type: "object", additionalProperties: int, minProperties: 1, maxProperties: 2 },
  {
    type: "object",
    properties: {
      pt: { prefixItems: [int, int], items: false, minItems: 2 },
      tags: { type: "array", items: str, uniqueItems: false, maxItems: 2 },
    },
    required: ["pt"],
    additionalProperties: { prefixItems: [str], maxItems: 1 },
    maxProperties: 2,
  },
];

/** Seeded random values near a schema: mostly of its shape, with lengths and keys around its bounds. */
function sampler(seed: number) {
  const rand = rng(seed);
  const POOL = [0, 2, -1, 1.5, "a", "", "x y", true, false, null, [], {}, [1, "a"], { a: 1 }];
  const sample = (s: Schema, depth: number): unknown => {
    if (typeof s === "boolean" || rand(20) === 0 || depth > 3) return POOL[rand(POOL.length)];
    if ("const" in s) return s.const;
    const type = s.type ?? (s.properties || s.additionalProperties ? "object" : "array");
    if (type === "integer") return rand(4) - 1;
    if (type === "string") return ["a", "", "x y"][rand(3)];
    if (type === "boolean") return rand(2) === 1;
    if (type === "null") return null;
    if (type === "array") {
      const tuple = Array.isArray(s.items);
      const prefix = (tuple ? s.items : s.prefixItems ?? []) as Schema[];
      const after = ((tuple ? s.additionalItems : s.items) ?? true) as Schema;
      const lo = (s.minItems ?? 0) as number;
      const hi = Math.min((s.maxItems ?? Infinity) as number, prefix.length + (after === false ? 0 : 2));
      const length = rand(2) === 0 && lo <= hi ? lo + rand(hi - lo + 1) : rand(prefix.length + 3);
      return Array.from({ length }, (_, k) => sample(prefix[k] ?? after, depth + 1));
    }
    const props = (s.properties ?? {}) as Record<string, Schema>;
    const required = (s.required ?? []) as string[];
    const keys = [
      ...Object.keys(props).filter((k) => (required.includes(k) && rand(2) === 0) || rand(3) > 0),
      ...["x", "a", "b", "y"].filter(() => rand(4) === 0),
    ];
    if (rand(4) === 0) keys.reverse();
    const extra = (s.additionalProperties ?? true) as Schema;
    return Object.fromEntries([...new Set(keys)].map((k) => [k, sample(props[k] ?? extra, depth + 1)]));
  };
  return { rand, sample };
}

Deno.test("json schema: tuples, key counts and other keys accept exactly the valid texts in grammar order", () => {
  for (const schema of SCHEMAS) {
    const label = JSON.stringify(schema);
    const { sample } = sampler(7);
    const { texts: [accepted, rejected] } = assertAcceptsExactlyValid(
      compileJsonSchema(schema, "schema"),
      label,
      {
        count: 1500,
        sample: () => sample(schema, 0),
        valid: (v) => valid(schema, v, true),
      },
    );
    // Both sides are exercised: the test could fail either way.
    assert.ok(accepted >= 200 && rejected >= 200, `${label}: ${accepted} / ${rejected}`);
  }
});

Deno.test("json schema: every text a random walk of the automaton completes parses and validates", () => {
  for (const schema of SCHEMAS) {
    const { rand } = sampler(11);
    assertWalksValid(compileJsonSchema(schema, "schema"), JSON.stringify(schema), {
      walks: 60,
      maxLength: 400,
      closers: '"]}',
      rand,
      min: 30,
      valid: (v) => valid(schema, v),
    });
  }
});
