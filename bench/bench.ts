/**
 * `deno task bench [--model <dir> | --random llama3-8b|lq-49m] [--dtype auto|f32|f16] [--prompt N] [--decode N]
 *  [--runs N] [--json <file>] [--format dense|affineN|lutN] [--prefill-rows N] [--prompt-kernels runner|engine]`
 *
 * `--random` builds a model with random weights at a real shape directly on the GPU (for hosts without
 * the model files; its figures must be labelled "random weights").
 * Prints prefill and decode tokens/s for a model on the adapter it runs on. Prefill is timed as the
 * wall time to the first sampled token of an N-token prompt (one readback included); decode as the
 * wall time of N greedy tokens after that, read back in chunks as the server does. Figures are the
 * median of several runs after one warm-up run. `--prefill-rows` sets the rows per prefill forward (the
 * prompt is run in chunks of that many rows; default 2048 for random models, so the 2,048-token prompt of
 * issue 12's prefill measure is one forward as in vLLM's default token budget, 0.5 GB of activations at 8B;
 * 256 for model folders);
 * `--prompt-kernels engine` runs the prompt on the engine's kernels (see runnerOptions).
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import { createSequenceRunner, loadModel } from "../inference/engine/mod.ts";
import {
  type GpuLayer,
  type GpuWeights,
  linearBuffers,
  type ModelConfig,
  type WeightType,
} from "../inference/model/mod.ts";
import { parseFormat, presetConfig, randomWeights } from "./random_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: new URL("../../shared/models/lq-49m", import.meta.url).pathname },
    dtype: { type: "string", default: "auto" },
    prompt: { type: "string", default: "128" },
    decode: { type: "string", default: "128" },
    runs: { type: "string", default: "3" },
    json: { type: "string" },
    random: { type: "string" },
    format: { type: "string", default: "dense" },
    "prefill-rows": { type: "string" },
    "prompt-kernels": { type: "string", default: "runner" },
  },
});

const gpu = await requestGpu();
console.log(`adapter: ${describeGpu(gpu)}`);
const loadStart = performance.now();
const model = values.random ? await randomModel(values.random) : await loadedModel();

/** A model folder with its own single-sequence runner (the engine serves through batch_runner.ts). */
async function loadedModel() {
  const m = await loadModel(gpu, values.model, { weightType: values.dtype as WeightType | "auto" });
  return {
    ...m,
    runner: createSequenceRunner(gpu, m.config, m.weights, runnerOptions(256)),
  };
}
const weightType = model.weights.embeddingType;
console.log(
  `model: ${model.modelId} (${model.config.nLayers} layers, dim ${model.config.dim}, ${weightType}), ` +
    `ready in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`,
);

/**
 * Prompt rows per prefill forward, and with `--prompt-kernels engine` the engine's pinned prompt kernels
 * (q8 affine prompts on the batched q8 path, the rest on the tiled GEMM) instead of the runner's own.
 */
function runnerOptions(fallback: number) {
  const n = Number(values["prefill-rows"] ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new Error(`Invalid --prefill-rows "${values["prefill-rows"]}"`);
  const kernels = values["prompt-kernels"];
  if (kernels !== "runner" && kernels !== "engine") {
    throw new Error(`Invalid --prompt-kernels "${kernels}": expected runner or engine`);
  }
  return { maxPrefillRows: n, ...(kernels === "engine" ? { promptPath: "gemm" as const } : {}) };
}

async function randomModel(preset: string) {
  const config = presetConfig(preset);
  const wt: WeightType = values.dtype === "f32" ? "f32" : "f16";
  const format = parseFormat(values.format);
  const weights = await randomWeights(gpu, config, wt, format);
  const runner = createSequenceRunner(gpu, config, weights, runnerOptions(2048));
  const label = format.kind === "dense" ? "" : ` ${format.bits}-bit ${format.kind}`;
  return { modelId: `${preset}${label} (random weights)`, config, weights, runner };
}

/**
 * Bytes a batch-1 decode step must read: every layer buffer once, the LM head, one embedding row and the f32
 * KV cache at `context`.
 */
function bytesPerToken(w: GpuWeights, c: ModelConfig, context: number): number {
  const layer = (L: GpuLayer) =>
    [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown].reduce(
      (s, l) => s + linearBuffers(l).reduce((t, b) => t + b.size, 0),
      0,
    );
  const kv = 2 * c.nLayers * c.kvDim * context * 4;
  const head = linearBuffers(w.lmHead).reduce((t, b) => t + b.size, 0);
  return w.layers.reduce((s, L) => s + layer(L), 0) + head + kv;
}

const promptLen = Math.min(Number(values.prompt), model.config.seqLen - 2);
const decodeLen = Math.min(Number(values.decode), model.config.seqLen - promptLen - 1);
// A deterministic prompt of ordinary token ids (skipping the first 256 special/byte ids).
const ids = Array.from({ length: promptLen }, (_, i) => 256 + ((i * 7919) % (model.config.vocabSize - 256)));
const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

async function once(): Promise<{ prefill: number; decode: number }> {
  const t0 = performance.now();
  let t1 = 0;
  let n = 0;
  for await (const chunk of model.runner.run(ids, { maxNewTokens: decodeLen + 1, sampling })) {
    if (n === 0) t1 = performance.now();
    n += chunk.length;
  }
  const t2 = performance.now();
  return { prefill: promptLen / ((t1 - t0) / 1000), decode: (n - 1) / ((t2 - t1) / 1000) };
}

await once(); // warm-up: pipeline compilation, JIT
const runs = [];
for (let i = 0; i < Number(values.runs); i++) runs.push(await once());
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const context = promptLen + decodeLen / 2;
const bytes = bytesPerToken(model.weights, model.config, context);
const result = {
  date: new Date().toISOString().slice(0, 10),
  adapter: describeGpu(gpu),
  model: model.modelId,
  weightType,
  bytesPerDecodeToken: bytes,
  promptTokens: promptLen,
  decodeTokens: decodeLen,
  prefillTokensPerSecond: median(runs.map((r) => r.prefill)),
  decodeTokensPerSecond: median(runs.map((r) => r.decode)),
  decodeGBps: 0,
};
result.decodeGBps = (result.decodeTokensPerSecond * bytes) / 1e9;
console.log(
  `prefill: ${result.prefillTokensPerSecond.toFixed(1)} tok/s (${promptLen}-token prompt)\n` +
    `decode:  ${result.decodeTokensPerSecond.toFixed(1)} tok/s (${decodeLen} tokens, batch 1); ` +
    `${(bytes / 1e6).toFixed(1)} MB read per token → ${result.decodeGBps.toFixed(1)} GB/s effective`,
);
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(result, null, 2));
gpu.device.destroy();
