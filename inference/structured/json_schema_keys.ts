/**
 * The other keys of an object (json_schema.ts says what the keywords mean here): the object node's `rest`,
 * the schema of their values, and `restKey`, the DFA of their names over decoded characters. A key is one
 * only if it is not a listed name, `propertyNames` allows it, and, with `patternProperties`, a pattern
 * matches it. Each keyword becomes a DFA and the key's DFA is their intersection (regex.ts), so the grammar
 * takes exactly the keys the schema allows. What one `rest` cannot say is refused: patterns with different
 * schemas, patterns beside `additionalProperties` (a key would take one schema or the other by its name), and
 * a listed name that a pattern matches (JSON Schema would apply both schemas to its value) unless the
 * pattern's schema adds nothing. Apart from json_schema_collections.ts because this is the glue between
 * object keywords and the regex compilers.
 */
import type { JsonNode, PropNode } from "./grammar.ts";
import { countKeyword, isObject, type SchemaContext, SchemaError } from "./json_schema_context.ts";
import { searchPatternDfa } from "./json_schema_scalars.ts";
import { exceptTextsDfa, intersectDfas, lengthDfa, onlyTextsDfa, RegexDfa } from "./regex.ts";
import { RegexError } from "./regex_nfa.ts";
import { isKnownFormat, stringFormatRegex } from "./string_formats.ts";

/** The keywords of a `propertyNames` schema that constrain keys here. */
const NAME_KEYWORDS = new Set(["type", "pattern", "format", "minLength", "maxLength", "enum", "const"]);
/** Annotations a `propertyNames` schema may carry (they constrain nothing). */
const NOTES = new Set(["title", "description", "$comment", "examples", "default", "deprecated"]);

/** Which names `propertyNames` allows: those all of `dfas` accept, and one of `texts` (null: any). */
interface NameRule {
  dfas: RegexDfa[];
  texts: string[] | null;
}

/** The other keys of an object: their values' node (null: none) and names' DFA (null: any name). */
export interface OtherKeys {
  rest: JsonNode | null;
  restKey: RegexDfa | null;
}

/**
 * The other keys of an object schema.
 * @param cx the compiler
 * @param s the object schema
 * @param options `props`: its listed properties, compiled; `path` and `depth`: where `s` sits
 * @returns the object node's `rest` and `restKey`
 * @throws SchemaError naming the keyword that is malformed, contradicts the listed names, or cannot be kept
 */
export function compileOtherKeys(
  cx: SchemaContext,
  s: Record<string, unknown>,
  { props, path, depth }: { props: readonly PropNode[]; path: string; depth: number },
): OtherKeys {
  const names = props.map((p) => p.name);
  const rule = nameRule(cx, s.propertyNames, `${path}.propertyNames`);
  const refused = names.find((name) => !allows(rule, name));
  if (refused !== undefined) {
    throw new SchemaError(
      `Invalid schema at ${path}: property "${refused}" is not a name "propertyNames" allows`,
      `${path}.propertyNames`,
    );
  }
  const patterns = patternRule(cx, s, path, depth);
  const extra = s.additionalProperties;
  const rest = patterns
    ? patterns.value
    : extra === false || (extra === undefined && s.properties !== undefined)
    ? null
    : extra === undefined || extra === true
    ? cx.anyValue()
    : cx.compile(extra, `${path}.additionalProperties`, depth + 1);
  const clash = patterns &&
    props.find((p) => patterns.dfa.matches(p.name) && adds(patterns.schema, s, p.name));
  if (clash) {
    throw new SchemaError(
      `Unsupported schema at ${path}: property "${clash.name}" matches "patternProperties" too ` +
        "(its value would have to follow both schemas)",
      `${path}.patternProperties`,
    );
  }
  if (!rest) return { rest: null, restKey: null };
  // Where a DFA past its bound is blamed: the listed names alone can overflow it (many long names).
  const at = patterns
    ? `${path}.patternProperties`
    : rule.dfas.length > 0 || rule.texts
    ? `${path}.propertyNames`
    : `${path}.additionalProperties`;
  try {
    const dfas = [...rule.dfas, ...(patterns ? [patterns.dfa] : [])];
    if (rule.texts) {
      // A list of names: keep those the other constraints allow.
      const texts = rule.texts.filter((t) => !names.includes(t) && dfas.every((d) => d.matches(t)));
      return texts.length === 0 ? { rest: null, restKey: null } : { rest, restKey: onlyTextsDfa(texts) };
    }
    const except = names.length > 0 ? exceptTextsDfa(names) : null;
    if (dfas.length === 0) return { rest, restKey: except };
    const restKey = intersectDfas("(other keys)", except ? [except, ...dfas] : dfas);
    return restKey ? { rest, restKey } : { rest: null, restKey: null };
  } catch (err) {
    if (!(err instanceof RegexError)) throw err;
    throw new SchemaError(`${err.message} (at ${at})`, at);
  }
}

