/**
 * JSON Schema → the grammar the byte automaton (json_automaton.ts) walks: a graph of {@link JsonNode}s.
 *
 * What a schema may say, and what it means here (OpenAI's structured outputs in strict mode, which vLLM's
 * xgrammar backend also follows):
 * - `type` (one name or a list), `enum`, `const`, `anyOf` / `oneOf` (both as "any of": the options are
 *   not checked for exclusivity), a one-element `allOf`, `$ref` to `#`, `#/$defs/…` or `#/definitions/…`
 *   (recursive schemas work).
 * - objects: `properties` come out in the schema's order, each `required` one always, the others may be
 *   left out. Other keys only where `additionalProperties` is true or a schema: then after the listed ones,
 *   any number of them, never a listed name (absent, as false, means none whenever properties are listed, as
 *   in OpenAI's strict mode and xgrammar's strict mode, so a model cannot wander off into keys nobody asked
 *   for). Without `properties`, any string keys with values of `additionalProperties` (a schema; absent or
 *   true: any JSON value; false: none, so `{}`). `propertyNames` (`pattern`, `format`, `minLength`,
 *   `maxLength`, `enum`, `const`, `type`) limits the other keys' names, and the listed names must satisfy it.
 *   `patternProperties` beside `additionalProperties` false or absent: other keys are those a pattern matches
 *   (search semantics, as `pattern`), their values of its schema; several patterns must share one schema.
 *   Other keys are never a listed name; their names are the intersection of these constraints
 *   (json_schema_keys.ts). `minProperties` / `maxProperties` bound the keys written (optional ones are
 *   offered only while the bounds can still be met). Other keys are not kept apart from each other: a map or
 *   its extra keys may repeat a key (JSON.parse keeps the last), as no grammar can remember every key.
 * - arrays: `prefixItems` (tuples; drafts 4–2019: `items` as a list), then `items` for the rest
 *   (`additionalItems` beside a list; false: no more items), `minItems`, `maxItems` (counting the prefix
 *   too: a prefix item past minItems is optional), `uniqueItems: false`. strings: `minLength`, `maxLength`
 *   (in characters), `pattern` (search semantics, as ECMA-262), or `format` (string_formats.ts: date-time,
 *   date, time, duration, uuid, email, hostname, ipv4, ipv6, uri; not beside `pattern`).
 * - numbers: JSON numbers; `integer`: no fraction or exponent. `minimum`, `maximum`, `exclusiveMinimum`,
 *   `exclusiveMaximum` (numbers, or draft 4's booleans) and `multipleOf` make the number a regex of the texts
 *   in range (numeric_range.ts: no exponent then); OpenAPI's `format` int32 and int64 bound integers, float
 *   and double are accepted. As JSON Schema has it, a format of one type leaves values of other types alone.
 * - Annotations (`title`, `description`, `default`, `examples`, `$schema`, `$id`, `$comment`, `deprecated`,
 *   `readOnly`, `writeOnly`, `strict`, `nullable` with a type list, OpenAPI's `discriminator` beside `oneOf`) are
 *   ignored.
 * - Any other keyword that would constrain values (`uniqueItems: true`, `contains`, `contentEncoding`, …),
 *   other keywords inside `propertyNames` (`anyOf`, `$ref`, …), `patternProperties` that one schema of other
 *   keys cannot express (patterns with different schemas, beside `additionalProperties` other than false, or
 *   matching a listed name whose value would then have to follow both schemas), an unknown `format`, and
 *   bounds the regex cannot take (numeric_range.ts) are refused with an error naming where they sit, rather
 *   than silently producing output that breaks them.
 * Output is the canonical form: listed keys as JSON.stringify writes them (other keys beside them, or under
 * `propertyNames` or `patternProperties`, have no `\u` escapes: the DFA of their names reads decoded
 * characters, as a pattern does), literals (enum, const, true, false, null) exactly as JSON.stringify writes
 * them.
 *
 * Here: the compiler core (the keywords every schema may have, `$ref`s, combinators, dispatch by type). The
 * keywords of objects and arrays: json_schema_collections.ts; of strings and numbers: json_schema_scalars.ts;
 * what they share: json_schema_context.ts.
 */
