/** Timings of bench/serve.ts's requests and the table they become. */

/** One request as the load generator saw it (milliseconds, performance.now()). */
export interface RequestTiming {
  start: number;
  /** time to the first output token */
  ttft: number;
  /** the gap before each later token, stamped with its arrival */
  gaps: { at: number; ms: number }[];
  tokens: number;
  end: number;
  /** prompt ids the engine's prefix cache served (its end event, or over HTTP the stream's usage) */
  cached?: number;
}

/** One row of the table. */
export interface Summary {
  label: string;
  concurrency: number;
  requests: number;
  outputTokens: number;
  wallSeconds: number;
  outputTokensPerSecond: number;
  ttftMs: { p50: number; p99: number };
  itlMs: { p50: number; p99: number };
  /** prompt ids the prefix cache served, over all requests */
  cachedPromptTokens: number;
  /** with --long-prompt: its own TTFT, and the other streams' gaps while it was prefilled */
  longPrompt: { ttftMs: number; itlMsDuring: { p50: number; p99: number }; gaps: number } | null;
  /**
   * against a server: how long GET /health took while the load ran (probed every 50 ms), i.e. how long the
   * HTTP loop kept a request waiting; null in process
   */
  healthMs?: { p50: number; p99: number; max: number } | null;
}

/** The p-th percentile (0..100) by nearest rank; NaN for no values. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const stats = (xs: number[]) => ({ p50: percentile(xs, 50), p99: percentile(xs, 99) });

/** Sums up one (label, concurrency) run. */
export function summarize(
  label: string,
  concurrency: number,
  timings: RequestTiming[],
  wallMs: number,
  long: RequestTiming | null,
): Summary {
  const tokens = timings.reduce((n, t) => n + t.tokens, 0);
  const gaps = timings.flatMap((t) => t.gaps);
  const during = long
    ? gaps.filter((g) => g.at >= long.start && g.at <= long.start + long.ttft).map((g) => g.ms)
    : [];
  return {
    label,
    concurrency,
    requests: timings.length,
    outputTokens: tokens,
    wallSeconds: wallMs / 1000,
    outputTokensPerSecond: tokens / (wallMs / 1000),
    ttftMs: stats(timings.map((t) => t.ttft)),
    itlMs: stats(gaps.map((g) => g.ms)),
    cachedPromptTokens: timings.reduce((n, t) => n + (t.cached ?? 0), 0),
    longPrompt: long ? { ttftMs: long.ttft, itlMsDuring: stats(during), gaps: during.length } : null,
  };
}

/** A markdown table, one row per summary. */
export function toMarkdown(rows: readonly Summary[]): string {
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");
  const head =
    "| model | concurrency | requests | output tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | long prompt: TTFT (ms), ITL p50 / p99 during (ms) | prompt ids cached | GET /health p50 / p99 / max (ms) |\n" +
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";
  const lines = rows.map((r) =>
    `| ${r.label} | ${r.concurrency} | ${r.requests} | ${f(r.outputTokensPerSecond)} | ${f(r.ttftMs.p50)} / ${
      f(r.ttftMs.p99)
    } | ${f(r.itlMs.p50, 2)} / ${f(r.itlMs.p99, 2)} | ${
      r.longPrompt
        ? `${f(r.longPrompt.ttftMs)}, ${f(r.longPrompt.itlMsDuring.p50, 2)} / ${
          f(r.longPrompt.itlMsDuring.p99, 2)
        }`
        : "–"
    } | ${r.cachedPromptTokens} | ${
      r.healthMs ? `${f(r.healthMs.p50)} / ${f(r.healthMs.p99)} / ${f(r.healthMs.max)}` : "–"
    } |`
  );
  return [head, ...lines].join("\n");
}
