import assert from "node:assert/strict";
import { isIPv4, isIPv6 } from "node:net";
import { RegexDfa } from "./regex.ts";
import { isKnownFormat, stringFormatRegex } from "./string_formats.ts";
import { dfaMatches } from "../../tests/_walk.ts";

/** A format's DFA. */
function format(name: string): RegexDfa {
  const re = stringFormatRegex(name);
  assert.ok(re !== undefined, name);
  return new RegexDfa(re);
}

function checkExamples(name: string, valid: string[], invalid: string[]): void {
  const dfa = format(name);
  for (const t of valid) assert.ok(dfaMatches(dfa, t), `${name} should accept ${JSON.stringify(t)}`);
  for (const t of invalid) assert.ok(!dfaMatches(dfa, t), `${name} should refuse ${JSON.stringify(t)}`);
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");
const leap = (y: number) => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
const daysIn = (y: number, m: number) =>
  [31, leap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];

Deno.test("format date: exactly the real calendar days (months, month lengths, leap years)", () => {
  const dfa = format("date");
  for (const y of [0, 1, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9999]) {
    for (let m = 0; m <= 13; m++) {
      for (let d = 0; d <= 32; d++) {
        const valid = m >= 1 && m <= 12 && d >= 1 && d <= daysIn(y, m);
        const text = `${pad(y, 4)}-${pad(m)}-${pad(d)}`;
        assert.equal(dfaMatches(dfa, text), valid, text);
      }
    }
  }
  for (let y = 0; y <= 9999; y++) assert.equal(dfaMatches(dfa, `${pad(y, 4)}-02-29`), leap(y), String(y));
  for (const t of ["2024-1-01", "24-01-01", "2024/01/01", "2024-01-01T", "+2024-01-01", "２０２４-01-01"]) {
    assert.ok(!dfaMatches(dfa, t), t);
  }
});

Deno.test("format time: RFC 3339 full-time, hours, minutes, seconds and offsets in range", () => {
  const dfa = format("time");
  const offsets = ["Z", "z", "+01:00", "-23:59", "+24:00", "+01:60", "", "+0100", "-00:00"];
  for (const h of [0, 9, 23, 24]) {
    for (const m of [0, 59, 60]) {
      for (const s of [0, 59, 60]) {
        for (const frac of ["", ".5", ".123456", "."]) {
          for (const off of offsets) {
            const text = `${pad(h)}:${pad(m)}:${pad(s)}${frac}${off}`;
            const offOk = off === "Z" || /^[+-]([01]\d|2[0-3]):[0-5]\d$/.test(off);
            const valid = h <= 23 && m <= 59 && s <= 59 && frac !== "." && offOk;
            assert.equal(dfaMatches(dfa, text), valid, text);
          }
        }
      }
    }
  }
});

Deno.test("format date-time: RFC 3339 examples", () => {
  checkExamples("date-time", [
    "1985-04-12T23:20:50.52Z",
    "1996-12-19T16:39:57-08:00",
    "1937-01-01T12:00:27.87+00:20",
    "2024-02-29T00:00:00Z",
  ], [
    "1990-12-31T23:59:60Z", // no leap seconds
    "1985-04-12 23:20:50Z",
    "1985-04-12T23:20:50",
    "1985-04-12t23:20:50z",
    "1985-4-12T23:20:50Z",
    "2023-02-29T00:00:00Z",
    "2024-06-31T00:00:00Z",
    "2024-00-10T00:00:00Z",
    "2024-01-01T25:00:00Z",
  ]);
});

Deno.test("format duration: ISO 8601 as RFC 3339 Appendix A has it", () => {
  checkExamples(
    "duration",
    ["P1Y", "P1Y2M3DT4H5M6S", "PT1H", "PT0S", "P2W", "P1M", "P1DT2H", "PT36H", "P1Y3D", "PT1H30S"],
    ["P", "PT", "P1H", "P1S", "1Y", "P1Y2W", "PT1H2D", "P1D2M", "P1.5Y", "P1YT", "p1y", "P-1D"],
  );
});

Deno.test("format uuid, email, hostname, uri: representative examples", () => {
  checkExamples("uuid", [
    "123e4567-e89b-12d3-a456-426614174000",
    "00000000-0000-0000-0000-000000000000",
    "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6",
  ], [
    "123e4567e89b12d3a456426614174000",
    "123e4567-e89b-12d3-a456-42661417400",
    "123e4567-e89b-12d3-a456-4266141740000",
    "g23e4567-e89b-12d3-a456-426614174000",
    "{123e4567-e89b-12d3-a456-426614174000}",
  ]);
  checkExamples("email", [
    "joe@example.com",
    "first.last+tag@sub.example.co.uk",
    "o'brien_x@ex-ample.io",
    "a@b.c",
  ], [
    "joe",
    "@example.com",
    "joe@",
    "joe@example",
    ".joe@example.com",
    "joe.@example.com",
    "jo..e@example.com",
    "joe@-ex.com",
    "joe@ex-.com",
    "joe @ex.com",
    "joe@ex..com",
    "joe@ex.com.",
    '"joe"@ex.com',
    "jöe@ex.com",
  ]);
  checkExamples("hostname", [
    "localhost",
    "example.com",
    "a-b.c1",
    "x".repeat(63),
    `${"x".repeat(63)}.${"y".repeat(63)}`,
  ], [
    "",
    "-a.com",
    "a-.com",
    "a..b",
    "a.",
    "x".repeat(64),
    "a_b.com",
    "a b",
  ]);
  checkExamples("uri", [
    "https://example.com/a?b=c#d",
    "mailto:joe@example.com",
    "urn:isbn:0451450523",
    "http://x.y/%20z",
    "ftp://u:p@host:21/path;type=a",
    "a+b.c-d:x",
  ], [
    "example.com",
    "/relative/path",
    "1http://x",
    "http://a b",
    "http://x/%zz",
    "http://x#a#b",
    "http:",
    "http://ex.com/ä",
    "http://[::1]/",
  ]);
});

Deno.test("format ipv4: agrees with node:net on every octet and on leading zeros", () => {
  const dfa = format("ipv4");
  for (let o = 0; o <= 300; o++) {
    for (const text of [`${o}.0.0.1`, `1.2.3.${o}`, `0${o}.1.1.1`]) {
      assert.equal(dfaMatches(dfa, text), isIPv4(text), text);
    }
  }
  for (const t of ["1.2.3", "1.2.3.4.5", "1..3.4", "1.2.3.4.", " 1.2.3.4", "a.b.c.d"]) {
    assert.ok(!dfaMatches(dfa, t) && !isIPv4(t), t);
  }
});

Deno.test("format ipv6: agrees with node:net on every compression of random addresses and their mutations", () => {
  const dfa = format("ipv6");
  let seed = 99;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const group = () =>
    rand(4) === 0 ? "0" : rand(0x10000).toString(16)[rand(2) ? "toUpperCase" : "toLowerCase"]();
  let checked = 0;
  for (let n = 0; n < 300; n++) {
    const v4 = rand(3) === 0;
    const groups = Array.from({ length: v4 ? 6 : 8 }, group);
    const tail = v4 ? [`${rand(256)}.${rand(256)}.${rand(256)}.${rand(256)}`] : [];
    const texts = [[...groups, ...tail].join(":")];
    // "::" in place of every run of groups (one or more).
    for (let i = 0; i <= groups.length; i++) {
      for (let j = i + 1; j <= groups.length; j++) {
        const left = groups.slice(0, i).join(":");
        const right = [...groups.slice(j), ...tail].join(":");
        texts.push(`${left}::${right}`);
      }
    }
    for (const t of [...texts]) {
      // Mutations: a group too many or too few, a triple colon, a 5-digit group, a stray character.
      texts.push(
        `${t}:1`,
        t.replace(/^[^:]*:/, ""),
        t.replace("::", ":::"),
        `${t.replace(/[^:]+$/, "12345")}`,
      );
      texts.push(t.replace(/[0-9a-f]/i, "g"), `${t}::`, `::${t}`);
    }
    for (const t of texts) {
      assert.equal(dfaMatches(dfa, t), isIPv6(t), t);
      checked++;
    }
  }
  assert.ok(checked > 10_000, String(checked));
});

Deno.test("isKnownFormat(): string and number formats, nothing else", () => {
  for (const f of ["date", "uri", "int32", "double"]) assert.ok(isKnownFormat(f), f);
  for (const f of ["iri", "regex", "constructor", "toString", ""]) assert.ok(!isKnownFormat(f), f);
  assert.equal(stringFormatRegex("int32"), undefined);
});
