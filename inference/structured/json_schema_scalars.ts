/**
 * JSON Schema's string and number keywords (json_schema.ts says what they mean here): a string's
 * `minLength`, `maxLength`, `pattern` and `format` (string_formats.ts); a number's `minimum`, `maximum`,
 * `exclusiveMinimum`, `exclusiveMaximum` (numbers, or draft 4's booleans), `multipleOf` and integer
 * `format`s, read here and turned into a regex of the texts in range by numeric_range.ts. Apart from the
 * compiler core because this is the glue to the regex compilers: their errors become SchemaErrors naming the
 * keyword. The patterns of object keys (`propertyNames`, `patternProperties`: json_schema_keys.ts) compile
 * here too, with the same search semantics.
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
  return searchPatternDfa([p], `${path}.pattern`);
}

/**
 * The texts that one of these patterns matches with JSON Schema's search semantics (ECMA-262, as `pattern`
 * and `patternProperties` have it), as a DFA over decoded characters. A pattern matches anywhere in the text
 * unless anchored, so each top-level alternative gets any characters at an end without `^` or `$`.
 * @param patterns the patterns (one for `pattern`; several for `patternProperties` that share a schema)
 * @param param where they sit (error messages name it)
 * @returns their union's DFA
 * @throws SchemaError for a pattern that is not a string, too long, or that the regex compiler refuses
 */
export function searchPatternDfa(patterns: readonly unknown[], param: string): RegexDfa {
  const any = "[\\s\\S]*";
  const options: string[] = [];
  for (const p of patterns) {
    if (typeof p !== "string" || p.length > MAX_PATTERN) {
      throw new SchemaError(
        `Invalid schema at ${param}: a pattern must be a string of at most ${MAX_PATTERN} characters`,
        param,
      );
    }
    for (const alt of topLevelAlternatives(p)) {
      // `^` opens the alternative, an unescaped `$` closes it (an even run of backslashes before it).
      const start = alt.startsWith("^");
      const end = /(^|[^\\])(\\\\)*\$$/.test(alt);
      const core = alt.slice(start ? 1 : 0, end ? -1 : undefined);
      options.push(`(?:${start ? "" : any}(?:${core})${end ? "" : any})`);
    }
  }
  try {
    return new RegexDfa(options.join("|"));
  } catch (err) {
    if (err instanceof RegexError) throw new SchemaError(`${err.message} (at ${param})`, param);
    throw err;
  }
}

/**
 * A pattern's alternatives at the top level (`|` outside groups and classes), where ECMA-262's anchors bind:
 * `^a|b$` is `^a` or `b$`. Classes are read as regex_parser.ts reads them (a `]` first in one is a member).
 */
function topLevelAlternatives(p: string): string[] {
  const out: string[] = [];
  let depth = 0, from = 0;
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === "\\") i++;
    else if (c === "[") {
      i += p[i + 1] === "^" ? 2 : 1;
      for (let first = true; i < p.length && (p[i] !== "]" || first); i++, first = false) {
        if (p[i] === "\\") i++;
      }
    } else if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "|" && depth === 0) {
      out.push(p.slice(from, i));
      from = i + 1;
    }
  }
  out.push(p.slice(from));
  return out;
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
