/**
 * JSON Schema's `format` for strings as regular expressions (regex.ts) over the decoded characters, matched
 * whole: what json_schema.ts puts in a string node's pattern. Each is the format's grammar, with these
 * simplifications (the output is always valid; a few valid values cannot be produced):
 * - `date`, `date-time`, `time`: RFC 3339 `full-date`, `date-time`, `full-time` (days per month and leap
 *   years checked; `T`, `Z` upper case; no leap second `:60`).
 * - `duration`: RFC 3339 Appendix A (ISO 8601): `P1Y2M3DT4H5M6S`, `PT1H`, `P2W`.
 * - `uuid`: RFC 9562's 8-4-4-4-12 hex digits (any version).
 * - `email`: an RFC 5322 dot-atom local part (no quoted strings) `@` a domain of at least two hostname labels
 *   (no IP literals).
 * - `hostname`: RFC 1123 labels of 1–63 letters, digits and `-` (not at either end) joined by dots (the
 *   253-character total is not counted).
 * - `ipv4`: four dotted decimals 0–255 without leading zeros; `ipv6`: RFC 4291's text forms (`::` compression,
 *   an IPv4 tail), without a zone.
 * - `uri`: RFC 3986's `scheme ":"` and then its characters (unreserved, reserved but `[ ]`, `%XX`), at least
 *   one, and at most one `#`; the parts inside are not checked.
 */

/** Years divisible by 4 but not by 100, or by 400 (four digits). */
const LEAP_YEAR = "(?:\\d\\d(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)";
const MONTH_DAY = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|" +
  "02-(?:0[1-9]|1\\d|2[0-8]))";
const DATE = `(?:\\d{4}-${MONTH_DAY}|${LEAP_YEAR}-02-29)`;
const TIME = "(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d+)?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)";

/** RFC 3339 Appendix A's duration: P, then a date part (Y M D in order), a time part (H M S), or weeks. */
function duration(): string {
  const chain = (units: string[]): string =>
    units.map((_, i) => `\\d+${units[i]}` + (i + 1 < units.length ? `(?:${chain(units.slice(i + 1))})?` : ""))
      .join("|");
  const time = `T(?:${chain(["H", "M", "S"])})`;
  return `P(?:(?:${chain(["Y", "M", "D"])})(?:${time})?|${time}|\\d+W)`;
}

const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}`;

/** Every RFC 4291 text form: 8 groups, or fewer around one `::`; the last two may be an IPv4 address. */
function ipv6(): string {
  const h = "[0-9A-Fa-f]{1,4}";
  const groups = (n: number) => (n === 0 ? "" : `${h}(?::${h}){${n - 1}}`);
  const upTo = (n: number) => (n === 0 ? "" : `(?:${h}(?::${h}){0,${n - 1}})?`);
  const alts = [`${groups(8)}`, `(?:${h}:){6}${IPV4}`];
  for (let left = 0; left <= 7; left++) {
    alts.push(`${groups(left)}::${upTo(7 - left)}`);
    if (left <= 5) alts.push(`${groups(left)}::(?:${h}:){0,${5 - left}}${IPV4}`);
  }
  return `(?:${alts.join("|")})`;
}

const URI_CHAR = "(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})";

/** Each supported format's regex (regex.ts syntax). */
const FORMATS: Record<string, string> = {
  "date": DATE,
  "time": TIME,
  "date-time": `${DATE}T${TIME}`,
  "duration": duration(),
  "uuid": "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
  "email": `${ATOM}(?:\\.${ATOM})*@${LABEL}(?:\\.${LABEL})+`,
  "hostname": `${LABEL}(?:\\.${LABEL})*`,
  "ipv4": IPV4,
  "ipv6": ipv6(),
  "uri": `[A-Za-z][A-Za-z0-9+.-]*:${URI_CHAR}+(?:#${URI_CHAR}*)?`,
};

/** Formats of numbers (OpenAPI's): int32 and int64 bound integers, float and double constrain nothing. */
export const NUMBER_FORMATS: Record<string, [bigint, bigint] | null> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  float: null,
  double: null,
};

/**
 * The regex of a string format.
 * @param name the `format` value
 * @returns the pattern (matched whole), or undefined for a format this does not know
 */
export function stringFormatRegex(name: string): string | undefined {
  return Object.hasOwn(FORMATS, name) ? FORMATS[name] : undefined;
}

/** Whether `format` names one this knows, of strings or numbers. */
export function isKnownFormat(name: string): boolean {
  return Object.hasOwn(FORMATS, name) || Object.hasOwn(NUMBER_FORMATS, name);
}
