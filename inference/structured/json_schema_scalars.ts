/**
 * JSON Schema's string and number keywords (json_schema.ts says what they mean here): a string's
 * `minLength`, `maxLength`, `pattern` and `format` (string_formats.ts); a number's `minimum`, `maximum`,
 * `exclusiveMinimum`, `exclusiveMaximum` (numbers, or draft 4's booleans), `multipleOf` and integer
 * `format`s, read here and turned into a regex of the texts in range by numeric_range.ts. Apart from the
 * compiler core because this is the glue to the regex compilers: their errors become SchemaErrors naming the
 * keyword.
 */
import type { JsonNode } from "./grammar.ts";
import { countKeyword, type SchemaContext, SchemaError } from "./json_schema_context.ts";
import { type NumberBound, NumberRangeError } from "./numeric_bounds.ts";
import { numberRegex } from "./numeric_range.ts";
import { RegexDfa } from "./regex.ts";
import { RegexError } from "./regex_nfa.ts";
import { NUMBER_FORMATS, stringFormatRegex } from "./string_formats.ts";

/** Most characters of one `pattern`. */
const MAX_PATTERN = 1024;

/** A string node: `minLength` / `maxLength` (in characters), and a `pattern` or `format`. */
export function compileString(cx: SchemaContext, s: Record<string, unknown>, path: string): JsonNode {
  const minLength = countKeyword(s, "minLength", path, 0);
  const maxLength = countKeyword(s, "maxLength", path, Infinity);
  if (minLength > maxLength) {
    throw new SchemaError(`Invalid schema at ${path}: minLength > maxLength`, `${path}.minLength`);
  }
  return cx.node({ kind: "string", minLength, maxLength, pattern: stringPattern(cx, s, path) });
}

/**
 * A string's `pattern` or `format` as a DFA over its decoded characters. JSON Schema's patterns search
 * (ECMA-262): one matches anywhere in the string unless anchored, so an unanchored end gets any characters
 * around it. A format matches the whole string.
 */
function stringPattern(cx: SchemaContext, s: Record<string, unknown>, path: string): RegexDfa | null {
  const p = s.pattern;
  const format = typeof s.format === "string" ? stringFormatRegex(s.format) : undefined;
  if (format !== undefined) {
    if (p !== undefined) {
      throw new SchemaError(`Unsupported schema at ${path}: "format" beside "pattern"`, `${path}.format`);
    }
    const dfa = cx.formats.get(format) ?? new RegexDfa(format);
    cx.formats.set(format, dfa);
    return dfa;
  }
  if (p === undefined) return null;
  if (typeof p !== "string" || p.length > MAX_PATTERN) {
    throw new SchemaError(
      `Invalid schema at ${path}: "pattern" must be a string of at most ${MAX_PATTERN}`,
      `${path}.pattern`,
    );
  }
  const start = p.startsWith("^");
  const end = p.endsWith("$") && !p.endsWith("\\$");
  const core = p.slice(start ? 1 : 0, end ? -1 : undefined);
  const any = "[\\s\\S]*";
  try {
    return new RegexDfa(`${start ? "" : any}(?:${core})${end ? "" : any}`);
  } catch (err) {
    if (err instanceof RegexError) {
      throw new SchemaError(`${err.message} (at ${path}.pattern)`, `${path}.pattern`);
    }
    throw err;
  }
}

/**
 * A number node; with bounds, `multipleOf` or an integer format, a regex node of the texts in range
 * (numeric_range.ts).
 */
export function compileNumber(
  cx: SchemaContext,
  s: Record<string, unknown>,
  integer: boolean,
  path: string,
): JsonNode {
  const finite = (key: string): number => {
    if (typeof s[key] !== "number" || !Number.isFinite(s[key])) {
      throw new SchemaError(`Invalid schema at ${path}: "${key}" must be a number`, `${path}.${key}`);
    }
    return s[key] as number;
  };
  const lower: NumberBound[] = [];
  const upper: NumberBound[] = [];
  const sides = [["minimum", "exclusiveMinimum", lower], ["maximum", "exclusiveMaximum", upper]] as const;
  for (const [key, ex, bounds] of sides) {
    // Draft 4: a boolean exclusiveMinimum makes minimum exclusive; 2019+: a bound of its own.
    const draft4 = typeof s[ex] === "boolean";
    if (draft4 && s[ex] === true && s[key] === undefined) {
      throw new SchemaError(`Invalid schema at ${path}: "${ex}" true without "${key}"`, `${path}.${ex}`);
    }
    if (s[ex] !== undefined && !draft4) bounds.push({ keyword: ex, value: finite(ex), exclusive: true });
    if (s[key] !== undefined) bounds.push({ keyword: key, value: finite(key), exclusive: s[ex] === true });
  }
  const range = typeof s.format === "string" ? NUMBER_FORMATS[s.format] : undefined;
  if (range) {
    lower.push({ keyword: "format", value: range[0], exclusive: false });
    upper.push({ keyword: "format", value: range[1], exclusive: false });
  }
  const multipleOf = s.multipleOf === undefined ? null : finite("multipleOf");
  if (multipleOf !== null && multipleOf <= 0) {
    throw new SchemaError(`Invalid schema at ${path}: "multipleOf" must be > 0`, `${path}.multipleOf`);
  }
  if (lower.length === 0 && upper.length === 0 && multipleOf === null) {
    return cx.node({ kind: "number", integer });
  }
  try {
    return cx.node({
      kind: "regex",
      dfa: new RegexDfa(numberRegex({ integer, lower, upper, multipleOf })),
    });
  } catch (err) {
    if (err instanceof NumberRangeError) {
      throw new SchemaError(`${err.message} (at ${path}.${err.keyword})`, `${path}.${err.keyword}`);
    }
    if (err instanceof RegexError) throw new SchemaError(`${err.message} (at ${path})`, path);
    throw err;
  }
}
