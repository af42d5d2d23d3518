import assert from "node:assert/strict";
import { assertAcceptsExactlyValid, assertWalksValid, rng } from "../../tests/_walk.ts";
import { compileJsonSchema } from "./json_schema.ts";

type Schema = boolean | { [key: string]: unknown };
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const TYPE_OF: Record<string, (v: unknown) => boolean> = {
  object: isObj,
  string: (v) => typeof v === "string",
  integer: Number.isInteger,
  boolean: (v) => typeof v === "boolean",
};

/** The schemas of `patternProperties` whose pattern matches `key` (ECMA-262 search, as JSON Schema has it). */
function patternSchemas(s: Record<string, unknown>, key: string): Schema[] {
  return Object.entries((s.patternProperties ?? {}) as Record<string, Schema>)
    .filter(([p]) => new RegExp(p, "u").test(key))
    .map(([, sub]) => sub);
}

/**
 * JSON Schema validity for the keywords these tests use, read straight from the specification (keys and
 * values alike: `propertyNames` is a schema of the key as a string), plus what the grammar adds: listed keys
 * in schema order before the others, and beside `properties` or `patternProperties` no other keys unless
 * additionalProperties says so.
 */
function valid(s: Schema, v: unknown): boolean {
  if (typeof s === "boolean") return s;
  const same = (x: unknown) => JSON.stringify(x) === JSON.stringify(v);
  if ("const" in s && !same(s.const)) return false;
  if (s.enum && !(s.enum as unknown[]).some(same)) return false;
  const implied =
    ["properties", "additionalProperties", "propertyNames", "patternProperties"].some((k) => k in s)
      ? "object"
      : undefined;
  const type = s.type ?? implied;
  if (type && ![type].flat().some((t) => TYPE_OF[t as string](v))) return false;
  if (typeof v === "string") {
    const length = [...v].length;
    if (length < (s.minLength as number ?? 0) || length > (s.maxLength as number ?? Infinity)) return false;
    return s.pattern === undefined || new RegExp(s.pattern as string, "u").test(v);
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
  if (s.propertyNames !== undefined && !keys.every((k) => valid(s.propertyNames as Schema, k))) return false;
  const extra = (s.additionalProperties ?? !(s.properties || s.patternProperties)) as Schema;
  for (const k of keys) {
    // Every schema that applies to the key: its property's, each matching pattern's, else additionalProperties.
    const own = [...(Object.hasOwn(props, k) ? [props[k]] : []), ...patternSchemas(s, k)];
    if (!(own.length > 0 ? own : [extra]).every((sub) => valid(sub, v[k]))) return false;
  }
  const names = Object.keys(props);
  const rank = (k: string) => (names.includes(k) ? names.indexOf(k) : names.length);
  return keys.every((k, i) => i === 0 || rank(keys[i - 1]) <= rank(k));
}

const int = { type: "integer" };
const str = { type: "string" };
const bool = { type: "boolean" };
const SCHEMAS: Schema[] = [
  { type: "object", additionalProperties: int, propertyNames: { pattern: "^[a-z]+$" } },
  { additionalProperties: bool, propertyNames: { pattern: "id|^x", minLength: 2, maxLength: 4 } },
  { additionalProperties: int, propertyNames: { enum: ["a", "ab", "é", "x_1", 7] }, maxProperties: 3 },
  {
    properties: { ab: int, id: str },
    required: ["id"],
    additionalProperties: bool,
    propertyNames: { pattern: "^[a-z_]*$" },
  },
  { properties: { a: int }, additionalProperties: int, propertyNames: { enum: ["a", "b", "ab"] } },
  { properties: { "é": int }, additionalProperties: str, propertyNames: { minLength: 1, maxLength: 2 } },
  { type: "object", patternProperties: { "^x_": int } },
  {
    properties: { name: str },
    required: ["name"],
    patternProperties: { "^n_": int, "[0-9]$": int },
    additionalProperties: false,
    minProperties: 2,
  },
  { patternProperties: { "^[a-z]": bool }, propertyNames: { maxLength: 2 } },
  { properties: { x1: int }, patternProperties: { "^x|^b": int }, minProperties: 1 },
];

/** Keys around the schemas' constraints: listed names, their prefixes and extensions, long, short, Unicode. */
const KEYS = [
  ..."a b ab abc id my_id idx x x_ x_1 x1 x2 n_ n_1 name é éé a😀 aaaa b_x 1a A z9 ab_cd".split(" "),
  "",
  "a b",
  "a\nb",
];

/** Seeded random objects near a schema: listed keys, keys it allows and keys it does not, values near theirs. */
function sampler(seed: number) {
  const rand = rng(seed);
  const POOL = [0, 2, -1, "a", "", true, false, null, [], { a: 1 }];
  const value = (s: Schema): unknown => {
    if (typeof s === "boolean" || rand(8) === 0) return POOL[rand(POOL.length)];
    if (s.type === "integer") return rand(4) - 1;
    if (s.type === "string") return ["a", "", "x y"][rand(3)];
    if (s.type === "boolean") return rand(2) === 1;
    return POOL[rand(POOL.length)];
  };
  const sample = (s: Record<string, unknown>): Record<string, unknown> => {
    const props = (s.properties ?? {}) as Record<string, Schema>;
    const required = (s.required ?? []) as string[];
    const allowed = KEYS.filter((k) =>
      !Object.hasOwn(props, k) && valid((s.propertyNames ?? true) as Schema, k) &&
      (s.patternProperties === undefined || patternSchemas(s, k).length > 0)
    );
    const keys = [
      ...Object.keys(props).filter((k) => (required.includes(k) && rand(4) > 0) || rand(2) === 0),
      ...allowed.filter(() => rand(Math.max(2, allowed.length >> 1)) === 0),
      ...KEYS.filter(() => rand(KEYS.length * 2) === 0),
    ];
    if (rand(6) === 0) keys.reverse();
    const extra = (s.additionalProperties ?? true) as Schema;
    return Object.fromEntries(
      [...new Set(keys)].map((k) => [k, value(props[k] ?? patternSchemas(s, k)[0] ?? extra)]),
    );
  };
  return { rand, sample };
}

Deno.test("json schema: propertyNames and patternProperties accept exactly the valid objects in grammar order", () => {
  for (const schema of SCHEMAS) {
    const label = JSON.stringify(schema);
    const { sample } = sampler(5);
    const { values: [accepted, rejected] } = assertAcceptsExactlyValid(
      compileJsonSchema(schema, "schema"),
      label,
      {
        count: 1000,
        sample: () => sample(schema as Record<string, unknown>),
        valid: (v) => valid(schema, v),
      },
    );
    // Both sides are exercised: the test could fail either way.
    assert.ok(accepted >= 100 && rejected >= 100, `${label}: ${accepted} / ${rejected}`);
  }
});

Deno.test("json schema: every object a random walk completes under key constraints parses and validates", () => {
  for (const schema of SCHEMAS) {
    const { rand } = sampler(13);
    assertWalksValid(compileJsonSchema(schema, "schema"), JSON.stringify(schema), {
      walks: 60,
      maxLength: 300,
      closers: '"}',
      rand,
      min: 30,
      valid: (v) => valid(schema, v),
    });
  }
});
