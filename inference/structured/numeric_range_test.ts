import assert from "node:assert/strict";
import { type NumberBound, NumberRangeError } from "./numeric_bounds.ts";
import { intRange } from "./numeric_digits.ts";
import { MAX_MULTIPLES, numberRegex } from "./numeric_range.ts";
import { RegexDfa } from "./regex.ts";
import { dfaMatches } from "../../tests/_walk.ts";

/** A bound as numberRegex takes it. */
function bound(keyword: string, value: number, exclusive: boolean): NumberBound {
  return { keyword, value, exclusive };
}

interface Case {
  lo?: number | undefined;
  loEx?: boolean;
  hi?: number | undefined;
  hiEx?: boolean;
}

function dfaOf(c: Case, integer: boolean, multipleOf: number | null = null): RegexDfa {
  const lower = c.lo === undefined ? [] : [bound("minimum", c.lo, c.loEx ?? false)];
  const upper = c.hi === undefined ? [] : [bound("maximum", c.hi, c.hiEx ?? false)];
  return new RegexDfa(numberRegex({ integer, lower, upper, multipleOf }));
}

function inRange(v: number, c: Case): boolean {
  if (c.lo !== undefined && (c.loEx ? v <= c.lo : v < c.lo)) return false;
  if (c.hi !== undefined && (c.hiEx ? v >= c.hi : v > c.hi)) return false;
  return true;
}

/** Every (lower, upper, exclusive) pair over some awkward values, empty ranges left out. */
function cases(values: (number | undefined)[]): Case[] {
  const out: Case[] = [];
  for (const lo of values) {
    for (const hi of values) {
      for (const loEx of lo === undefined ? [false] : [false, true]) {
        for (const hiEx of hi === undefined ? [false] : [false, true]) out.push({ lo, loEx, hi, hiEx });
      }
    }
  }
  return out;
}

const EDGES = [
  undefined,
  -1000,
  -180,
  -100,
  -99,
  -10,
  -1,
  -0.5,
  0,
  0.5,
  1,
  9,
  10,
  99,
  100,
  101,
  123.45,
  180,
  210,
  1000,
];
const WINDOW = 1100;

Deno.test("numberRegex() matches exactly the integers in range, for every pair of awkward bounds", () => {
  const texts = Array.from({ length: 2 * WINDOW + 1 }, (_, i) => i - WINDOW);
  let checked = 0;
  for (const c of cases(EDGES)) {
    for (const integer of [true, false]) {
      // Every bound is inside the window, so an integer range with values has some there.
      const empty = integer
        ? !texts.some((v) => inRange(v, c))
        : c.lo !== undefined && c.hi !== undefined && (c.lo > c.hi || (c.lo === c.hi && (c.loEx || c.hiEx)));
      if (empty) {
        assert.throws(() => dfaOf(c, integer), NumberRangeError, JSON.stringify(c));
        continue;
      }
      const dfa = dfaOf(c, integer);
      for (const v of texts) {
        assert.equal(dfaMatches(dfa, String(v)), inRange(v, c), `${v} in ${JSON.stringify(c)} (${integer})`);
        checked++;
      }
      // Never -0, leading zeros, a plus sign or an exponent.
      for (const bad of ["-0", "00", "01", "+1", "1e1", "-", ""]) assert.ok(!dfaMatches(dfa, bad), bad);
      if (integer) assert.ok(!dfaMatches(dfa, "1.0") && !dfaMatches(dfa, "0.5"));
    }
  }
  assert.ok(checked > 1_000_000, String(checked));
});