import { grammarOf, type JsonGrammar, type JsonNode, makeNode } from "./grammar.ts";
import { compileArray, compileObject } from "./json_schema_collections.ts";
import { isObject, type SchemaContext, SchemaError } from "./json_schema_context.ts";
import { compileNumber, compileString } from "./json_schema_scalars.ts";
import type { RegexDfa } from "./regex.ts";
import { isKnownFormat, NUMBER_FORMATS, stringFormatRegex } from "./string_formats.ts";

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "strict",
  "nullable",
  // OpenAPI's hint beside oneOf/anyOf (Pydantic's discriminated unions): the options themselves constrain.
  "discriminator",
  "$defs",
  "definitions",
]);
const HANDLED = new Set([
  "pattern",
  "type",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
  "properties",
  "required",
  "additionalProperties",
  "propertyNames",
  "patternProperties",
  "minProperties",
  "maxProperties",
  "items",
  "prefixItems",
  "additionalItems",
  "minItems",
  "maxItems",
  "uniqueItems",
  "minLength",
  "maxLength",
  "format",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "multipleOf",
]);
/** Keywords that make a schema without a type one of objects, or of arrays. */
const OBJECT_KEYWORDS = [
  "properties",
  "additionalProperties",
  "propertyNames",
  "patternProperties",
  "minProperties",
  "maxProperties",
];
const ARRAY_KEYWORDS = ["items", "prefixItems", "minItems", "maxItems"];
/** Keywords of numbers (besides format). */
const NUMERIC = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"];
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];
/** Deepest schema nesting compiled (a bound on work for what a client sends). */
const MAX_DEPTH = 64;
/** Most nodes one schema may compile to. */
const MAX_NODES = 10_000;
/**
 * Most values of one enum and options of one anyOf: every alternative is a branch the mask walk (token_mask.ts)
 * carries along each byte, on the scheduler's loop.
 */
const MAX_ALTERNATIVES = 256;

const encoder = new TextEncoder();

/**
 * Compiles a JSON Schema.
 * @param schema the parsed schema
 * @param param the request field it came from (error messages name paths under it)
 * @returns the grammar
 * @throws SchemaError naming the first unsupported or malformed part
 */
export function compileJsonSchema(schema: unknown, param: string): JsonGrammar {
  return grammarOf(compileSchemaNode(schema, param));
}

/** The root node of a schema (to combine with others: grammar.ts); throws as compileJsonSchema does. */
export function compileSchemaNode(schema: unknown, param: string): JsonNode {
  return new Compiler(schema, param).root();
}

/** The grammar of `response_format: {"type": "json_object"}`: any JSON object. */
export function jsonObjectGrammar(): JsonGrammar {
  return compileJsonSchema({ type: "object" }, "response_format");
}

class Compiler implements SchemaContext {
  #made = 0;
  #root: unknown;
  #param: string;
  #refs = new Map<string, JsonNode & { kind: "ref" }>();
  #pending: [path: string, node: JsonNode & { kind: "ref" }][] = [];
  #any: JsonNode | null = null;
  readonly formats = new Map<string, RegexDfa>();

  constructor(root: unknown, param: string) {
    this.#root = root;
    this.#param = param;
  }

