// The status strip on both pages: /health plus a few gauges from /metrics (Prometheus text format). Every
// metric is optional: a server without /metrics, or without one of the series, shows "—" for it.
import { formatBytes } from "./dom.js";

/**
 * @typedef {{name: string, labels: Record<string, string>, value: number}} Sample
 * @typedef {{
 *   running: number|null, waiting: number|null, kvUsage: number|null, prefixHitRate: number|null,
 *   gpuBytes: Record<string, number>, generationTokens: number|null, tokensPerSecond: number|null
 * }} Summary
 */

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;

/**
 * Parses Prometheus text exposition into samples; comments, blank and malformed lines are skipped.
 * @param {string} text
 * @returns {Sample[]}
 */
export function parsePrometheus(text) {
  /** @type {Sample[]} */
  const out = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const m = SAMPLE.exec(line.trim());
    if (!m) continue;
    const value = Number(m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : m[3]);
    if (Number.isNaN(value) && m[3] !== "NaN") continue;
    /** @type {Record<string, string>} */
    const labels = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    out.push({ name: m[1], labels, value });
  }
  return out;
}

/**
 * Picks the strip's numbers out of the samples. Throughput is the difference of the generated-token counter
 * against the previous summary.
 * @param {Sample[]} samples
 * @param {{summary: Summary, at: number}|null} previous The last summary and when it was taken (ms).
 * @param {number} now Time of this scrape (ms).
 * @returns {Summary}
 */
export function summarizeMetrics(samples, previous, now) {
  const one = (/** @type {string} */ name) => {
    const s = samples.filter((x) => x.name === name);
    return s.length ? s.reduce((a, x) => a + x.value, 0) : null;
  };
  /** @type {Record<string, number>} */
  const gpuBytes = {};
  for (const s of samples) {
    if (s.name === "leanserve_gpu_bytes") gpuBytes[s.labels.kind ?? "total"] = s.value;
  }
  const generationTokens = one("leanserve_generation_tokens_total");
  let tokensPerSecond = null;
  const before = previous?.summary.generationTokens;
  if (generationTokens !== null && typeof before === "number" && previous && now > previous.at) {
    // A counter that went down means the server restarted: no rate for this interval.
    if (generationTokens >= before) {
      tokensPerSecond = (generationTokens - before) / ((now - previous.at) / 1000);
    }
  }
  // Since the server started: the share of admitted prompt tokens the prefix cache served.
  const queries = one("leanserve_prefix_cache_queries_total");
  const hits = one("leanserve_prefix_cache_hits_total");
  return {
    running: one("leanserve_requests_running"),
    waiting: one("leanserve_requests_waiting"),
    kvUsage: one("leanserve_kv_cache_usage_ratio"),
    prefixHitRate: queries && hits !== null ? hits / queries : null,
    gpuBytes,
    generationTokens,
    tokensPerSecond,
  };
}

/**
 * The strip's text fields for a summary (every missing value is "—").
 * @param {Summary|null} s
 * @returns {{requests: string, kv: string, gpu: string, throughput: string}}
 */
export function describeMetrics(s) {
  const n = (/** @type {number|null|undefined} */ v) => (v === null || v === undefined ? "—" : String(v));
  const kinds = Object.entries(s?.gpuBytes ?? {});
  return {
    requests: `${n(s?.running)} running · ${n(s?.waiting)} waiting`,
    kv: (s?.kvUsage === null || s?.kvUsage === undefined ? "—" : `${(s.kvUsage * 100).toFixed(0)}%`) +
      (typeof s?.prefixHitRate === "number" ? ` · prefix hits ${(s.prefixHitRate * 100).toFixed(0)}%` : ""),
    gpu: kinds.length ? kinds.map(([k, v]) => `${k} ${formatBytes(v)}`).join(", ") : "—",
    throughput: s?.tokensPerSecond === null || s?.tokensPerSecond === undefined
      ? "—"
      : `${s.tokensPerSecond.toFixed(1)} tok/s`,
  };
}

/**
 * Polls /health and /metrics into the strip's elements (ids status-health, status-requests, status-kv,
 * status-gpu, status-throughput) while the page is visible.
 * @param {{intervalMs?: number, key?: () => string}} [opts] `key`: the bearer key to send, if any.
 * @returns {() => void} Stops polling.
 */
export function startStatusStrip({ intervalMs = 2000, key = () => "" } = {}) {
  /** @type {{summary: Summary, at: number}|null} */
  let previous = null;
  // A server without /metrics answers 404: ask again only every 30 s instead of every tick.
  let skipMetricsUntil = 0;
  const set = (/** @type {string} */ id, /** @type {string} */ text) => {
    const el = document.getElementById(id);
    if (el && el.textContent !== text) el.textContent = text;
  };
  const tick = async () => {
    if (document.hidden) return;
    const k = key();
    const headers = k ? { authorization: `Bearer ${k}` } : undefined;
    const [health, metrics] = await Promise.all([
      fetch("/health", { headers }).then(
        async (r) => ({ status: r.status, body: await r.json() }),
        () => null,
      ),
      performance.now() < skipMetricsUntil ? null : fetch("/metrics", { headers }).then((r) => {
        if (r.status === 404) skipMetricsUntil = performance.now() + 30_000;
        return r.ok ? r.text() : null;
      }, () => null),
    ]);
    const healthText = !health
      ? "offline"
      : health.status === 200
      ? "ready"
      : `${health.body?.status ?? health.status}${health.body?.detail ? `: ${health.body.detail}` : ""}`;
    set("status-health", healthText);
    document.getElementById("status-strip")?.setAttribute(
      "data-health",
      health?.status === 200 ? "ok" : "bad",
    );
    const now = performance.now();
    const summary = metrics === null ? null : summarizeMetrics(parsePrometheus(metrics), previous, now);
    previous = summary ? { summary, at: now } : null;
    const d = describeMetrics(summary);
    set("status-requests", d.requests);
    set("status-kv", d.kv);
    set("status-gpu", d.gpu);
    set("status-throughput", d.throughput);
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return () => clearInterval(timer);
}
