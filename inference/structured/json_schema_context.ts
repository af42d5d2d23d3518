/**
 * What the parts of the JSON Schema compiler share: the error a bad schema raises, the view of the compiler
 * core (json_schema.ts) through which the keyword compilers (json_schema_collections.ts,
 * json_schema_scalars.ts) make nodes and compile subschemas, and small readers of keyword values. Apart from
 * the core so the keyword compilers can use it without importing the core, which imports them.
 */
import type { JsonNode } from "./grammar.ts";
import type { RegexDfa } from "./regex.ts";

/** A bad or unsupported schema; `param` is the request field it sits at (for the 400). */
export class SchemaError extends Error {
  readonly param: string;
  constructor(message: string, param: string) {
    super(message);
    this.name = "SchemaError";
    this.param = param;
  }
}

/** The compiler of one schema, as the keyword compilers use it. */
export interface SchemaContext {
  /** Compiles a subschema found at `path`, `depth` levels down. */
  compile(s: unknown, path: string, depth: number): JsonNode;
  /** Gives a node its id, counting it against the schema's bound on nodes. */
  node<T extends Omit<JsonNode, "id">>(n: T): T & { id: number };
  /** Any JSON value (one shared node graph per grammar). */
  anyValue(): JsonNode;
  /** each string format's DFA, shared by the strings of this schema that use it */
  readonly formats: Map<string, RegexDfa>;
}

/** A count keyword's value (`minItems`, `maxLength`, …): an integer ≥ 0, or `fallback` when absent. */
export function countKeyword(
  s: Record<string, unknown>,
  key: string,
  path: string,
  fallback: number,
): number {
  const v = s[key];
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || (v as number) < 0) {
    throw new SchemaError(`Invalid schema at ${path}: "${key}" must be an integer ≥ 0`, `${path}.${key}`);
  }
  return v as number;
}

/** Whether a schema value is a JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