/** Decimal texts near a number's: each digit changed, digits appended, the end cut, the sign flipped. */
function nearTexts(x: number): string[] {
  const t = x.toFixed(Math.max(0, -Math.floor(Math.log10(Math.abs(x) || 1)) + 8)).replace(/\.?0+$/, "");
  const out = [t, `-${t}`.replace("--", "")];
  for (let i = 0; i < t.length; i++) {
    if (t[i] < "0" || t[i] > "9") continue;
    for (let d = 0; d <= 9; d++) out.push(t.slice(0, i) + d + t.slice(i + 1));
    out.push(t.slice(0, i + 1));
  }
  for (let d = 0; d <= 9; d++) {
    out.push(`${t}${t.includes(".") ? "" : "."}${d}`, `${t}${t.includes(".") ? "" : "."}0${d}`);
  }
  // Only well-formed JSON numbers (a changed digit may make a leading zero).
  return out.filter((s) => /^-?(0|[1-9]\d*)(\.\d+)?$/.test(s));
}

/** A random decimal text: sign, an integer part (often a small one), maybe a fraction of 1–6 digits. */
function randomDecimal(rand: (n: number) => number): string {
  const int = rand(2) === 0 ? String(rand(3)) : String(rand(1200));
  const frac = rand(3) === 0
    ? ""
    : `.${Array.from({ length: 1 + rand(6) }, () => (rand(3) === 0 ? "0" : String(rand(10)))).join("")}`;
  return `${rand(2) === 0 ? "-" : ""}${int}${frac}`;
}

Deno.test("numberRegex() agrees with JavaScript's comparison on decimals near and far from decimal bounds", () => {
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const values = [
    undefined,
    -750.125,
    -1.75,
    -1.7,
    -0.001,
    0,
    0.1,
    0.5,
    0.57,
    1e-7,
    2.2,
    2.25,
    2.5,
    10.01,
    999.999,
  ];
  let checked = 0;
  for (const c of cases(values)) {
    let dfa: RegexDfa;
    try {
      dfa = dfaOf(c, false);
    } catch (err) {
      assert.ok(err instanceof NumberRangeError);
      assert.ok(
        c.lo !== undefined && c.hi !== undefined && (c.lo > c.hi || (c.lo === c.hi && (c.loEx || c.hiEx))),
      );
      continue;
    }
    const probes = [...nearTexts(c.lo ?? 0), ...nearTexts(c.hi ?? 0)];
    for (let n = 0; n < 300; n++) probes.push(randomDecimal(rand));
    for (const text of probes) {
      const v = Number(text);
      const negativeZero = text.startsWith("-") && v === 0;
      assert.equal(dfaMatches(dfa, text), inRange(v, c) && !negativeZero, `${text} in ${JSON.stringify(c)}`);
      checked++;
    }
    for (const bad of ["1.", ".5", "-", "01.5", "1e0", "0.5e1"]) assert.ok(!dfaMatches(dfa, bad), bad);
  }
  assert.ok(checked > 50_000, String(checked));
});

Deno.test("numberRegex() with tiny and long decimal bounds", () => {
  const tiny = dfaOf({ lo: 1e-7, loEx: true, hi: 1e-6 }, false);
  assert.ok(
    dfaMatches(tiny, "0.0000001000001") && dfaMatches(tiny, "0.000001") && dfaMatches(tiny, "0.00000050"),
  );
  assert.ok(!dfaMatches(tiny, "0.0000001") && !dfaMatches(tiny, "0.0000010001") && !dfaMatches(tiny, "0"));
  const third = dfaOf({ lo: 1 / 3, hi: 2 / 3 }, false); // 0.3333333333333333 and 0.6666666666666666
  assert.ok(
    dfaMatches(third, "0.3333333333333333") && dfaMatches(third, "0.5") &&
      dfaMatches(third, "0.6666666666666666"),
  );
  assert.ok(!dfaMatches(third, "0.3333333333333332") && !dfaMatches(third, "0.66666666666666661"));
});

Deno.test("intRange() of one-sided ranges is the familiar pattern", () => {
  assert.equal(intRange(0n, null), "(?:0|[1-9]\\d*)");
  assert.equal(intRange(1n, null), "[1-9]\\d*");
  assert.equal(intRange(10n, null), "[1-9]\\d{1,}");
  assert.equal(intRange(3n, 3n), "3");
  assert.equal(intRange(5n, 4n), null);
});

