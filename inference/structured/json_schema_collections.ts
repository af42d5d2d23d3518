/**
 * JSON Schema's object and array keywords (json_schema.ts says what they mean here): `properties`,
 * `required`, `minProperties` / `maxProperties` (the other keys' `additionalProperties`, `propertyNames` and
 * `patternProperties`: json_schema_keys.ts); `prefixItems`, `items` (a list in drafts 4–2019),
 * `additionalItems`, `minItems` / `maxItems`. Apart from the compiler core because these are
 * the keywords with the most rules of their own; the core hands each object or array schema here and compiles
 * its subschemas when asked (json_schema_context.ts).
 */
import type { JsonNode, PropNode } from "./grammar.ts";
import { countKeyword, isObject, type SchemaContext, SchemaError } from "./json_schema_context.ts";
import { compileOtherKeys } from "./json_schema_keys.ts";

/**
 * An object: `properties` in the schema's order, each required one always, then other keys with values of
 * `additionalProperties` when it is true or a schema (absent beside `properties`: no other keys, as in
 * OpenAI's strict mode), or of `patternProperties`, their names as `propertyNames` and the patterns allow
 * (json_schema_keys.ts); without `properties`, a map. min/maxProperties bound the keys in all.
 */
export function compileObject(
  cx: SchemaContext,
  s: Record<string, unknown>,
  path: string,
  depth: number,
): JsonNode {
  const required = s.required ?? [];
  if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) {
    throw new SchemaError(
      `Invalid schema at ${path}: "required" must be a list of names`,
      `${path}.required`,
    );
  }
  if (s.properties !== undefined && !isObject(s.properties)) {
    throw new SchemaError(
      `Invalid schema at ${path}: "properties" must be an object`,
      `${path}.properties`,
    );
  }
  const props: PropNode[] = Object.entries(s.properties ?? {}).map(([name, sub]) => ({
    name,
    required: required.includes(name),
    value: cx.compile(sub, `${path}.properties.${name}`, depth + 1),
  }));
  const missing = required.find((r) => !props.some((p) => p.name === r));
  if (missing !== undefined) {
    throw new SchemaError(
      s.properties === undefined
        ? `Unsupported schema at ${path}: "required" without "properties"`
        : `Unsupported schema at ${path}: required "${missing}" is not among the properties`,
      `${path}.required`,
    );
  }
  const { rest, restKey } = compileOtherKeys(cx, s, { props, path, depth });
  const minProps = countKeyword(s, "minProperties", path, 0);
  const maxProps = countKeyword(s, "maxProperties", path, Infinity);
  if (minProps > maxProps) {
    throw new SchemaError(
      `Invalid schema at ${path}: minProperties > maxProperties`,
      `${path}.minProperties`,
    );
  }
  const nRequired = props.filter((p) => p.required).length;
  if (nRequired > maxProps) {
    throw new SchemaError(
      `Invalid schema at ${path}: maxProperties < the ${nRequired} required properties`,
      `${path}.maxProperties`,
    );
  }
  if (!rest && props.length < minProps) {
    throw new SchemaError(
      `Unsupported schema at ${path}: minProperties > the ${props.length} properties ` +
        `(and no other key is allowed)`,
      `${path}.minProperties`,
    );
  }
  return cx.node({ kind: "object", props, rest, restKey, minProps, maxProps });
}

/**
 * An array: items `prefixItems[k]` (drafts 4–2019: `items` as a list), then items of `items`
 * (`additionalItems`; absent or true: any value, false: none); minItems/maxItems count them all, so with
 * minItems below the prefix's length its last items are optional.
 */
export function compileArray(
  cx: SchemaContext,
  s: Record<string, unknown>,
  path: string,
  depth: number,
): JsonNode {
  const minItems = countKeyword(s, "minItems", path, 0);
  let maxItems = countKeyword(s, "maxItems", path, Infinity);
  if (minItems > maxItems) {
    throw new SchemaError(`Invalid schema at ${path}: minItems > maxItems`, `${path}.minItems`);
  }
  const tuple = Array.isArray(s.items);
  if (s.prefixItems !== undefined && (tuple || s.additionalItems !== undefined)) {
    // Drafts mixed: 2020-12's prefixItems beside the older list form or its additionalItems.
    const [key, what] = tuple ? ["items", 'a list of "items"'] : ["additionalItems", '"additionalItems"'];
    throw new SchemaError(`Unsupported schema at ${path}: "prefixItems" beside ${what}`, `${path}.${key}`);
  }
  const [listKey, restKey] = tuple ? ["items", "additionalItems"] : ["prefixItems", "items"];
  const list = s[listKey] ?? [];
  if (!Array.isArray(list)) {
    throw new SchemaError(`Invalid schema at ${path}: "prefixItems" must be a list`, `${path}.prefixItems`);
  }
  const prefix = list.map((sub, k) => cx.compile(sub, `${path}.${listKey}[${k}]`, depth + 1));
  const after = s[restKey];
  if (after === false) {
    if (minItems > prefix.length) {
      throw new SchemaError(
        `Invalid schema at ${path}: minItems > the ${prefix.length} items of "${listKey}" ` +
          `("${restKey}" is false)`,
        `${path}.minItems`,
      );
    }
    maxItems = Math.min(maxItems, prefix.length);
  }
  const items = after === false
    ? null
    : after === undefined
    ? cx.anyValue()
    : cx.compile(after, `${path}.${restKey}`, depth + 1);
  return cx.node({ kind: "array", prefix, items, minItems, maxItems });
}
