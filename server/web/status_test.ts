import assert from "node:assert/strict";
import { describeMetrics, parsePrometheus, summarizeMetrics } from "./status.js";

const SCRAPE = `# HELP leanserve_requests_running Sequences being generated now.
# TYPE leanserve_requests_running gauge
leanserve_requests_running 1
leanserve_requests_waiting 2
leanserve_kv_cache_usage_ratio 0.25
leanserve_gpu_bytes{kind="weights"} 104857600
leanserve_gpu_bytes{kind="kv_cache",note="a \\"quoted\\" label"} 1048576
leanserve_generation_tokens_total 100
leanserve_prefix_cache_queries_total 400
leanserve_prefix_cache_hits_total 300
leanserve_request_duration_seconds_bucket{le="+Inf",route="/v1/chat/completions"} 3
garbage line without value
`;

Deno.test("parsePrometheus() reads names, labels (with escapes) and values, and skips comments", () => {
  const samples = parsePrometheus(SCRAPE);
  assert.equal(samples.length, 9);
  assert.deepEqual(samples[3], {
    name: "leanserve_gpu_bytes",
    labels: { kind: "weights" },
    value: 104857600,
  });
  assert.deepEqual(samples[4].labels, { kind: "kv_cache", note: 'a "quoted" label' });
  assert.equal(samples[8].labels.le, "+Inf");
});

Deno.test("summarizeMetrics() differences the token counter into tokens per second", () => {
  const first = summarizeMetrics(parsePrometheus(SCRAPE), null, 1000);
  assert.equal(first.running, 1);
  assert.equal(first.waiting, 2);
  assert.equal(first.kvUsage, 0.25);
  assert.equal(first.prefixHitRate, 0.75);
  assert.deepEqual(first.gpuBytes, { weights: 104857600, kv_cache: 1048576 });
  assert.equal(first.tokensPerSecond, null, "no rate from one scrape");
  const later = SCRAPE.replace("tokens_total 100", "tokens_total 130");
  const second = summarizeMetrics(parsePrometheus(later), { summary: first, at: 1000 }, 3000);
  assert.equal(second.tokensPerSecond, 15);
  const restarted = summarizeMetrics(parsePrometheus(SCRAPE.replace("total 100", "total 5")), {
    summary: second,
    at: 3000,
  }, 4000);
  assert.equal(restarted.tokensPerSecond, null, "a counter that went down is a restart, not a negative rate");
  assert.deepEqual(describeMetrics(second), {
    requests: "1 running · 2 waiting",
    kv: "25% · prefix hits 75%",
    gpu: "weights 100 MiB, kv_cache 1.0 MiB",
    throughput: "15.0 tok/s",
  });
});

Deno.test("describeMetrics() shows a dash for every missing metric", () => {
  const none = { requests: "— running · — waiting", kv: "—", gpu: "—", throughput: "—" };
  assert.deepEqual(describeMetrics(null), none);
  assert.deepEqual(describeMetrics(summarizeMetrics(parsePrometheus("other_metric 1\n"), null, 0)), none);
});