  root(): JsonNode {
    const root = this.compile(this.#root, this.#param, 0);
    // Resolve refs (each compiled once, so recursive schemas close into cycles).
    while (this.#pending.length > 0) {
      const [path, ref] = this.#pending.pop()!;
      ref.to = this.compile(this.#lookup(path), `${this.#param} $ref "${path}"`, 0);
    }
    this.#checkProductive(root);
    return root;
  }

  node<T extends Omit<JsonNode, "id">>(n: T): T & { id: number } {
    if (++this.#made > MAX_NODES) {
      throw new SchemaError(`Cannot compile the schema: more than ${MAX_NODES} nodes`, this.#param);
    }
    return makeNode(n);
  }

  compile(s: unknown, path: string, depth: number): JsonNode {
    if (depth > MAX_DEPTH) {
      throw new SchemaError(`Cannot compile the schema: nested deeper than ${MAX_DEPTH}`, path);
    }
    if (s === true) return this.anyValue();
    if (!isObject(s)) throw new SchemaError(`Invalid schema at ${path}: expected an object`, path);
    for (const key of Object.keys(s)) {
      if (!HANDLED.has(key) && !ANNOTATIONS.has(key)) {
        throw new SchemaError(`Unsupported schema keyword "${key}" at ${path}`, `${path}.${key}`);
      }
    }
    if (s.uniqueItems !== undefined && s.uniqueItems !== false) {
      // false constrains nothing; true cannot be kept by a grammar (it would have to remember every item)
      throw new SchemaError(
        s.uniqueItems === true
          ? `Unsupported schema keyword "uniqueItems" at ${path}: distinct items cannot be enforced`
          : `Invalid schema at ${path}: "uniqueItems" must be a boolean`,
        `${path}.uniqueItems`,
      );
    }
    if (s.format !== undefined && (typeof s.format !== "string" || !isKnownFormat(s.format))) {
      throw new SchemaError(`Unsupported format ${JSON.stringify(s.format)} at ${path}`, `${path}.format`);
    }
    if (s.$ref !== undefined) {
      if (typeof s.$ref !== "string") throw new SchemaError(`Invalid $ref at ${path}`, `${path}.$ref`);
      const others = Object.keys(s).filter((k) => HANDLED.has(k) && k !== "$ref");
      if (others.length > 0) {
        throw new SchemaError(`Unsupported schema at ${path}: "$ref" beside "${others[0]}"`, path);
      }
      return this.#ref(s.$ref, `${path}.$ref`);
    }
    const parts: JsonNode[] = [];
    if (s.allOf !== undefined) {
      if (!Array.isArray(s.allOf) || s.allOf.length !== 1) {
        throw new SchemaError(
          `Unsupported schema at ${path}: "allOf" with other than one schema`,
          `${path}.allOf`,
        );
      }
      parts.push(this.compile(s.allOf[0], `${path}.allOf[0]`, depth + 1));
    }
    for (const key of ["anyOf", "oneOf"] as const) {
      if (s[key] === undefined) continue;
      const list = s[key];
      if (!Array.isArray(list) || list.length === 0) {
        throw new SchemaError(
          `Invalid schema at ${path}: "${key}" must be a non-empty array`,
          `${path}.${key}`,
        );
      }
      if (list.length > MAX_ALTERNATIVES) {
        throw new SchemaError(
          `Unsupported schema at ${path}: more than ${MAX_ALTERNATIVES} "${key}" options`,
          `${path}.${key}`,
        );
      }
      parts.push(
        this.node({
          kind: "anyOf",
          options: list.map((o, i) => this.compile(o, `${path}.${key}[${i}]`, depth + 1)),
        }),
      );
    }
    const own = this.#own(s, path, depth);
    if (own) parts.push(own);
    if (parts.length > 1) {
      throw new SchemaError(
        `Unsupported schema at ${path}: combine "anyOf"/"oneOf"/"allOf" with nothing else`,
        path,
      );
    }
    return parts[0] ?? this.anyValue();
  }

  /** The node of a schema's own keywords (type, enum, const and their refinements), or null if none. */
  #own(s: Record<string, unknown>, path: string, depth: number): JsonNode | null {
    if (s.const !== undefined || s.enum !== undefined) {
      const values = s.const !== undefined ? [s.const] : s.enum;
      if (!Array.isArray(values) || values.length === 0) {
        throw new SchemaError(`Invalid schema at ${path}: "enum" must be a non-empty array`, `${path}.enum`);
      }
      if (values.length > MAX_ALTERNATIVES) {
        throw new SchemaError(
          `Unsupported schema at ${path}: more than ${MAX_ALTERNATIVES} "enum" values`,
          `${path}.enum`,
        );
      }
      const texts = [...new Set(values.map((v) => JSON.stringify(v)))].map((t) => encoder.encode(t));
      return this.node({ kind: "literal", texts });
    }
    let types: string[];
    if (s.type === undefined) {
      const implied = OBJECT_KEYWORDS.some((k) => k in s)
        ? "object"
        : ARRAY_KEYWORDS.some((k) => k in s)
        ? "array"
        : ["minLength", "maxLength", "pattern"].some((k) => k in s) || stringFormatRegex(s.format as string)
        ? "string"
        : NUMERIC.some((k) => k in s) || Object.hasOwn(NUMBER_FORMATS, s.format as string)
        ? "number"
        : null;
      if (!implied) return null;
      types = [implied];
    } else {
      types = Array.isArray(s.type) ? s.type : [s.type];
      if (types.length === 0 || types.some((t) => typeof t !== "string" || !TYPES.includes(t))) {
        throw new SchemaError(
          `Invalid schema at ${path}: "type" must be one of ${TYPES.join(", ")} (or a list of them)`,
          `${path}.type`,
        );
      }
    }
    const options = [...new Set(types)].map((t) => this.#typed(t, s, path, depth));
    return options.length === 1 ? options[0] : this.node({ kind: "anyOf", options });
  }

  #typed(type: string, s: Record<string, unknown>, path: string, depth: number): JsonNode {
    switch (type) {
      case "object":
        return compileObject(this, s, path, depth);
      case "array":
        return compileArray(this, s, path, depth);
      case "string":
        return compileString(this, s, path);
      case "number":
      case "integer":
        return compileNumber(this, s, type === "integer", path);
      case "boolean":
        return this.node({ kind: "literal", texts: [encoder.encode("true"), encoder.encode("false")] });
      default:
        return this.node({ kind: "literal", texts: [encoder.encode("null")] });
    }
  }

  /** Any JSON value (one shared node graph per grammar). */
  anyValue(): JsonNode {
    if (this.#any) return this.#any;
    const any = this.node({ kind: "anyOf", options: [] as JsonNode[] });
    this.#any = any;
    any.options.push(
      this.node({ kind: "object", props: [], rest: any, restKey: null, minProps: 0, maxProps: Infinity }),
      this.node({ kind: "array", prefix: [], items: any, minItems: 0, maxItems: Infinity }),
      this.node({ kind: "string", minLength: 0, maxLength: Infinity, pattern: null }),
      this.node({ kind: "number", integer: false }),
      this.node({ kind: "literal", texts: ["true", "false", "null"].map((t) => encoder.encode(t)) }),
    );
    return any;
  }

  #ref(ref: string, param: string): JsonNode {
    if (!(ref === "#" || ref.startsWith("#/"))) {
      throw new SchemaError(`Unsupported $ref "${ref}": only references into this schema ("#/…")`, param);
    }
    let node = this.#refs.get(ref);
    if (!node) {
      this.#lookup(ref, param); // fail now, at the field that names it
      node = this.node({ kind: "ref", to: null });
      this.#refs.set(ref, node);
      this.#pending.push([ref, node]);
    }
    return node;
  }

  /** The schema a "#/a/b" pointer names. */
  #lookup(ref: string, param = this.#param): unknown {
    let at: unknown = this.#root;
    for (const raw of ref.slice(2).split("/").filter((p) => p !== "")) {
      const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
      if (!isObject(at) || !(key in at)) throw new SchemaError(`Cannot resolve $ref "${ref}"`, param);
      at = at[key];
    }
    return at;
  }

  /** Refuses a cycle of refs and anyOf that never reads a byte ({"$ref": "#"} as the whole schema). */
  #checkProductive(root: JsonNode): void {
    const done = new Set<JsonNode>();
    const visit = (n: JsonNode, path: Set<JsonNode>) => {
      if (done.has(n)) return;
      if (path.has(n)) {
        throw new SchemaError("Invalid schema: a $ref cycle that matches no value", this.#param);
      }
      if (n.kind === "ref" || n.kind === "anyOf") {
        path.add(n);
        for (const o of n.kind === "ref" ? [n.to!] : n.options) visit(o, path);
        path.delete(n);
      }
      done.add(n);
      if (n.kind === "object") {
        for (const p of n.props) visit(p.value, new Set());
        if (n.rest) visit(n.rest, new Set());
      } else if (n.kind === "array") {
        for (const p of n.prefix) visit(p, new Set());
        if (n.items) visit(n.items, new Set());
      }
    };
    visit(root, new Set());
  }
}
