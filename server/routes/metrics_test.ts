import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { parsePrometheus, sampleValue } from "../../tests/_prometheus.ts";
import { createApp } from "../app.ts";
import type { QuantizeProgress } from "../metrics.ts";

Deno.test("GET /metrics counts requests, tokens and latencies, and reads the gauges at scrape time", async () => {
  const engine = new FakeEngine();
  let quantize: QuantizeProgress | null = null;
  const app = createApp({
    engine,
    config: {},
    metricsSource: { quantize: () => quantize, gpu: () => ({ quantize: 5, scratch: 1 }) },
  });
  engine.script = { deltas: ["a", "b", "c"], delayMs: 5 };
  const chat = { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }] }) };
  await (await app.request("/v1/chat/completions", chat)).json();
  const stream = { method: "POST", body: JSON.stringify({ prompt: "Once", stream: true }) };
  await (await app.request("/v1/completions", stream)).text();
  await (await app.request("/v1/completions", { method: "POST", body: "{" })).text();
  await (await app.request("/v1/models/unknown")).text();
  engine.running = 1;
  engine.waiting = 2;
  quantize = { state: "running", fraction: 0.25 };

  const res = await app.request("/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const m = parsePrometheus(await res.text());
  const requests = (route: string, status: string) =>
    sampleValue(m, "leanserve_requests_total", { route, status });
  assert.equal(requests("/v1/chat/completions", "200"), 1);
  assert.equal(requests("/v1/completions", "200"), 1);
  assert.equal(requests("/v1/completions", "400"), 1);
  assert.equal(requests("/v1/models/:id{.+}", "404"), 1, "route patterns, not raw paths, as labels");
  assert.equal(sampleValue(m, "leanserve_request_duration_seconds_count", { route: "/v1/completions" }), 2);
  assert.equal(sampleValue(m, "leanserve_prompt_tokens_total"), "user: Hi\nassistant:".length + 5);
  assert.equal(sampleValue(m, "leanserve_generation_tokens_total"), 6);
  assert.equal(sampleValue(m, "leanserve_request_success_total", { finished_reason: "stop" }), 2);
  assert.equal(sampleValue(m, "leanserve_request_prompt_tokens_count"), 2, "the 400 never started");
  assert.equal(sampleValue(m, "leanserve_request_prompt_tokens_sum"), "user: Hi\nassistant:".length + 5);
  assert.equal(sampleValue(m, "leanserve_request_generation_tokens_sum"), 6);
  assert.equal(sampleValue(m, "leanserve_request_generation_tokens_bucket", { le: "2" }), 0);
  assert.equal(sampleValue(m, "leanserve_request_generation_tokens_bucket", { le: "5" }), 2);
  assert.equal(sampleValue(m, "leanserve_time_to_first_token_seconds_count"), 2);
  assert.ok(sampleValue(m, "leanserve_time_to_first_token_seconds_sum")! >= 2 * 0.004);
  assert.equal(
    sampleValue(m, "leanserve_inter_token_latency_seconds_count"),
    4,
    "two gaps per 3-delta generation",
  );
  assert.equal(sampleValue(m, "leanserve_requests_running"), 1);
  assert.equal(sampleValue(m, "leanserve_requests_waiting"), 2);
  assert.equal(sampleValue(m, "leanserve_kv_cache_usage_ratio"), 0.75);
  assert.equal(sampleValue(m, "leanserve_kv_cache_blocks", { state: "used" }), 3);
  assert.equal(sampleValue(m, "leanserve_kv_cache_blocks", { state: "cached" }), 1);
  assert.equal(sampleValue(m, "leanserve_kv_cache_blocks", { state: "free" }), 0);
  assert.equal(sampleValue(m, "leanserve_prefix_cache_queries_total"), 40);
  assert.equal(sampleValue(m, "leanserve_prefix_cache_hits_total"), 32);
  assert.equal(sampleValue(m, "leanserve_gpu_bytes", { kind: "weights" }), 1000);
  assert.equal(
    sampleValue(m, "leanserve_cache_config_info", {
      block_size: "16",
      num_gpu_blocks: "4",
      cache_dtype: "f16",
      max_model_len: "64",
      enable_prefix_caching: "true",
    }),
    1,
  );
  assert.equal(sampleValue(m, "leanserve_gpu_bytes", { kind: "kv_cache" }), 200);
  assert.equal(
    sampleValue(m, "leanserve_gpu_bytes", { kind: "scratch" }),
    31,
    "extra GPU bytes add up by kind",
  );
  assert.equal(sampleValue(m, "leanserve_gpu_bytes", { kind: "quantize" }), 5);
  assert.equal(sampleValue(m, "leanserve_quantize_job_state", { state: "running" }), 1);
  assert.equal(sampleValue(m, "leanserve_quantize_job_progress_ratio"), 0.25);

  // the job moves on: the old state drops to 0 instead of going stale
  quantize = { state: "succeeded", fraction: 1 };
  const later = parsePrometheus(await (await app.request("/metrics")).text());
  assert.equal(sampleValue(later, "leanserve_quantize_job_state", { state: "running" }), 0);
  assert.equal(sampleValue(later, "leanserve_quantize_job_state", { state: "succeeded" }), 1);
  assert.equal(sampleValue(later, "leanserve_requests_total", { route: "/metrics", status: "200" }), 1);
});

Deno.test("GET /metrics leaves out the engine's series when it has no counters()", async () => {
  const engine = new FakeEngine();
  const app = createApp({
    engine: { status: () => engine.status(), generate: (r) => engine.generate(r) },
    config: {},
  });
  const m = parsePrometheus(await (await app.request("/metrics")).text());
  assert.ok(m.has("leanserve_requests_running"), "the family is declared");
  assert.equal(m.get("leanserve_requests_running")!.samples.length, 0);
  assert.equal(m.get("leanserve_gpu_bytes")!.samples.length, 0);
  assert.equal(m.get("leanserve_quantize_job_state")!.samples.length, 0);
});

Deno.test("leanserve_request_success_total counts a stream its client left as an abort", async () => {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: {} });
  engine.script = { deltas: ["a", "b", "c", "d"], delayMs: 50, finishReason: "length" };
  await (await app.request("/v1/completions", { method: "POST", body: JSON.stringify({ prompt: "x" }) }))
    .json();
  const res = await app.request("/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "x", stream: true }),
  });
  const reader = res.body!.getReader();
  await reader.read(); // the first chunk, then the client goes away
  await reader.cancel();
  await new Promise((r) => setTimeout(r, 100));
  const m = parsePrometheus(await (await app.request("/metrics")).text());
  assert.equal(sampleValue(m, "leanserve_request_success_total", { finished_reason: "length" }), 1);
  assert.equal(sampleValue(m, "leanserve_request_success_total", { finished_reason: "abort" }), 1);
});
