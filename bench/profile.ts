/**
 * `deno task bench:profile [--random llama3-8b|lq-49m] [--format dense|affine4|lut4…] [--context N]
 *   [--prompt N | --batch B [--batch-invariant] [--staged-keys] [--top-logprobs N] [--temperature T --top-p P
 *   --top-k K]]
 *   [--json <file>]`
 *
 * With `--batch B`: one decode step of the serving engine's batch runner (inference/engine/batch_runner.ts)
 * over B sequences, each at position `context` of a paged KV cache, greedy sampling; the steps are the
 * runner's own (prepare, the layers, the LM head over B logit rows, logits processing, sampling, logprobs),
 * on the engine's default decode path or, with `--batch-invariant`, its batched kernels at every B (with
 * `--staged-keys`, decode attention stages K rows in workgroup memory: BatchRunnerOptions.stagedKeys; with
 * `--kv-cache-dtype f32|int8`, that pool type instead of f16); with
 * `--top-logprobs N` every sequence asks for its logprobs and N alternatives (the logprobs step runs); with
 * `--temperature` (and `--top-p`, `--top-k`) it samples instead of taking the argmax.
 *
 * With `--prompt N`: one prefill forward of the single-sequence runner over N prompt rows that follow `context`
 * cached positions (the runner prefills a long prompt in such chunks; `deno task bench --prefill-rows`).
 *
 * Where a batch-1 decode step's GPU time goes: binds one decode forward (model.ts bindForwardSteps) at
 * position `context` and times every step in a compute pass of its own with `timestamp-query`, then sums
 * by label (q, k, …, attention, lm_head). Each step's time includes its launch, so the sum is an upper bound;
 * the whole forward in one pass is timed too, for comparison with the decode tokens/s of `deno task bench`.
 * The host side is timed as the server records decode: 16 forwards into one pass, `finish()`, `submit()`
 * (best of 5 after a warm-up).
 * Random weights (their figures say so).
 */