/** Whether `name` is one `rule` allows. */
function allows(rule: NameRule, name: string): boolean {
  return (rule.texts === null || rule.texts.includes(name)) && rule.dfas.every((d) => d.matches(name));
}

/**
 * Whether following the pattern's `schema` as well may change what the listed property `name` takes: unless
 * it is any value, or the very schema the property has, it would need both at once.
 */
function adds(schema: unknown, s: Record<string, unknown>, name: string): boolean {
  const own = isObject(s.properties) ? s.properties[name] : undefined;
  const any = schema === true || (isObject(schema) && Object.keys(schema).length === 0);
  return !any && JSON.stringify(schema) !== JSON.stringify(own);
}

/** What a `propertyNames` schema at `param` allows. */
function nameRule(cx: SchemaContext, pn: unknown, param: string): NameRule {
  const rule: NameRule = { dfas: [], texts: null };
  if (pn === undefined || pn === true) return rule;
  if (pn === false) return { ...rule, texts: [] };
  if (!isObject(pn)) throw new SchemaError(`Invalid schema at ${param}: expected a schema`, param);
  for (const key of Object.keys(pn)) {
    if (!NAME_KEYWORDS.has(key) && !NOTES.has(key)) {
      throw new SchemaError(
        `Unsupported schema keyword "${key}" in "propertyNames" at ${param}`,
        `${param}.${key}`,
      );
    }
  }
  if (pn.type !== undefined) {
    const types = [pn.type].flat();
    if (types.length === 0 || types.some((t) => typeof t !== "string")) {
      throw new SchemaError(
        `Invalid schema at ${param}: "type" must be a name or a list of names`,
        `${param}.type`,
      );
    }
    if (!types.includes("string")) return { ...rule, texts: [] }; // keys are strings: none is allowed
  }
  if (pn.const !== undefined || pn.enum !== undefined) {
    const values = pn.const !== undefined ? [pn.const] : pn.enum;
    if (!Array.isArray(values) || values.length === 0) {
      throw new SchemaError(`Invalid schema at ${param}: "enum" must be a non-empty array`, `${param}.enum`);
    }
    rule.texts = values.filter((v): v is string => typeof v === "string");
  }
  if (pn.pattern !== undefined) rule.dfas.push(searchPatternDfa([pn.pattern], `${param}.pattern`));
  if (pn.format !== undefined) {
    if (typeof pn.format !== "string" || !isKnownFormat(pn.format)) {
      throw new SchemaError(`Unsupported format ${JSON.stringify(pn.format)} at ${param}`, `${param}.format`);
    }
    const format = stringFormatRegex(pn.format); // a format of numbers leaves strings alone
    if (format !== undefined) {
      const dfa = cx.formats.get(format) ?? new RegexDfa(format);
      cx.formats.set(format, dfa);
      rule.dfas.push(dfa);
    }
  }
  const minLength = countKeyword(pn, "minLength", param, 0);
  const maxLength = countKeyword(pn, "maxLength", param, Infinity);
  if (minLength > maxLength) {
    throw new SchemaError(`Invalid schema at ${param}: minLength > maxLength`, `${param}.minLength`);
  }
  if (minLength > 0 || Number.isFinite(maxLength)) {
    try {
      rule.dfas.push(lengthDfa(minLength, maxLength));
    } catch (err) {
      if (!(err instanceof RegexError)) throw err;
      const key = Number.isFinite(maxLength) ? "maxLength" : "minLength";
      throw new SchemaError(`${err.message} (at ${param}.${key})`, `${param}.${key}`);
    }
  }
  return rule;
}

/** The one schema and the patterns' DFA of `patternProperties`, or null when it has no pattern. */
function patternRule(
  cx: SchemaContext,
  s: Record<string, unknown>,
  path: string,
  depth: number,
): { schema: unknown; value: JsonNode | null; dfa: RegexDfa } | null {
  const param = `${path}.patternProperties`;
  const pp = s.patternProperties;
  if (pp === undefined) return null;
  if (!isObject(pp)) {
    throw new SchemaError(`Invalid schema at ${path}: "patternProperties" must be an object`, param);
  }
  const entries = Object.entries(pp);
  if (entries.length === 0) return null;
  if (s.additionalProperties !== undefined && s.additionalProperties !== false) {
    throw new SchemaError(
      `Unsupported schema at ${path}: "patternProperties" beside "additionalProperties" other than false`,
      param,
    );
  }
  const [first, schema] = entries[0];
  const other = entries.find(([, sub]) => JSON.stringify(sub) !== JSON.stringify(schema));
  if (other) {
    throw new SchemaError(
      `Unsupported schema at ${path}: "patternProperties" "${first}" and "${
        other[0]
      }" have different schemas`,
      param,
    );
  }
  const dfa = searchPatternDfa(entries.map(([p]) => p), param);
  // A false schema: no value will do, so no key that matches may be written.
  const value = schema === false ? null : cx.compile(schema, `${param}.${first}`, depth + 1);
  return { schema, value, dfa };
}
