/**
 * `deno task bench:serve`: a load generator in the style of vLLM's benchmark_serving. N requests of a
 * synthetic prompt (--prompt ids) and a fixed output (--output ids, EOS ignored) go to the engine in
 * process (random weights at a real shape, labelled so: --random llama3-8b) or to a running server
 * (--server http://host:port, /v1/completions streaming), closed loop at each --concurrency or with
 * Poisson arrivals (--rate req/s, capped at the concurrency). It reports output tokens/s, time to first
 * token and inter-token latency (p50/p99) per format and concurrency, as a JSON file and a markdown table;
 * against a server also how long GET /health took meanwhile (probed every 50 ms: the HTTP loop's stalls).
 * `--long-prompt N` adds one N-id prompt once the streams decode and reports the streams' inter-token
 * latency while it is prefilled (chunked prefill keeps them flowing). Prompts share no ids unless
 * `--shared-prefix N` gives them all the same first N (a system prompt: what prefix caching serves;
 * `--no-prefix-caching` turns the engine's off); no request repeats another's prompt, the warm-up's
 * included, so the cache serves only what the flags say.
 *
 *   deno task bench:serve --random llama3-8b --formats dense,affine4,lut4 --concurrency 1,16,64 \
 *     --json serve.json --md serve.md
 *   deno task bench:serve --random llama3-8b --formats affine4 --concurrency 16 --prompt 2048 \
 *     --shared-prefix 1536 [--no-prefix-caching]
 *   deno task bench:serve --random tiny --prompt 16 --output 8 --concurrency 1,2   # does it run (lavapipe)
 *   deno task bench:serve --random llama3-8b --formats affine4 --prompt 512 --output 64 --concurrency 16,64 \
 *     [--staged-keys]   # decode attention with K rows staged in workgroup memory (BatchOptions.stagedKeys)
 *     [--kv-cache-dtype int8]   # the int8 KV cache (f16 by default)
 *   deno task bench:serve --model <folder> --prompt 128 --concurrency 1,16 --score   # an evaluation harness:
 *     each request scores its prompt and takes one greedy id (echo, logprobs 1, max_tokens 1, as the harness's
 *     loglikelihood requests); "output tok/s" counts scored ids,
 *     TTFT is the request's latency
 *   deno task bench:serve --model <folder> --prompt 128 --concurrency 1,16 --embed   # /v1/embeddings' work:
 *     each request embeds its prompt (last-token pooling); "output tok/s" counts embedded ids, TTFT is the
 *     request's latency
 */
import { parseArgs } from "node:util";
import { describeGpu, type Gpu, requestGpu } from "../kernels/core/mod.ts";
import type { KvType } from "../kernels/ops/mod.ts";
import {
  BATCH_DEFAULTS,
  createEngine,
  type EngineHandle,
  type LoadedModel,
  loadModel,
} from "../inference/engine/mod.ts";
import { createTokenizer } from "../inference/text/mod.ts";
import { parseFormat, presetConfig, randomWeights } from "./random_model.ts";
import { percentile, type RequestTiming, summarize, type Summary, toMarkdown } from "./serve_stats.ts";

/** Sends request `id` with a prompt of `len` ids and reports its timing; `onFirst` at its first token. */
type Send = (id: number, len: number, onFirst?: () => void) => Promise<RequestTiming>;

/** Settings of one benchmark run (the command line, parsed). */
export interface ServeBenchOptions {
  random: string | null;
  model: string | null;
  server: string | null;
  formats: string[];
  concurrency: number[];
  requests: number;
  prompt: number;
  output: number;
  rate: number;
  longPrompt: number;
  maxNumBatchedTokens: number;
  /** bytes */
  kvCacheMemory: string | null;
  /** the engine's chunk length target (0: its default) */
  chunkTargetMs: number;
  /** prompt rows per prefill forward while others decode (0: the engine's default) */
  decodingPrefillTokens: number;
  /** the engine's --batch-invariant */
  batchInvariant: boolean;
  /** decode attention with staged K rows (BatchOptions.stagedKeys) */
  stagedKeys: boolean;
  /** the KV cache's element type (--kv-cache-dtype) */
  kvCacheDtype: KvType;
  /** requests per stream when --requests is 0 (at least 4 requests in all) */
  waves: number;
  /** leading prompt ids every request shares */
  sharedPrefix: number;
  /** the engine's prefix caching (--no-prefix-caching: off) */
  prefixCaching: boolean;
  /** requests score their prompts (echo with logprobs 1, max_tokens 1, temperature 0) */
  score: boolean;
  /** requests embed their prompts (Engine.embed) */
  embed: boolean;
}

