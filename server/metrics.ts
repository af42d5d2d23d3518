/**
 * leanserve's metrics: request counts and latencies recorded as requests finish (from the request log's
 * records), and series read at scrape time from providers: the engine's gauges and its token and
 * preemption totals (the engine counts them, so they include requests whose client left), the quantize job.
 * Names follow vLLM's where one exists (`vllm:time_to_first_token_seconds` → `leanserve_time_to_first_token_seconds`).
 */
import type { EngineCounters } from "../inference/engine/mod.ts";
import type { RequestRecord } from "./middleware/request_log.ts";
import { Registry, type Sample } from "./prometheus.ts";

/** The current quantize job, as the admin API reports it. */
export interface QuantizeProgress {
  /** e.g. "queued", "running", "succeeded", "failed"; any string. */
  state: string;
  /** Done fraction in [0, 1]. */
  fraction: number;
}

/** Providers read at each scrape; each may be absent or return null when it has nothing to report. */
export interface MetricsSource {
  /** Scheduler and memory gauges and token totals (Engine.counters). */
  engine?: () => EngineCounters | null;
  /** Extra GPU memory by kind (e.g. a running quantize job), added to the engine's. */
  gpu?: () => Record<string, number> | null;
  /** The current or last quantize job; null when there was none. */
  quantize?: () => QuantizeProgress | null;
}

/** The metrics of one server. */
export interface ServerMetrics {
  /** Records a finished request (pass as requestLog's onFinish). */
  observeRequest(record: RequestRecord): void;
  /** The exposition text for GET /metrics. */
  render(): string;
}

/** Tokens per request (vLLM's request_prompt_tokens / request_generation_tokens buckets: 1-2-5 steps). */
const TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160];
const ITL_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.15,
  0.2,
  0.3,
  0.5,
  0.75,
  1,
  2.5,
  5,
];

/**
 * Builds the registry with every leanserve metric.
 * @param source The providers of scrape-time gauges.
 * @returns The recorder and renderer.
 * @example
 * ```ts
 * import { createServerMetrics } from "./metrics.ts";
 * const metrics = createServerMetrics({ quantize: () => ({ state: "running", fraction: 0.5 }) });
 * console.assert(metrics.render().includes('leanserve_quantize_job_state{state="running"} 1'));
 * ```
 */
