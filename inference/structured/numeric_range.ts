/**
 * Number bounds as regular expressions (regex.ts): the JSON number texts whose value lies in a range, for
 * JSON Schema's `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` and `multipleOf`.
 *
 * The classic integer-range construction (split by digit count, then at the first digit where the bounds
 * differ: the digits between are free, the two edge digits recurse), extended to decimals: the integer part
 * at a bound's own integer part continues into a fraction bounded the same way digit by digit, with any number
 * of fraction digits (`0.5` ≤ x: `0.5`, `0.50`, `0.5000001`, `0.6`, … all match). Negative values are `-` and
 * a magnitude in the mirrored range.
 *
 * What the texts look like: JSON numbers without an exponent (every value in range has such a text; an
 * exponent would need ranges over the exponent's value too), no leading zeros, never `-0` (`0` is the zero).
 * Integers (`integer`, or an integer `multipleOf`) have no fraction. Bounds count as the decimal a schema's
 * number prints as (JavaScript's shortest round-trip form: `0.1` is 0.1) and integers exactly (2^63 is
 * 9223372036854775808).
 *
 * `multipleOf` k: an integer k dividing 10^n (n ≤ 3: 2, 4, 5, 8, 10, 20, 25, …, 1000) is a condition on the
 * last n digits, so any range works; any other k needs both bounds and at most {@link MAX_MULTIPLES}
 * multiples in range, which are listed.
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

/** The values a number node allows. */
export interface NumberSpec {
  /** no fraction (JSON Schema `integer`) */
  integer: boolean;
  lower: NumberBound[];
  upper: NumberBound[];
  /** > 0, or null */
  multipleOf: number | null;
}

/** Most digits of a bound (integer part and fraction): past it the regex grows past use. */
export const MAX_DIGITS = 40;
/** Most multiples listed one by one (a `multipleOf` that no digit rule covers). */
export const MAX_MULTIPLES = 256;

/** A decimal: sign, integer part, fraction digits without trailing zeros (zero: not negative). */
interface Dec {
  neg: boolean;
  int: bigint;
  frac: string;
}

/** A decimal bound on one side. */
interface Bound {
  d: Dec;
  exclusive: boolean;
  keyword: string;
}

/**
 * The regular expression (regex.ts syntax) of the JSON number texts that satisfy a spec.
 * @param spec integer or not, the bounds, multipleOf
 * @returns a pattern matched whole; it never matches the empty text
 * @throws NumberRangeError when no number satisfies the spec, a bound has more than MAX_DIGITS digits, or a
 *   multipleOf needs more than MAX_MULTIPLES listed values
 * @example
 * ```ts
 * import { numberRegex } from "./numeric_range.ts";
 * const lower = [{ keyword: "minimum", value: 1, exclusive: false }];
 * const positive = numberRegex({ integer: true, lower, upper: [], multipleOf: null }); // "[1-9]\\d*"
 * ```
 */
export function numberRegex(spec: NumberSpec): string {
  const lo = tightest(spec.lower, 1);
  const hi = tightest(spec.upper, -1);
  let regex: string | null;
  if (spec.multipleOf !== null) {
    regex = multiplesRegex(toDec(spec.multipleOf, "multipleOf"), lo, hi, spec.integer);
  } else if (spec.integer) {
    regex = signedInts(lo && ceilDec(lo), hi && floorDec(hi), intRange);
  } else {
    regex = signedDecimals(lo, hi);
  }
  if (regex === null) {
    throw new NumberRangeError(
      `Cannot bound the number: no ${spec.integer ? "integer" : "number"} satisfies the schema`,
      lo?.keyword ?? hi?.keyword ?? "multipleOf",
    );
  }
  return regex;
}

/** The tightest of some bounds (`dir` 1: the greatest lower bound; −1: the least upper one), or null. */
function tightest(bounds: NumberBound[], dir: 1 | -1): Bound | null {
  let best: Bound | null = null;
  for (const b of bounds) {
    const c: Bound = { d: toDec(b.value, b.keyword), exclusive: b.exclusive, keyword: b.keyword };
    const order = best === null ? dir : cmpDec(c.d, best.d) || (c.exclusive ? dir : 0);
    if (order * dir > 0) best = c;
  }
  return best;
}

