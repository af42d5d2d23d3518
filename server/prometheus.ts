/**
 * A small metrics registry that renders Prometheus' text exposition format 0.0.4: counters, gauges and
 * histograms with labels, `# HELP` and `# TYPE` before each family's samples, escaped label values.
 * Gauges and counters may be read at scrape time through a `collect` callback (values another component
 * keeps, such as the engine's) instead of being set or incremented here.
 * Reference: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 */

/** The Content-Type of `Registry.render()`'s output. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label name → value of one series. */
export type Labels = Readonly<Record<string, string>>;

/** One series of a gauge or counter read at scrape time. */
export interface Sample {
  labels?: Labels;
  value: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** What every family shares: its name, help, type and label names, and how it renders. */
abstract class Family {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    readonly labelNames: readonly string[],
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`Cannot register metric "${name}": invalid name`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || (type === "histogram" && label === "le")) {
        throw new Error(`Cannot register metric "${name}": invalid label name "${label}"`);
      }
    }
  }

  /** The series key of a label set; throws when the set does not match the label names exactly. */
  protected key(labels: Labels): string {
    const keys = Object.keys(labels);
    if (
      keys.length !== this.labelNames.length || !this.labelNames.every((l) => typeof labels[l] === "string")
    ) {
      throw new Error(
        `Cannot use labels {${keys.join(",")}} on metric "${this.name}": expected {${
          this.labelNames.join(",")
        }}`,
      );
    }
    return this.labelNames.map((l) => labels[l]).join("\u0000");
  }

  /** The sample lines, without HELP/TYPE. */
  abstract lines(): string[];

  /** The lines of plain series (counter, gauge), each checked against the declared label names. */
  protected seriesLines(samples: readonly Sample[]): string[] {
    return samples.map((s) => {
      const labels = s.labels ?? {};
      this.key(labels);
      return sampleLine(this.name, labels, s.value);
    });
  }

  render(): string {
    const head = `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
    const lines = this.lines();
    return head + (lines.length ? lines.join("\n") + "\n" : "");
  }
}

/**
 * A monotonically increasing count. Names end in `_total`, as the format's conventions ask. With `collect`
 * the series are read at scrape time from a count kept elsewhere, and `inc()` is refused.
 */
export class Counter extends Family {
  #series = new Map<string, { labels: Labels; value: number }>();

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly collect?: () => Sample[],
  ) {
    super(name, help, "counter", labelNames);
  }

  /**
   * Adds to one series.
   * @param labels Its labels (all of the counter's label names).
   * @param by How much; never negative.
   */
  inc(labels: Labels = {}, by = 1): void {
    if (this.collect) {
      throw new Error(`Cannot increment counter "${this.name}": it is collected at scrape time`);
    }
    if (!(by >= 0)) throw new Error(`Cannot decrease counter "${this.name}" by ${by}`);
    const key = this.key(labels);
    const s = this.#series.get(key);
    if (s) s.value += by;
    else this.#series.set(key, { labels: { ...labels }, value: by });
  }

  /** The current value of one series (0 when never incremented). */
  get(labels: Labels = {}): number {
    const key = this.key(labels);
    if (this.collect) return this.collect().find((s) => this.key(s.labels ?? {}) === key)?.value ?? 0;
    return this.#series.get(key)?.value ?? 0;
  }

  lines(): string[] {
    return this.seriesLines(this.collect ? this.collect() : [...this.#series.values()]);
  }
}

/** A value that goes up and down: set directly, or read at scrape time through `collect`. */
export class Gauge extends Family {
  #series = new Map<string, { labels: Labels; value: number }>();

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly collect?: () => Sample[],
  ) {
    super(name, help, "gauge", labelNames);
  }

  /** Sets one series. */
  set(labels: Labels, value: number): void {
    this.#series.set(this.key(labels), { labels: { ...labels }, value });
  }

  lines(): string[] {
    return this.seriesLines(this.collect ? this.collect() : [...this.#series.values()]);
  }
}

/** Observations counted into cumulative buckets, with their sum and count. */
export class Histogram extends Family {
  readonly buckets: readonly number[];
  #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(name: string, help: string, buckets: readonly number[], labelNames: readonly string[]) {
    super(name, help, "histogram", labelNames);
    const ok = buckets.length > 0 &&
      buckets.every((b, i) => Number.isFinite(b) && (i === 0 || b > buckets[i - 1]));
    if (!ok) throw new Error(`Cannot register histogram "${name}": buckets must be finite and increasing`);
    this.buckets = [...buckets];
  }

  /** Records one observation (NaN is ignored: it would poison the sum). */
  observe(labels: Labels, value: number): void {
    if (Number.isNaN(value)) return;
    const key = this.key(labels);
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  lines(): string[] {
    const out: string[] = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i];
        out.push(sampleLine(`${this.name}_bucket`, { ...s.labels, le: formatValue(b) }, cumulative));
      });
      out.push(sampleLine(`${this.name}_bucket`, { ...s.labels, le: "+Inf" }, s.count));
      out.push(sampleLine(`${this.name}_sum`, s.labels, s.sum));
      out.push(sampleLine(`${this.name}_count`, s.labels, s.count));
    }
    return out;
  }
}

/** The families of one exporter, rendered in registration order. */
export class Registry {
  #families = new Map<string, Family>();

  /**
   * Registers a counter.
   * @param name Metric name, ending in `_total`.
   * @param help One line of help text.
   * @param labelNames The label names every series carries.
   * @param options `collect` to read the series at scrape time (a count kept elsewhere) instead of `inc()`.
   * @returns The counter.
   */
  counter(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
    { collect }: { collect?: () => Sample[] } = {},
  ): Counter {
    if (!name.endsWith("_total")) {
      throw new Error(`Cannot register counter "${name}": its name must end in _total`);
    }
    return this.#add(new Counter(name, help, labelNames, collect));
  }

  /**
   * Registers a gauge.
   * @param name Metric name.
   * @param help One line of help text.
   * @param options Label names, and `collect` to read the series at scrape time instead of `set()`.
   * @returns The gauge.
   */
  gauge(
    name: string,
    help: string,
    { labelNames = [], collect }: { labelNames?: readonly string[]; collect?: () => Sample[] } = {},
  ): Gauge {
    return this.#add(new Gauge(name, help, labelNames, collect));
  }

  /**
   * Registers a histogram.
   * @param name Metric name (the `_bucket`, `_sum` and `_count` series derive from it).
   * @param help One line of help text.
   * @param buckets Upper bounds, increasing; `+Inf` is implied.
   * @param labelNames The label names every series carries.
   * @returns The histogram.
   */
  histogram(
    name: string,
    help: string,
    buckets: readonly number[],
    labelNames: readonly string[] = [],
  ): Histogram {
    return this.#add(new Histogram(name, help, buckets, labelNames));
  }

  /**
   * Renders every family in the text exposition format 0.0.4.
   * @returns The body of a /metrics response (serve it as PROMETHEUS_CONTENT_TYPE).
   * @example
   * ```ts
   * import { Registry } from "./prometheus.ts";
   * const registry = new Registry();
   * registry.counter("demo_requests_total", "Requests.", ["route"]).inc({ route: "/a" });
   * console.assert(registry.render().endsWith('demo_requests_total{route="/a"} 1\n'));
   * ```
   */
  render(): string {
    return [...this.#families.values()].map((f) => f.render()).join("");
  }

  #add<F extends Family>(family: F): F {
    if (this.#families.has(family.name)) throw new Error(`Cannot register metric "${family.name}" twice`);
    this.#families.set(family.name, family);
    return family;
  }
}

function sampleLine(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return `${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${formatValue(value)}`;
}

/** Go's ParseFloat reads JavaScript's number formatting, except for the infinities and NaN. */
function formatValue(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

function escapeLabelValue(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function escapeHelp(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}
