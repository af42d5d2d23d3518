/**
 * A schema's number bounds as exact decimals (numeric_range.ts): each bound is the decimal its JSON number
 * prints as (JavaScript's shortest round-trip form: `0.1` is 0.1), an integer exactly (2^63 is
 * 9223372036854775808); on one side the tightest holds. Apart from the regex construction because both of its
 * parts read the bounds as these decimals: the ranges (numeric_digits.ts) and multipleOf (numeric_range.ts).
 */

/** A bound or multipleOf the regex cannot take; `keyword` names the schema keyword it came from. */
export class NumberRangeError extends Error {
  readonly keyword: string;
  constructor(message: string, keyword: string) {
    super(message);
    this.name = "NumberRangeError";
    this.keyword = keyword;
  }
}

/** One bound; a schema may give several on one side (minimum and exclusiveMinimum): the tightest holds. */
export interface NumberBound {
  /** the schema keyword that gave it (for errors) */
  keyword: string;
  value: number | bigint;
  exclusive: boolean;
}

/** Most digits of a bound (integer part and fraction): past it the regex grows past use. */
export const MAX_DIGITS = 40;

/** A decimal: sign, integer part, fraction digits without trailing zeros (zero: not negative). */
export interface Dec {
  neg: boolean;
  int: bigint;
  frac: string;
}

/** A decimal bound on one side. */
export interface Bound {
  d: Dec;
  exclusive: boolean;
  keyword: string;
}

/** The tightest of some bounds (`dir` 1: the greatest lower bound; −1: the least upper one), or null. */
export function tightest(bounds: NumberBound[], dir: 1 | -1): Bound | null {
  let best: Bound | null = null;
  for (const b of bounds) {
    const c: Bound = { d: toDec(b.value, b.keyword), exclusive: b.exclusive, keyword: b.keyword };
    const order = best === null ? dir : cmpDec(c.d, best.d) || (c.exclusive ? dir : 0);
    if (order * dir > 0) best = c;
  }
  return best;
}

/** A number's decimal: exact for integers, else its shortest round-trip digits. */
export function toDec(x: number | bigint, keyword: string): Dec {
  let d: Dec;
  if (typeof x === "bigint" || Number.isInteger(x)) {
    const n = BigInt(x);
    d = { neg: n < 0n, int: n < 0n ? -n : n, frac: "" };
  } else {
    const [mant, exp = "0"] = Math.abs(x).toString().split("e");
    const [ip, fp = ""] = mant.split(".");
    let digits = ip + fp;
    let point = ip.length + Number(exp);
    if (point <= 0) [digits, point] = ["0".repeat(-point) + digits, 0];
    d = {
      neg: x < 0,
      int: BigInt(digits.slice(0, point) || "0"),
      frac: digits.slice(point).replace(/0+$/, ""),
    };
  }
  if (String(d.int).length + d.frac.length > MAX_DIGITS) {
    throw new NumberRangeError(`Cannot bound the number: "${x}" has more than ${MAX_DIGITS} digits`, keyword);
  }
  return d;
}

function cmpDec(a: Dec, b: Dec): number {
  if (a.neg !== b.neg) return a.neg ? -1 : 1;
  const n = Math.max(a.frac.length, b.frac.length);
  const sa = a.int * 10n ** BigInt(n) + BigInt(a.frac.padEnd(n, "0") || "0");
  const sb = b.int * 10n ** BigInt(n) + BigInt(b.frac.padEnd(n, "0") || "0");
  const c = sa < sb ? -1 : sa > sb ? 1 : 0;
  return a.neg ? -c : c;
}

/** The least integer above a lower bound. */
export function ceilDec({ d, exclusive }: Bound): bigint {
  const i = d.neg ? -d.int : d.int;
  if (d.frac !== "") return d.neg ? i : i + 1n;
  return exclusive ? i + 1n : i;
}

/** The greatest integer below an upper bound. */
export function floorDec({ d, exclusive }: Bound): bigint {
  const i = d.neg ? -d.int : d.int;
  if (d.frac !== "") return d.neg ? i - 1n : i;
  return exclusive ? i - 1n : i;
}