/** Parses the command line. */
export function parseServeArgs(args: string[]): ServeBenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      random: { type: "string" },
      model: { type: "string" },
      server: { type: "string" },
      formats: { type: "string", default: "dense,affine4,lut4" },
      concurrency: { type: "string", default: "1,16,64" },
      requests: { type: "string", default: "0" },
      prompt: { type: "string", default: "512" },
      output: { type: "string", default: "256" },
      rate: { type: "string", default: "0" },
      "long-prompt": { type: "string", default: "0" },
      "max-num-batched-tokens": { type: "string", default: String(BATCH_DEFAULTS.maxNumBatchedTokens) },
      "kv-cache-memory": { type: "string" },
      "chunk-target-ms": { type: "string", default: "0" },
      "decoding-prefill-tokens": { type: "string", default: "0" },
      "batch-invariant": { type: "boolean", default: false },
      "staged-keys": { type: "boolean", default: false },
      "kv-cache-dtype": { type: "string", default: "f16" },
      waves: { type: "string", default: "2" },
      "shared-prefix": { type: "string", default: "0" },
      "no-prefix-caching": { type: "boolean", default: false },
      score: { type: "boolean", default: false },
      embed: { type: "boolean", default: false },
      json: { type: "string" },
      md: { type: "string" },
    },
  });
  const ints = (s: string) => s.split(",").map((x) => Number(x));
  return {
    random: values.random ?? (values.model || values.server ? null : "llama3-8b"),
    model: values.model ?? null,
    server: values.server ?? null,
    formats: values.formats.split(","),
    concurrency: ints(values.concurrency),
    requests: Number(values.requests),
    prompt: Number(values.prompt),
    output: Number(values.output),
    rate: Number(values.rate),
    longPrompt: Number(values["long-prompt"]),
    maxNumBatchedTokens: Number(values["max-num-batched-tokens"]),
    kvCacheMemory: values["kv-cache-memory"] ?? null,
    chunkTargetMs: Number(values["chunk-target-ms"]),
    decodingPrefillTokens: Number(values["decoding-prefill-tokens"]),
    batchInvariant: values["batch-invariant"],
    stagedKeys: values["staged-keys"],
    kvCacheDtype: values["kv-cache-dtype"] as KvType,
    waves: Number(values.waves),
    sharedPrefix: Number(values["shared-prefix"]),
    prefixCaching: !values["no-prefix-caching"],
    score: values.score,
    embed: values.embed,
  };
}

/**
 * Prompt ids of request `id`: the first `shared` the same for every request, the others (from the first
 * on) distinct per request; ordinary ids past 256.
 */
function promptIds(id: number, n: number, vocab: number, shared: number): number[] {
  const span = Math.max(1, vocab - 256);
  return Array.from({ length: n }, (_, i) => 256 + (((i < shared ? 1 : id + 2) * 7919 + i * 104729) % span));
}

/** Request ids of each load: apart from every other load's, so no prompt repeats across loads. */
const LOAD_IDS = 1e7;

/** An in-process request: TTFT and the gap before each later token. `base` keeps its ids apart. */
function engineSender(engine: EngineHandle, vocab: number, o: ServeBenchOptions, base: number): Send {
  return async (id, len, onFirst) => {
    const t0 = performance.now();
    let last = t0;
    const timing: RequestTiming = { start: t0, ttft: NaN, gaps: [], tokens: 0, end: t0 };
    const input = { kind: "tokens" as const, ids: promptIds(base + id, len, vocab, o.sharedPrefix) };
    if (o.embed) {
      // the whole request is one embedding: its ids count as the output, its latency as the TTFT
      await engine.embed(input);
      timing.end = performance.now();
      timing.ttft = timing.end - t0;
      timing.tokens = len;
      onFirst?.();
      return timing;
    }
    const request = {
      input,
      maxTokens: o.output,
      stop: [],
      sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
      ignoreEos: true,
      // lm-evaluation-harness's loglikelihood request: the prompt scored, one greedy id
      ...(o.score ? { echo: true, logprobs: 1, maxTokens: 1 } : {}),
    };
    for await (const ev of engine.generate(request)) {
      if (ev.type === "end") timing.cached = ev.cachedTokens ?? 0;
      if (o.score) {
        // the echo (tokens 0): every prompt id but the first scored, at once; the generated id is not counted
        if (ev.type === "delta" && ev.tokens === 0 && ev.logprobs && timing.tokens === 0) {
          timing.ttft = performance.now() - t0;
          timing.tokens = ev.logprobs.length - 1;
          onFirst?.();
        }
        continue;
      }
      if (ev.type !== "delta" || !ev.tokens) continue;
      const now = performance.now();
      if (timing.tokens === 0) {
        timing.ttft = now - t0;
        onFirst?.();
      } else {
        for (let k = 0; k < ev.tokens; k++) timing.gaps.push({ at: now, ms: (now - last) / ev.tokens });
      }
      timing.tokens += ev.tokens;
      last = now;
    }
    timing.end = performance.now();
    return timing;
  };
}

