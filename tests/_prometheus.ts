/**
 * A strict parser of Prometheus' text exposition format 0.0.4 for tests: it throws on anything a
 * scraper could misread, so a test that parses /metrics checks the format, not just the numbers.
 * Checks: every line matches the grammar, HELP/TYPE come once and before their family's samples, a
 * family's samples are contiguous, no series repeats, counters are ≥ 0, and each histogram series has
 * increasing `le` bounds, cumulative bucket counts, a `+Inf` bucket equal to `_count`, and `_sum`.
 * Reference: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 */

/** One sample line. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One metric family. */
export interface PromFamily {
  type: string;
  help: string | null;
  samples: PromSample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL = "[a-zA-Z_][a-zA-Z0-9_]*";
const VALUE = "(?:[+-]?Inf|NaN|[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?)";
const LABEL_VALUE = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const SAMPLE_RE = new RegExp(
  `^(${NAME})(?:\\{((?:${LABEL}=${LABEL_VALUE})(?:,${LABEL}=${LABEL_VALUE})*,?)?\\})? (${VALUE})(?: -?\\d+)?$`,
);
const HELP_RE = new RegExp(`^# HELP (${NAME}) ((?:[^\\\\\\n]|\\\\[\\\\n])*)$`);
const TYPE_RE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const PAIR_RE = new RegExp(`(${LABEL})=(${LABEL_VALUE})`, "g");

/**
 * Parses and validates an exposition.
 * @param text The body of a /metrics response.
 * @returns The families by name; throws an Error naming the line at fault.
 */
export function parsePrometheus(text: string): Map<string, PromFamily> {
  if (text !== "" && !text.endsWith("\n")) throw new Error("Exposition must end with a newline");
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  let current: string | null = null;
  const lines = text === "" ? [] : text.slice(0, -1).split("\n");
  lines.forEach((line, i) => {
    const fail = (why: string) => {
      throw new Error(`Line ${i + 1} "${line}": ${why}`);
    };
    const enter = (family: string) => {
      if (current !== family) {
        if (closed.has(family)) fail(`family ${family} appears in two places`);
        if (current) closed.add(current);
        current = family;
      }
    };
    let m: RegExpMatchArray | null;
    if ((m = line.match(HELP_RE))) {
      enter(m[1]);
      const f = families.get(m[1]) ?? { type: "untyped", help: null, samples: [] };
      if (f.help !== null) fail("second HELP");
      if (f.samples.length) fail("HELP after samples");
      f.help = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      families.set(m[1], f);
    } else if ((m = line.match(TYPE_RE))) {
      enter(m[1]);
      const f = families.get(m[1]) ?? { type: "untyped", help: null, samples: [] };
      if (f.samples.length || f.type !== "untyped") fail("TYPE repeated or after samples");
      f.type = m[2];
      families.set(m[1], f);
    } else if (line.startsWith("#")) {
      if (/^#\s*(HELP|TYPE)\b/.test(line)) fail("malformed HELP or TYPE");
    } else if ((m = line.match(SAMPLE_RE))) {
      const sample = parseSample(m, fail);
      const family = familyOf(sample.name, families);
      if (!family) fail("sample without a TYPE line for its family");
      enter(family!);
      const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
      if (seen.has(key)) fail("duplicate series");
      seen.add(key);
      families.get(family!)!.samples.push(sample);
    } else {
      fail("does not match the sample grammar");
    }
  });
  for (const [name, f] of families) {
    if (f.type === "counter" && f.samples.some((s) => !(s.value >= 0))) {
      throw new Error(`Counter ${name} has a negative or NaN value`);
    }
    if (f.type === "histogram") checkHistogram(name, f.samples);
  }
  return families;
}

/**
 * The value of one series, or undefined.
 * @param families parsePrometheus's result.
 * @param name The sample name (e.g. `x_bucket`).
 * @param labels Labels that must all match (others are ignored).
 */
export function sampleValue(
  families: Map<string, PromFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}

function parseSample(m: RegExpMatchArray, fail: (why: string) => never): PromSample {
  const labels: Record<string, string> = {};
  for (const [, k, quoted] of (m[2] ?? "").matchAll(PAIR_RE)) {
    if (k in labels) fail(`label ${k} repeated`);
    if (k.startsWith("__")) fail(`reserved label ${k}`);
    labels[k] = quoted.slice(1, -1).replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }
  const v = m[3];
  const value = v.endsWith("Inf") ? (v.startsWith("-") ? -Infinity : Infinity) : Number(v);
  return { name: m[1], labels, value };
}

function familyOf(sample: string, families: Map<string, PromFamily>): string | undefined {
  if (families.has(sample) && families.get(sample)!.type !== "histogram") return sample;
  const m = sample.match(/^(.*)_(bucket|sum|count)$/);
  if (m && families.get(m[1])?.type === "histogram") return m[1];
  return undefined;
}

function checkHistogram(name: string, samples: PromSample[]): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name === `${name}_bucket`) {
      if (le === undefined) throw new Error(`${name}_bucket without le`);
      entry.buckets.push([le === "+Inf" ? Infinity : Number(le), s.value]);
    } else if (s.name === `${name}_sum`) entry.sum = s.value;
    else entry.count = s.value;
  }
  for (const [key, e] of series) {
    const where = `${name}${key}`;
    if (e.sum === undefined || e.count === undefined) throw new Error(`${where}: missing _sum or _count`);
    for (let i = 1; i < e.buckets.length; i++) {
      if (!(e.buckets[i][0] > e.buckets[i - 1][0])) throw new Error(`${where}: le bounds not increasing`);
      if (e.buckets[i][1] < e.buckets[i - 1][1]) throw new Error(`${where}: buckets not cumulative`);
    }
    const last = e.buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new Error(`${where}: no +Inf bucket last`);
    if (last[1] !== e.count) throw new Error(`${where}: +Inf bucket ${last[1]} != _count ${e.count}`);
  }
}