import { parseArgs } from "node:util";
import {
  checkPipelines,
  describeGpu,
  type Encodable,
  requestGpu,
  uploadStorage,
  writeBuffer,
} from "../kernels/core/mod.ts";
import { GREEDY_SLOT, type KvType } from "../kernels/ops/mod.ts";
import { bindForwardSteps, createForwardState, type ForwardStep } from "../inference/model/mod.ts";
import { BatchRunner } from "../inference/engine/batch_runner.ts";
import { BLOCK_SIZE, KvCache } from "../inference/engine/kv_cache.ts";
import { parseFormat, presetConfig, randomWeights } from "./random_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    random: { type: "string", default: "llama3-8b" },
    format: { type: "string", default: "dense" },
    context: { type: "string", default: "576" },
    prompt: { type: "string", default: "1" },
    batch: { type: "string", default: "0" },
    "batch-invariant": { type: "boolean", default: false },
    "staged-keys": { type: "boolean", default: false },
    "kv-cache-dtype": { type: "string", default: "f16" },
    "top-logprobs": { type: "string" },
    temperature: { type: "string" },
    "top-p": { type: "string" },
    "top-k": { type: "string" },
    json: { type: "string" },
  },
});
const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot profile: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}`);
const config = presetConfig(values.random);
const weights = await randomWeights(gpu, config, "f16", parseFormat(values.format));
const context = Number(values.context);
const batch = Number(values.batch);
const prompt = Number(values.prompt);
if (!Number.isInteger(prompt) || prompt < 1) throw new Error(`Invalid --prompt "${values.prompt}"`);
const steps = batch > 0 ? batchSteps(batch) : singleSteps();
await checkPipelines(gpu);

const query = gpu.device.createQuerySet({ type: "timestamp", count: 2 * (steps.length + 1) });
const resolved = gpu.device.createBuffer({
  size: 16 * (steps.length + 1),
  usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
});
const readback = gpu.device.createBuffer({
  size: resolved.size,
  usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
});

/** One submit: every step in its own pass, then all steps in one pass; returns the 2(n+1) stamps. */
async function run(): Promise<BigInt64Array> {
  const enc = gpu.device.createCommandEncoder();
  const timed = (i: number, encode: (pass: GPUComputePassEncoder) => void) => {
    const pass = enc.beginComputePass({
      timestampWrites: { querySet: query, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
    encode(pass);
    pass.end();
  };
  steps.forEach(({ step }, i) => timed(i, (pass) => step.encode(pass)));
  timed(steps.length, (pass) => steps.forEach(({ step }: { step: Encodable }) => step.encode(pass)));
  enc.resolveQuerySet(query, 0, 2 * (steps.length + 1), resolved, 0);
  enc.copyBufferToBuffer(resolved, 0, readback, 0, resolved.size);
  gpu.device.queue.submit([enc.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const stamps = new BigInt64Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return stamps;
}

await run(); // warm-up
const best = new Map<string, { count: number; us: number }>();
let bestWhole = Infinity;
const perStep = new Array<number>(steps.length).fill(Infinity);
for (let r = 0; r < 5; r++) {
  const t = await run();
  steps.forEach((_, i) => perStep[i] = Math.min(perStep[i], Number(t[2 * i + 1] - t[2 * i]) / 1e3));
  bestWhole = Math.min(bestWhole, Number(t[2 * steps.length + 1] - t[2 * steps.length]) / 1e3);
}
steps.forEach(({ label }, i) => {
  const e = best.get(label) ?? { count: 0, us: 0 };
  best.set(label, { count: e.count + 1, us: e.us + perStep[i] });
});
const total = [...best.values()].reduce((s, e) => s + e.us, 0);
const rows = [...best.entries()].sort((a, b) => b[1].us - a[1].us);
console.log(
  `${values.random} ${values.format} (random weights), ${
    batch > 0
      ? `batched decode step of ${batch} sequences`
      : prompt > 1
      ? `prefill forward of ${prompt} rows`
      : "decode step"
  } at position ${context}: ` +
    `${steps.length} steps, one pass ${(bestWhole / 1e3).toFixed(2)} ms, ` +
    `sum of single-step passes ${(total / 1e3).toFixed(2)} ms`,
);
for (const [label, { count, us }] of rows) {
  console.log(
    `${label.padEnd(10)} ×${String(count).padStart(3)}  ${(us / 1e3).toFixed(3).padStart(7)} ms  ` +
      `${(us / count).toFixed(1).padStart(7)} µs each  ${((100 * us) / total).toFixed(1).padStart(5)} %`,
  );
}
// The host cost of a prefill forward is one encode among seconds of GPU work; it is timed for decode.
const host = prompt > 1 ? null : await hostCost(16);
if (host) {
  console.log(
    `host, 16 forwards per submit: encode ${host.encodeMs.toFixed(1)} ms, finish() ${
      host.finishMs.toFixed(1)
    } ms, submit ${host.submitMs.toFixed(1)} ms → ${
      ((host.encodeMs + host.finishMs + host.submitMs) / 16).toFixed(2)
    } ms per token`,
  );
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ onePassMs: bestWhole / 1e3, steps: Object.fromEntries(rows), host }, null, 2),
  );
}

/** A single-sequence forward of `prompt` rows (the runner of `deno task bench`; one row: a decode step). */
function singleSteps(): ForwardStep[] {
  const state = createForwardState(gpu, config, { maxRows: prompt });
  writeBuffer(gpu, state.state, new Uint32Array([context, 0, 0, 0]));
  const ids = uploadStorage(gpu, Uint32Array.from({ length: prompt }, (_, i) => 300 + i), "ids");
  return bindForwardSteps(gpu, config, weights, state, { ids, rows: prompt, logits: "last" });
}

/** One decode step of the engine's batch runner over `n` sequences at position `context`. */
function batchSteps(n: number): ForwardStep[] {
  const positions = context + 1;
  const blocks = Math.ceil(positions / BLOCK_SIZE);
  const cache = new KvCache(gpu, config, {
    numBlocks: n * blocks,
    blockSize: BLOCK_SIZE,
    maxModelLen: blocks * BLOCK_SIZE,
    kvType: values["kv-cache-dtype"] as KvType,
    bytes: 0,
  });
  const runner = new BatchRunner(gpu, config, weights, cache, {
    maxSlots: n,
    maxRows: n,
    maxChunk: 1,
    maxBias: 1,
    maxBan: 1,
    decodingPrefillRows: n,
    batchInvariant: values["batch-invariant"],
    stagedKeys: values["staged-keys"],
  });
  for (let slot = 0; slot < n; slot++) {
    const own = cache.allocate(blocks);
    if (!own) throw new Error("Cannot profile: the KV cache is full");
    const settings = {
      ...GREEDY_SLOT,
      ...(values["top-logprobs"] === undefined
        ? {}
        : { logprobs: true, nTop: Number(values["top-logprobs"]) }),
      ...(values.temperature === undefined ? {} : {
        temperature: Number(values.temperature),
        topP: Number(values["top-p"] ?? 1),
        topK: Number(values["top-k"] ?? 0),
        seed: slot + 1,
      }),
    };
    runner.setSlot(slot, settings, { step: 0, prompt: [], output: [], blocks: own });
  }
  const rows = Array.from({ length: n }, (_, slot) => ({ slot, pos: context, token: 300 + slot }));
  return runner.profileSteps({ kind: "decode", rows, gather: rows.map((_, i) => i) });
}

/** CPU milliseconds to record `n` forwards into one pass, finish the command buffer and submit it. */
async function hostCost(n: number): Promise<{ encodeMs: number; finishMs: number; submitMs: number }> {
  let best = { encodeMs: Infinity, finishMs: Infinity, submitMs: Infinity };
  for (let r = 0; r < 6; r++) {
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < n; i++) steps.forEach(({ step }) => step.encode(pass));
    pass.end();
    const t1 = performance.now();
    const commands = enc.finish();
    const t2 = performance.now();
    gpu.device.queue.submit([commands]);
    const t3 = performance.now();
    await gpu.device.queue.onSubmittedWorkDone();
    const cost = { encodeMs: t1 - t0, finishMs: t2 - t1, submitMs: t3 - t2 };
    const total = (c: typeof cost) => c.encodeMs + c.finishMs + c.submitMs;
    if (r > 0 && total(cost) < total(best)) best = cost; // run 0 warms the JIT
  }
  return best;
}
gpu.device.destroy();