Deno.test("numberRegex() with multipleOf: divisors of 1000 by their last digits, others listed", () => {
  // Wide enough that an open side has a multiple of 1000 in it.
  const texts = Array.from({ length: 4201 }, (_, i) => i - 2100);
  const bounded = cases([undefined, -1000, -99, 0, 0.5, 7, 999]);
  for (const k of [1, 2, 4, 5, 8, 10, 25, 125, 1000, 3, 7, 12]) {
    for (const c of bounded) {
      const want = new Set(texts.filter((v) => inRange(v, c) && v % k === 0));
      const listed = c.lo !== undefined && c.hi !== undefined && want.size <= MAX_MULTIPLES;
      if (want.size === 0 || (1000 % k !== 0 && !listed)) {
        assert.throws(() => dfaOf(c, true, k), NumberRangeError, `${k} ${JSON.stringify(c)}`);
        continue;
      }
      const dfa = dfaOf(c, true, k);
      for (const v of texts) assert.equal(dfaMatches(dfa, String(v)), want.has(v), `${v} % ${k}`);
      assert.ok(!dfaMatches(dfa, "-0") && !dfaMatches(dfa, `${k}.0`));
      // A number that is a multiple of an integer is an integer: the same texts.
      if (c.lo === 0) assert.equal(dfaOf(c, false, k).source, dfa.source);
    }
  }
  // Integers bigger than the window: the rule is on the last digits.
  const eight = dfaOf({}, true, 8);
  for (const v of [123456789000n, 10n ** 30n + 8n, -(2n ** 70n)]) assert.ok(dfaMatches(eight, String(v)));
  for (const v of [123456789004n, 10n ** 30n + 4n]) assert.ok(!dfaMatches(eight, String(v)));
});

Deno.test("numberRegex() with a decimal multipleOf lists the multiples in range", () => {
  const quarter = dfaOf({ lo: -1, hi: 2, hiEx: true }, false, 0.25);
  const want = ["-1", "-0.75", "-0.5", "-0.25", "0", "0.25", "0.5", "0.75", "1", "1.25", "1.5", "1.75"];
  for (const t of want) assert.ok(dfaMatches(quarter, t), t);
  for (const t of ["2", "0.3", "-1.25", "0.50", "-0", "1.0"]) assert.ok(!dfaMatches(quarter, t), t);
  // 0.1 is the decimal 0.1, not the double's binary expansion: 0.3 is a multiple.
  const tenth = dfaOf({ lo: 0.15, hi: 0.35 }, false, 0.1);
  assert.ok(
    dfaMatches(tenth, "0.2") && dfaMatches(tenth, "0.3") && !dfaMatches(tenth, "0.1") &&
      !dfaMatches(tenth, "0.4"),
  );
  // Integers that are multiples of 1.5: the multiples of 3.
  const threeHalves = dfaOf({ lo: 0, hi: 10 }, true, 1.5);
  assert.deepEqual(
    Array.from({ length: 11 }, (_, v) => v).filter((v) => dfaMatches(threeHalves, String(v))),
    [0, 3, 6, 9],
  );
  // An integer type with multipleOf 0.5: every integer.
  assert.ok(dfaMatches(dfaOf({}, true, 0.5), "12345"));
});

