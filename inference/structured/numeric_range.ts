/**
 * Number bounds as regular expressions (regex.ts): the JSON number texts whose value lies in a range, for
 * JSON Schema's `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` and `multipleOf`. The bounds are
 * read as exact decimals (numeric_bounds.ts), the texts in range built digit by digit (numeric_digits.ts: the
 * classic integer-range construction, extended to decimals); `multipleOf` is here, on top of both.
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
import {
  type Bound,
  ceilDec,
  type Dec,
  floorDec,
  type NumberBound,
  NumberRangeError,
  tightest,
  toDec,
} from "./numeric_bounds.ts";
import { group, intRange, signedDecimals, signedInts } from "./numeric_digits.ts";

/** The values a number node allows. */
export interface NumberSpec {
  /** no fraction (JSON Schema `integer`) */
  integer: boolean;
  lower: NumberBound[];
  upper: NumberBound[];
  /** > 0, or null */
  multipleOf: number | null;
}

/** Most multiples listed one by one (a `multipleOf` that no digit rule covers). */
export const MAX_MULTIPLES = 256;

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