/** A request to a running server (streaming /v1/completions with usage); a gap per SSE chunk. */
function httpSender(url: string, o: ServeBenchOptions, base: number): Send {
  return async (id, len, onFirst) => {
    // Words, not ids (about one token each on a large vocabulary): the shared start, then the request's
    // number, which makes the rest its own.
    const word = (i: number) =>
      i < o.sharedPrefix
        ? `s${i % 997}`
        : i === o.sharedPrefix
        ? `r${(base + id).toString(36)}`
        : `w${i % 997}`;
    const prompt = Array.from({ length: len }, (_, i) => word(i)).join(" ");
    const t0 = performance.now();
    const timing: RequestTiming = { start: t0, ttft: NaN, gaps: [], tokens: 0, end: t0 };
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        prompt,
        max_tokens: o.output,
        stream: true,
        stream_options: { include_usage: true },
        ignore_eos: true,
        temperature: 0,
      }),
    });
    if (!res.ok || !res.body) {
      throw new Error(`Cannot benchmark ${url}: HTTP ${res.status} ${await res.text()}`);
    }
    let last = t0;
    let rest = ""; // a line cut between two network chunks
    for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith("data: {")) continue;
        const ev = JSON.parse(line.slice(6));
        if (ev.usage) {
          // The exact counts: a delta may carry several tokens, or a token no text yet.
          timing.cached = ev.usage.prompt_tokens_details?.cached_tokens ?? 0;
          timing.tokens = ev.usage.completion_tokens;
          continue;
        }
        // Text deltas only: the finish chunk's text is empty.
        if (!ev.choices?.[0]?.text) continue;
        const now = performance.now();
        if (timing.tokens === 0) {
          timing.ttft = now - t0;
          onFirst?.();
        } else {
          timing.gaps.push({ at: now, ms: now - last });
        }
        timing.tokens++;
        last = now;
      }
    }
    timing.end = performance.now();
    return timing;
  };
}

/** Runs `n` requests at concurrency `c` (closed loop, or Poisson arrivals at `rate`); optionally a long prompt. */
async function load(
  send: Send,
  c: number,
  n: number,
  o: ServeBenchOptions,
): Promise<{ timings: RequestTiming[]; long: RequestTiming | null; wallMs: number }> {
  const timings: RequestTiming[] = [];
  let next = 0;
  const t0 = performance.now();
  let longRun: Promise<RequestTiming> | null = null;
  const worker = async () => {
    while (next < n) {
      const id = next++;
      if (o.rate > 0) await new Promise((r) => setTimeout(r, -Math.log(1 - Math.random()) / o.rate * 1000));
      // The long prompt joins once the last stream of the first wave decodes.
      const joinLong = o.longPrompt > 0 && id === c - 1
        ? () => (longRun ??= send(1e6, o.longPrompt))
        : undefined;
      timings.push(await send(id, o.prompt, joinLong));
    }
  };
  await Promise.all(Array.from({ length: c }, worker));
  const long = longRun ? await longRun : null;
  return { timings, long, wallMs: performance.now() - t0 };
}