Deno.test("numberRegex() refuses what it cannot bound, naming the keyword", () => {
  const refuse = (spec: Parameters<typeof numberRegex>[0], keyword: string) =>
    assert.throws(() => numberRegex(spec), (e: unknown) => {
      assert.ok(e instanceof NumberRangeError, String(e));
      assert.equal(e.keyword, keyword, e.message);
      return true;
    });
  const none = { integer: true, lower: [], upper: [], multipleOf: null };
  refuse({ ...none, lower: [bound("minimum", 5, false)], upper: [bound("maximum", 3, false)] }, "minimum");
  refuse(
    { ...none, lower: [bound("exclusiveMinimum", 3, true)], upper: [bound("maximum", 3, false)] },
    "exclusiveMinimum",
  );
  refuse(
    { ...none, lower: [bound("minimum", 0.2, false)], upper: [bound("maximum", 0.8, false)] },
    "minimum",
  );
  refuse({ ...none, upper: [bound("maximum", 1e300, false)] }, "maximum");
  refuse({ ...none, lower: [bound("minimum", 1e-45, false)], integer: false }, "minimum");
  refuse({ ...none, multipleOf: 3 }, "multipleOf");
  refuse({ ...none, lower: [bound("minimum", 0, false)], multipleOf: 7 }, "multipleOf");
  refuse(
    {
      integer: false,
      lower: [bound("minimum", 0, false)],
      upper: [bound("maximum", 1000, false)],
      multipleOf: 0.01,
    },
    "multipleOf",
  );
  // The tightest bound of a side holds.
  const both = numberRegex({
    ...none,
    lower: [bound("minimum", 3, false), bound("exclusiveMinimum", 3, true), bound("minimum", -7, false)],
    upper: [bound("maximum", 6, false), bound("exclusiveMaximum", 9, true)],
  });
  const dfa = new RegexDfa(both);
  assert.deepEqual([2, 3, 4, 6, 7].map((v) => dfaMatches(dfa, String(v))), [false, false, true, true, false]);
  // MAX_MULTIPLES listed values are fine, one more is not.
  const listed = (hi: number) => ({
    ...none,
    lower: [bound("minimum", 1, false)],
    upper: [bound("maximum", hi, false)],
  });
  assert.ok(numberRegex({ ...listed(3 * MAX_MULTIPLES), multipleOf: 3 }));
  refuse({ ...listed(3 * MAX_MULTIPLES + 3), multipleOf: 3 }, "multipleOf");
});

Deno.test("numberRegex() keeps the regex small where bounds are long", () => {
  const long = numberRegex({
    integer: false,
    lower: [bound("minimum", -123456789.12345678, false)],
    upper: [bound("maximum", 987654321.9876543, true)],
    multipleOf: null,
  });
  const huge = numberRegex({
    integer: true,
    lower: [{ keyword: "minimum", value: -(10n ** 39n) + 17n, exclusive: false }],
    upper: [{ keyword: "maximum", value: 10n ** 39n - 23n, exclusive: false }],
    multipleOf: null,
  });
  for (const re of [long, huge]) {
    assert.ok(re.length < 4000, String(re.length));
    new RegexDfa(re); // within the NFA's state budget
  }
  const dfa = new RegexDfa(huge);
  assert.ok(dfaMatches(dfa, String(10n ** 39n - 23n)) && !dfaMatches(dfa, String(10n ** 39n - 22n)));
  assert.ok(dfaMatches(dfa, String(-(10n ** 39n) + 17n)) && !dfaMatches(dfa, String(-(10n ** 39n) + 16n)));
});

Deno.test("numberRegex() matches exactly the decimals in range, every text of up to 3 fraction digits", () => {
  const texts: string[] = [];
  for (let int = 0; int <= 3; int++) {
    texts.push(String(int));
    for (let n = 1; n <= 3; n++) {
      for (let f = 0; f < 10 ** n; f++) texts.push(`${int}.${String(f).padStart(n, "0")}`);
    }
  }
  texts.push(...texts.map((t) => `-${t}`));
  const values = [undefined, -2.05, -2, -1.5, -0.5, -0.05, 0, 0.05, 0.5, 0.55, 1.05, 2, 2.005, 2.3, 2.5];
  let checked = 0;
  for (const c of cases(values)) {
    const empty = c.lo !== undefined && c.hi !== undefined &&
      (c.lo > c.hi || (c.lo === c.hi && (c.loEx || c.hiEx)));
    if (empty) continue; // the random-decimal test checks those throw
    const dfa = dfaOf(c, false);
    for (const t of texts) {
      const v = Number(t);
      assert.equal(
        dfaMatches(dfa, t),
        inRange(v, c) && !(v === 0 && t.startsWith("-")),
        `${t} in ${JSON.stringify(c)}`,
      );
      checked++;
    }
  }
  assert.ok(checked > 3_000_000, String(checked));
});
