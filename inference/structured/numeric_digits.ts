/**
 * Number ranges as regular expressions (regex.ts syntax): the texts of the integers, or of the decimals,
 * whose value lies between two bounds (numeric_bounds.ts), as numeric_range.ts puts them together.
 *
 * The classic integer-range construction (split by digit count, then at the first digit where the bounds
 * differ: the digits between are free, the two edge digits recurse), extended to decimals: the integer part
 * at a bound's own integer part continues into a fraction bounded the same way digit by digit, with any number
 * of fraction digits (`0.5` ≤ x: `0.5`, `0.50`, `0.5000001`, `0.6`, … all match). Negative values are `-` and
 * a magnitude in the mirrored range.
 */
import type { Bound, Dec } from "./numeric_bounds.ts";

/** `alts` as one term: alone, or a non-capturing group. */
export function group(alts: string[]): string {
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
export function signedInts(
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
export function signedDecimals(lo: Bound | null, hi: Bound | null): string | null {
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