/** The engine with one model per format in turn (each swapped in frees the last). */
async function inProcess(gpu: Gpu, o: ServeBenchOptions, results: Summary[]): Promise<void> {
  const maxC = Math.max(...o.concurrency);
  const engine = createEngine("bench", {
    log: (msg) => msg.includes("step plans") && console.log(msg),
    batch: {
      // The long prompt gets a slot of its own: waiting for a stream to finish would move its prefill
      // to the end of the window it is measured in.
      maxNumSeqs: maxC + (o.longPrompt > 0 ? 1 : 0),
      maxNumBatchedTokens: Math.max(o.maxNumBatchedTokens, maxC + 1),
      maxModelLen: Math.max(o.prompt, o.longPrompt) + o.output + 16,
      kvCacheMemory: o.kvCacheMemory ? { bytes: Number(o.kvCacheMemory) } : null,
      ...(o.chunkTargetMs > 0 ? { chunkTargetMs: o.chunkTargetMs } : {}),
      ...(o.decodingPrefillTokens > 0 ? { decodingPrefillTokens: o.decodingPrefillTokens } : {}),
      batchInvariant: o.batchInvariant,
      stagedKeys: o.stagedKeys,
      kvCacheDtype: o.kvCacheDtype,
      prefixCaching: o.prefixCaching,
    },
  });
  let loads = 0;
  const formats = o.model ? ["folder"] : o.formats;
  for (const f of formats) {
    const model = o.model ? await loadModel(gpu, o.model, {}) : await randomLoaded(gpu, o.random!, f);
    await engine.setModel(model);
    const label = (o.model ? model.modelId : `${o.random} ${f} (random weights)`) +
      (o.batchInvariant ? ", batch-invariant" : "") + (o.stagedKeys ? ", staged keys" : "") +
      (o.kvCacheDtype !== "f16" ? `, ${o.kvCacheDtype} KV` : "") +
      (o.score ? ", scoring prompts (tok/s: scored ids)" : "") +
      (o.embed ? ", embedding prompts (tok/s: embedded ids)" : "");
    for (const c of o.concurrency) {
      const send = engineSender(engine, model.config.vocabSize, o, LOAD_IDS * ++loads);
      await send(LOAD_IDS - 1, o.prompt); // warm-up: pipelines and plans (it also caches a shared prefix)
      const n = o.requests || Math.max(4, o.waves * c);
      const run = await load(send, c, n, o);
      results.push(summarize(label, c, run.timings, run.wallMs, run.long));
      console.log(toMarkdown([results.at(-1)!]).split("\n").at(-1));
    }
  }
}

async function randomLoaded(gpu: Gpu, preset: string, format: string): Promise<LoadedModel> {
  const config = presetConfig(preset);
  const weights = await randomWeights(gpu, config, "f16", parseFormat(format));
  // A tokenizer of `vocabSize` one-character-class tokens, so detokenizing costs what it would.
  const vocab = Object.fromEntries(Array.from({ length: config.vocabSize }, (_, i) => [`t${i} `, i]));
  const tokenizer = createTokenizer({ model: { type: "BPE", vocab, merges: [] } });
  return { gpu, modelId: `${preset}-${format}`, config, weights, tokenizer, chatTemplate: null };
}

/**
 * GET /health every 50 ms until `stop()`: what a load balancer's probe (or any request the server answers
 * without the engine) waits while the load runs.
 */
function probeHealth(url: string): { stop(): Promise<{ p50: number; p99: number; max: number }> } {
  const ms: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const res = await fetch(`${url}/health`);
      await res.body?.cancel();
      ms.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { p50: percentile(ms, 50), p99: percentile(ms, 99), max: Math.max(...ms) };
    },
  };
}

/** Runs the benchmark; returns every row of the table. */
export async function runServeBench(o: ServeBenchOptions, log = console.log): Promise<Summary[]> {
  const results: Summary[] = [];
  if (o.server && (o.score || o.embed)) {
    throw new Error("Cannot --score or --embed against a --server: those run in process only");
  }
  if (o.score && o.embed) throw new Error("Cannot --score and --embed together: choose one");
  if (o.server) {
    for (const [k, c] of o.concurrency.entries()) {
      const send = httpSender(o.server, o, LOAD_IDS * (k + 1));
      await send(LOAD_IDS - 1, o.prompt);
      const probe = probeHealth(o.server);
      const run = await load(send, c, o.requests || Math.max(4, o.waves * c), o);
      const healthMs = await probe.stop();
      results.push({ ...summarize(`server ${o.server}`, c, run.timings, run.wallMs, run.long), healthMs });
      log(toMarkdown([results.at(-1)!]).split("\n").at(-1)!);
    }
    return results;
  }
  const gpu = await requestGpu();
  log(`adapter: ${describeGpu(gpu)}`);
  try {
    await inProcess(gpu, o, results);
  } finally {
    gpu.device.destroy();
  }
  return results;
}

if (import.meta.main) {
  const o = parseServeArgs(Deno.args);
  const { values } = parseArgs({
    args: Deno.args,
    strict: false,
    options: { json: { type: "string" }, md: { type: "string" } },
  });
  const results = await runServeBench(o);
  const md = toMarkdown(results);
  console.log(`\n${md}`);
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    command: `deno task bench:serve ${Deno.args.join(" ")}`,
  };
  if (typeof values.json === "string") {
    await Deno.writeTextFile(values.json, JSON.stringify({ ...meta, options: o, results }, null, 2));
  }
  if (typeof values.md === "string") {
    await Deno.writeTextFile(values.md, `${meta.date}: \`${meta.command}\`\n\n${md}\n`);
  }
  Deno.exit(0);
}