export function createServerMetrics(source: MetricsSource = {}): ServerMetrics {
  const r = new Registry();
  const requests = r.counter("leanserve_requests_total", "HTTP requests by route pattern and status.", [
    "route",
    "status",
  ]);
  const duration = r.histogram(
    "leanserve_request_duration_seconds",
    "Time from request arrival to the end of the response body (streams included).",
    LATENCY_BUCKETS,
    ["route"],
  );
  const ttft = r.histogram(
    "leanserve_time_to_first_token_seconds",
    "Request arrival to the first generated text (queue wait and prefill included).",
    TTFT_BUCKETS,
  );
  const itl = r.histogram(
    "leanserve_inter_token_latency_seconds",
    "Time between consecutive text deltas of a generation (a delta may carry several tokens).",
    ITL_BUCKETS,
  );
  const finished = r.counter(
    "leanserve_request_success_total",
    "Generations that ended, by finish reason of their first choice (abort: the client went away first).",
    ["finished_reason"],
  );
  const promptTokens = r.histogram(
    "leanserve_request_prompt_tokens",
    "Prompt tokens of each finished generation (a completions batch: all its prompts).",
    TOKEN_BUCKETS,
  );
  const generationTokens = r.histogram(
    "leanserve_request_generation_tokens",
    "Tokens generated for each finished generation (all its choices).",
    TOKEN_BUCKETS,
  );
  const engine = () => source.engine?.() ?? null;
  const one = (value: number | undefined): Sample[] => (value === undefined ? [] : [{ value }]);
  r.counter(
    "leanserve_prompt_tokens_total",
    "Prompt tokens prefilled (blocks shared by a request's choices once; a preempted sequence's again).",
    [],
    { collect: () => one(engine()?.promptTokensTotal) },
  );
  r.counter("leanserve_generation_tokens_total", "Tokens sampled.", [], {
    collect: () => one(engine()?.generatedTokensTotal),
  });
  r.counter(
    "leanserve_num_preemptions_total",
    "Sequences preempted when the KV cache ran out (recomputed later).",
    [],
    { collect: () => one(engine()?.preemptionsTotal) },
  );
  r.counter(
    "leanserve_prefix_cache_queries_total",
    "Prompt tokens of admitted requests looked up in the prefix cache.",
    [],
    { collect: () => one(engine()?.prefixCacheQueriesTotal) },
  );
  r.counter(
    "leanserve_prefix_cache_hits_total",
    "Prompt tokens whose keys and values came from the prefix cache instead of a prefill.",
    [],
    { collect: () => one(engine()?.prefixCacheHitsTotal) },
  );
  r.gauge("leanserve_requests_running", "Sequences decoding or prefilling now.", {
    collect: () => one(engine()?.running),
  });
  r.gauge("leanserve_requests_waiting", "Sequences waiting for a slot.", {
    collect: () => one(engine()?.waiting),
  });
  r.gauge("leanserve_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use.", {
    collect: () => {
      const e = engine();
      return e && e.kvBlocksTotal > 0 ? [{ value: e.kvBlocksUsed / e.kvBlocksTotal }] : [];
    },
  });
  r.gauge(
    "leanserve_kv_cache_blocks",
    "KV-cache blocks by state (cached: free, holding a reusable prefix).",
    {
      labelNames: ["state"],
      collect: () => {
        const e = engine();
        if (!e) return [];
        return [
          { labels: { state: "used" }, value: e.kvBlocksUsed },
          { labels: { state: "cached" }, value: e.kvBlocksCached },
          { labels: { state: "free" }, value: e.kvBlocksTotal - e.kvBlocksUsed - e.kvBlocksCached },
        ];
      },
    },
  );
  r.gauge(
    "leanserve_cache_config_info",
    "The served model's KV cache configuration as labels (value 1), as vLLM's cache_config_info.",
    {
      labelNames: ["block_size", "num_gpu_blocks", "cache_dtype", "max_model_len", "enable_prefix_caching"],
      collect: () => {
        const c = engine()?.cacheConfig;
        if (!c) return [];
        const labels = {
          block_size: String(c.blockSize),
          num_gpu_blocks: String(c.numBlocks),
          cache_dtype: c.kvCacheDtype,
          max_model_len: String(c.maxModelLen),
          enable_prefix_caching: String(c.prefixCaching),
        };
        return [{ labels, value: 1 }];
      },
    },
  );
  r.gauge("leanserve_gpu_bytes", "Bytes of GPU buffers by use.", {
    labelNames: ["kind"],
    collect: () => gpuSamples(engine(), source.gpu?.() ?? null),
  });
  const seenStates = new Set<string>();
  r.gauge("leanserve_quantize_job_state", "1 for the quantize job's current state, 0 for states it left.", {
    labelNames: ["state"],
    collect: () => {
      const q = source.quantize?.() ?? null;
      if (q) seenStates.add(q.state);
      return [...seenStates].map((state) => ({ labels: { state }, value: state === q?.state ? 1 : 0 }));
    },
  });
  r.gauge("leanserve_quantize_job_progress_ratio", "Done fraction of the current quantize job.", {
    collect: () => one(source.quantize?.()?.fraction),
  });

  return {
    observeRequest(rec) {
      requests.inc({ route: rec.route, status: String(rec.status) });
      duration.observe({ route: rec.route }, rec.durationMs / 1000);
      if (rec.ttftMs !== null) ttft.observe({}, rec.ttftMs / 1000);
      for (const s of rec.interTokenSeconds) itl.observe({}, s);
      // a generation: it started (prompt tokens known); ended, or cut short by its client
      if (rec.promptTokens !== null && (rec.finishReason !== null || rec.aborted)) {
        finished.inc({ finished_reason: rec.aborted ? "abort" : rec.finishReason! });
        promptTokens.observe({}, rec.promptTokens);
        generationTokens.observe({}, rec.completionTokens ?? 0);
      }
    },
    render: () => r.render(),
  };
}

function gpuSamples(e: EngineCounters | null, extra: Record<string, number> | null): Sample[] {
  const kinds: Record<string, number> = {};
  if (e) {
    Object.assign(kinds, {
      weights: e.gpuBytes.weights,
      kv_cache: e.gpuBytes.kvCache,
      scratch: e.gpuBytes.scratch,
    });
  }
  for (const [kind, bytes] of Object.entries(extra ?? {})) kinds[kind] = (kinds[kind] ?? 0) + bytes;
  return Object.entries(kinds).map(([kind, value]) => ({ labels: { kind }, value }));
}