/** A number's decimal: exact for integers, else its shortest round-trip digits. */
function toDec(x: number | bigint, keyword: string): Dec {
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
function ceilDec({ d, exclusive }: Bound): bigint {
  const i = d.neg ? -d.int : d.int;
  if (d.frac !== "") return d.neg ? i : i + 1n;
  return exclusive ? i + 1n : i;
}

/** The greatest integer below an upper bound. */
function floorDec({ d, exclusive }: Bound): bigint {
  const i = d.neg ? -d.int : d.int;
  if (d.frac !== "") return d.neg ? i - 1n : i;
  return exclusive ? i - 1n : i;
}

/** `alts` as one term: alone, or a non-capturing group. */
function group(alts: string[]): string {
  return alts.length === 1 ? alts[0] : `(?:${alts.join("|")})`;
}

/** A class of the digits lo..hi. */
function digitClass(lo: number, hi: number): string {
  return lo === hi ? String(lo) : lo === 0 && hi === 9 ? "\\d" : `[${lo}-${hi}]`;
}

/** Exactly n digits. */
function digits(n: number): string {
  return n === 0 ? "" : n === 1 ? "\\d" : `\\d{${n}}`;
}

/**
 * Integers in [lo, hi] (null: no bound), signed, as `-`+magnitude or magnitude; `magnitudes(a, b)` gives the
 * texts of magnitudes in [a, b] (a ≥ 0) or null for none.
 */
function signedInts(
  lo: bigint | null,
  hi: bigint | null,
  magnitudes: (a: bigint, b: bigint | null) => string | null,
): string | null {
  if (lo !== null && hi !== null && lo > hi) return null;
  const parts: string[] = [];
  if (lo === null || lo < 0n) {
    const neg = magnitudes(hi !== null && hi < 0n ? -hi : 1n, lo === null ? null : -lo);
    if (neg !== null) parts.push(`-${neg}`);
  }
  if (hi === null || hi >= 0n) {
    const pos = magnitudes(lo !== null && lo > 0n ? lo : 0n, hi);
    if (pos !== null) parts.push(pos);
  }
  return parts.length === 0 ? null : group(parts);
}

/** Canonical integers (no leading zeros) in [lo, hi], 0 ≤ lo; hi null: unbounded. */
export function intRange(lo: bigint, hi: bigint | null): string | null {
  if (hi !== null && lo > hi) return null;
  const a = String(lo);
  if (hi === null && lo === 0n) return "(?:0|[1-9]\\d*)";
  if (hi === null && /^10*$/.test(a)) return `[1-9]${a.length === 1 ? "\\d*" : `\\d{${a.length - 1},}`}`;
  const top = hi === null ? a.length : String(hi).length;
  const alts: string[] = [];
  for (let len = a.length; len <= top; len++) {
    if (len > a.length && len < top) {
      // Lengths strictly between the bounds' are free: one term for the run.
      alts.push(len === top - 1 ? `[1-9]${digits(len - 1)}` : `[1-9]\\d{${len - 1},${top - 2}}`);
      len = top - 1;
      continue;
    }
    const from = len === a.length ? a : `1${"0".repeat(len - 1)}`;
    const to = hi !== null && len === top ? String(hi) : "9".repeat(len);
    alts.push(sameLength(from, to));
  }
  if (hi === null) alts.push(`[1-9]\\d{${a.length},}`);
  return group(alts);
}

/** Digit strings of x's length from x to y (x ≤ y). */
function sameLength(x: string, y: string): string {
  let p = 0;
  while (p < x.length && x[p] === y[p]) p++;
  if (p === x.length) return x;
  const [dx, dy, xs, ys] = [Number(x[p]), Number(y[p]), x.slice(p + 1), y.slice(p + 1)];
  const lowFull = /^0*$/.test(xs);
  const highFull = /^9*$/.test(ys);
  const alts: string[] = [];
  if (!lowFull) alts.push(`${dx}${fixedAtLeast(xs)}`);
  const [midLo, midHi] = [lowFull ? dx : dx + 1, highFull ? dy : dy - 1];
  if (midLo <= midHi) alts.push(digitClass(midLo, midHi) + digits(xs.length));
  if (!highFull) alts.push(`${dy}${fixedAtMost(ys)}`);
  return x.slice(0, p) + group(alts);
}

/** Digit strings of s's length ≥ s. */
function fixedAtLeast(s: string): string {
  if (/^0*$/.test(s)) return digits(s.length);
  const d = Number(s[0]);
  const alts = [`${d}${fixedAtLeast(s.slice(1))}`];
  if (d < 9) alts.push(digitClass(d + 1, 9) + digits(s.length - 1));
  return group(alts);
}

/** Digit strings of s's length ≤ s. */
function fixedAtMost(s: string): string {
  if (/^9*$/.test(s)) return digits(s.length);
  const d = Number(s[0]);
  const alts = [`${d}${fixedAtMost(s.slice(1))}`];
  if (d > 0) alts.push(digitClass(0, d - 1) + digits(s.length - 1));
  return group(alts);
}

// Fraction tails: digit strings t read as the fraction 0.t (the empty one is 0), bounded by a bound's
// fraction digits f. `nonempty`: at least one digit (what follows a ".").

/** 0.t ≥ 0.f (> when strict). */
function tailAtLeast(f: string, inclusive: boolean, nonempty: boolean): string {
  if (f === "") return inclusive ? (nonempty ? "\\d+" : "\\d*") : "0*[1-9]\\d*";
  let tail = inclusive ? "\\d*" : "0*[1-9]\\d*";
  for (let i = f.length - 1; i >= 0; i--) {
    const e = Number(f[i]);
    tail = group(e < 9 ? [digitClass(e + 1, 9) + "\\d*", `${e}${tail}`] : [`${e}${tail}`]);
  }
  return tail;
}

/** 0.t ≤ 0.f (< when strict), or null for none. */
function tailAtMost(f: string, inclusive: boolean, nonempty: boolean): string | null {
  if (f === "") return inclusive ? (nonempty ? "0+" : "0*") : null;
  let tail: string | null = inclusive ? "0*" : null; // past f's digits: only zeros keep it ≤
  for (let i = f.length - 1; i >= 0; i--) {
    const e = Number(f[i]);
    const alts = e > 0 ? [digitClass(0, e - 1) + "\\d*"] : [];
    if (tail !== null) alts.push(`${e}${tail}`);
    const mayEnd = i > 0 || !nonempty; // stopping inside f: below it (f's last digit is not 0)
    tail = alts.length === 0 ? (mayEnd ? "" : null) : mayEnd ? `(?:${alts.join("|")})?` : group(alts);
  }
  return tail;
}

/** 0.f1 ≤ 0.t ≤ 0.f2 (each end strict or not), or null for none. */
function tailBetween(f1: string, inc1: boolean, f2: string, inc2: boolean, nonempty: boolean): string | null {
  const n = Math.max(f1.length, f2.length);
  const [a, b] = [f1.padEnd(n, "0"), f2.padEnd(n, "0")];
  let p = 0;
  while (p < n && a[p] === b[p]) p++;
  if (p === n) {
    if (!inc1 || !inc2) return null;
    return f1 === "" ? (nonempty ? "0+" : "0*") : `${f1}0*`;
  }
  if (a[p] > b[p]) return null;
  const [x, y] = [Number(a[p]), Number(b[p])];
  const alts = [`${x}${tailAtLeast(f1.slice(p + 1), inc1, false)}`];
  if (y - x >= 2) alts.push(digitClass(x + 1, y - 1) + "\\d*");
  const high = tailAtMost(f2.slice(p + 1), inc2, false);
  if (high !== null) alts.push(`${y}${high}`);
  // Stopping after j of the shared digits: the value f1 itself once f1 has ended (all are below f2).
  const mayEnd = (j: number) => j >= f1.length && inc1 && (j > 0 || !nonempty);
  let rest = mayEnd(p) ? `(?:${alts.join("|")})?` : group(alts);
  for (let j = p - 1; j >= 0; j--) rest = mayEnd(j) ? `(?:${b[j]}${rest})?` : `${b[j]}${rest}`;
  return rest;
}

/** The text after an integer part: "." and a tail (null: none), optional when the value 0 is allowed. */
function fraction(tail: string | null, zeroOk: boolean): string | null {
  if (tail === null) return zeroOk ? "" : null;
  return zeroOk ? `(?:\\.${tail})?` : `\\.${tail}`;
}

/** Decimal texts of magnitudes between a (≥ 0) and b (null: unbounded). */
function decimalMagnitudes(a: Dec, aInc: boolean, b: Dec | null, bInc: boolean): string | null {
  if (b !== null && b.int === a.int) {
    const tail = tailBetween(a.frac, aInc, b.frac, bInc, true);
    const frac = fraction(tail, a.frac === "" && aInc && (b.frac !== "" || bInc));
    return frac === null ? null : `${a.int}${frac}`;
  }
  if (b !== null && b.int < a.int) return null;
  const alts = [`${a.int}${fraction(tailAtLeast(a.frac, aInc, true), a.frac === "" && aInc)}`];
  const mid = intRange(a.int + 1n, b === null ? null : b.int - 1n);
  if (mid !== null) alts.push(`${mid}(?:\\.\\d+)?`);
  if (b !== null) {
    const frac = fraction(tailAtMost(b.frac, bInc, true), b.frac !== "" || bInc);
    if (frac !== null) alts.push(`${b.int}${frac}`);
  }
  return group(alts);
}

/** Decimal texts in a signed range. */
function signedDecimals(lo: Bound | null, hi: Bound | null): string | null {
  const zero: Dec = { neg: false, int: 0n, frac: "" };
  const mag = (d: Dec): Dec => ({ ...d, neg: false });
  const parts: string[] = [];
  if (lo === null || lo.d.neg) {
    // Magnitudes from |hi| (or above 0: no "-0") to |lo|.
    const [a, aInc] = hi !== null && hi.d.neg ? [mag(hi.d), !hi.exclusive] : [zero, false];
    const neg = decimalMagnitudes(a, aInc, lo && mag(lo.d), lo !== null && !lo.exclusive);
    if (neg !== null) parts.push(`-${neg}`);
  }
  if (hi === null || !hi.d.neg) {
    const [a, aInc] = lo !== null && !lo.d.neg ? [lo.d, !lo.exclusive] : [zero, true];
    const pos = decimalMagnitudes(a, aInc, hi && hi.d, hi !== null && !hi.exclusive);
    if (pos !== null) parts.push(pos);
  }
  return parts.length === 0 ? null : group(parts);
}

/** Multiples of k in a range: by the last digits (an integer k dividing 10^n) or listed. */
function multiplesRegex(k: Dec, lo: Bound | null, hi: Bound | null, integer: boolean): string | null {
  if (k.neg || (k.int === 0n && k.frac === "")) {
    throw new NumberRangeError("Invalid multipleOf: expected a number > 0", "multipleOf");
  }
  let scale = 10n ** BigInt(k.frac.length);
  let K = k.int * scale + BigInt(k.frac || "0"); // k = K / scale
  if (integer) {
    // The integer multiples of K/scale are the multiples of the integer K / gcd(K, scale).
    K /= gcd(K, scale);
    scale = 1n;
  }
  if (scale === 1n) {
    for (let n = 0, pow = 1n; n <= 3; n++, pow *= 10n) {
      if (pow % K !== 0n) continue;
      const ends = K === 1n ? null : textsRegex(multiplesBelow(K, pow, n));
      const magnitudes = (a: bigint, b: bigint | null) => suffixMultiples(K, pow, ends, a, b);
      return signedInts(lo && ceilDec(lo), hi && floorDec(hi), magnitudes);
    }
  }
  if (lo === null || hi === null) {
    throw new NumberRangeError(
      `Unsupported multipleOf "${decText(K, scale)}": only with both bounds, or as an integer dividing 1000`,
      "multipleOf",
    );
  }
  // List them: m·step for m from the least to the greatest in range, on one exact grid of 10^-D.
  const D = Math.max(String(scale).length - 1, lo.d.frac.length, hi.d.frac.length);
  const unit = 10n ** BigInt(D);
  const [a, b, step] = [scaled(lo.d, D), scaled(hi.d, D), (K * unit) / scale];
  let m0 = divCeil(a, step);
  if (lo.exclusive && m0 * step === a) m0++;
  let m1 = divFloor(b, step);
  if (hi.exclusive && m1 * step === b) m1--;
  if (m1 < m0) return null;
  if (m1 - m0 >= BigInt(MAX_MULTIPLES)) {
    throw new NumberRangeError(
      `Unsupported multipleOf "${decText(K, scale)}": more than ${MAX_MULTIPLES} multiples in range`,
      "multipleOf",
    );
  }
  const texts: string[] = [];
  for (let m = m0; m <= m1; m++) texts.push(decText(m * step, unit));
  return textsRegex(texts);
}

/**
 * Magnitudes in [a, b] that are multiples of K, where K divides pow = 10^n: numbers ≥ pow whose last n digits
 * (`ends`, null for any) are a multiple, and the few near the bounds listed.
 */
function suffixMultiples(K: bigint, pow: bigint, ends: string | null, a: bigint, b: bigint | null) {
  if (ends === null) return intRange(a, b);
  if (b !== null && a > b) return null;
  const alts: string[] = [];
  // Whole blocks [q·pow, q·pow + pow − 1] inside [a, b]: the prefix q, then any multiple's ending.
  const qa = a <= pow ? 1n : divCeil(a, pow);
  const qb = b === null ? null : divFloor(b + 1n, pow) - 1n;
  const listed: bigint[] = [];
  const list = (from: bigint, to: bigint) => {
    for (let v = divCeil(from, K) * K; v <= to; v += K) listed.push(v);
  };
  if (qb === null || qa <= qb) {
    alts.push(intRange(qa, qb)! + ends);
    list(a, qa * pow - 1n);
    if (qb !== null) list((qb + 1n) * pow, b!);
  } else list(a, b!);
  if (listed.length > 0) alts.push(textsRegex(listed.map(String)));
  return alts.length === 0 ? null : group(alts);
}

/** The n-digit endings (leading zeros kept) of multiples of K below pow = 10^n. */
function multiplesBelow(K: bigint, pow: bigint, n: number): string[] {
  const out: string[] = [];
  for (let v = 0n; v < pow; v += K) out.push(String(v).padStart(n, "0"));
  return out;
}

/**
 * A regex of exactly these texts (digits, "-", "."): their trie, with the characters that lead to equal
 * subtrees merged into one class.
 */
function textsRegex(texts: string[]): string {
  interface Trie {
    end: boolean;
    kids: Map<string, Trie>;
  }
  const root: Trie = { end: false, kids: new Map() };
  for (const t of texts) {
    let at = root;
    for (const c of t) {
      if (!at.kids.has(c)) at.kids.set(c, { end: false, kids: new Map() });
      at = at.kids.get(c)!;
    }
    at.end = true;
  }
  const emit = (t: Trie): string => {
    const bySubtree = new Map<string, string[]>();
    for (const [c, kid] of t.kids) {
      const sub = emit(kid);
      bySubtree.set(sub, [...(bySubtree.get(sub) ?? []), c]);
    }
    const alts = [...bySubtree].map(([sub, cs]) => charClass(cs) + sub);
    if (alts.length === 0) return "";
    return t.end ? `(?:${alts.join("|")})?` : group(alts);
  };
  return emit(root);
}

/** One character, or a class of several (digits, "-", "."). */
function charClass(cs: string[]): string {
  const esc = (c: string) => (c === "." || c === "-" ? `\\${c}` : c);
  if (cs.length === 1) return esc(cs[0]);
  const ds = cs.filter((c) => c >= "0" && c <= "9").map(Number).sort((x, y) => x - y);
  let body = cs.filter((c) => c < "0" || c > "9").map(esc).join("");
  for (let i = 0; i < ds.length;) {
    let j = i;
    while (j + 1 < ds.length && ds[j + 1] === ds[j] + 1) j++;
    body += j - i >= 2 ? `${ds[i]}-${ds[j]}` : ds.slice(i, j + 1).join("");
    i = j + 1;
  }
  return body === "0-9" ? "\\d" : `[${body}]`;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

function divFloor(a: bigint, b: bigint): bigint {
  const q = a / b;
  return q * b > a ? q - 1n : q;
}

function divCeil(a: bigint, b: bigint): bigint {
  const q = a / b;
  return q * b < a ? q + 1n : q;
}

/** d · 10^D, exact (D ≥ d's fraction digits). */
function scaled(d: Dec, D: number): bigint {
  const v = BigInt(`${d.int}${d.frac.padEnd(D, "0")}`);
  return d.neg ? -v : v;
}

function fromScaled(v: bigint, scale: bigint): Dec {
  const m = v < 0n ? -v : v;
  const n = String(scale).length - 1;
  const frac = n === 0 ? "" : String(m % scale).padStart(n, "0").replace(/0+$/, "");
  return { neg: v < 0n, int: m / scale, frac };
}

/** The JSON text of v / scale. */
function decText(v: bigint, scale: bigint): string {
  const d = fromScaled(v, scale);
  return `${d.neg ? "-" : ""}${d.int}${d.frac ? `.${d.frac}` : ""}`;
}
