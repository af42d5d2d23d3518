/**
 * leanserve's composition root: parseConfig → requestGpu → createApp + Deno.serve (answering 503
 * while loading) → resolveModel (download a repo id into the HF cache) → quantize if asked → loadModel →
 * engine ready. It does nothing else.
 */
import { join } from "node:path";
import { type Config, ConfigError, HELP_TEXT, parseConfig } from "./config.ts";
import { createApp } from "./server/app.ts";
import { samplingFromGenerationConfig } from "./server/protocol.ts";
import { createEngine, type EngineHandle, loadModel, type SamplingParams } from "./inference/engine/mod.ts";
import { parseModelConfig } from "./inference/model/mod.ts";
import { type DownloadProgress, resolveModel } from "./inference/hub/mod.ts";
import { createProgressBar, formatBytes, formatSeconds } from "./cli/progress.ts";
import { describeGpu, type Gpu, requestGpu } from "./kernels/core/mod.ts";
import { runQuantize } from "./cli/quantize.ts";
import { QUANTIZE_DEFAULTS } from "./quant/mod.ts";

async function main(): Promise<number> {
  let config;
  try {
    config = parseConfig(Deno.args, Deno.env.toObject());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`error: ${err.message}\n\n${HELP_TEXT}`);
    return 2;
  }
  if (config.help) {
    console.log(HELP_TEXT);
    return 0;
  }
  let gpu: Gpu;
  try {
    gpu = await requestGpu();
  } catch (err) {
    console.error(`[leanserve] error: ${(err as Error).message}`);
    return 1;
  }
  console.log(`[leanserve] ${describeGpu(gpu)}`);
  if (gpu.isCpu) console.warn("[leanserve] warning: serving on a CPU adapter (llvmpipe); expect low speed");

  const engine = createServingEngine(config);
  // Filled once the model folder is resolved (a repo may still be downloading); requests wait for ready.
  const generationDefaults: Partial<SamplingParams> = {};
  const app = createApp({ engine, config, generationDefaults });
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: ({ hostname, port }) => console.log(`[leanserve] listening on http://${hostname}:${port}`),
  }, app.fetch);

  try {
    const started = performance.now();
    const modelDir = await resolveModelDir(config, engine);
    const generationJson = await readJsonIfPresent(join(modelDir, "generation_config.json"));
    Object.assign(generationDefaults, samplingFromGenerationConfig(generationJson));
    const dir = config.quant ? await quantizeAtStartup(gpu, config, modelDir, engine) : modelDir;
    const model = await loadModel(gpu, dir, {
      weightType: config.dtype,
      decodeActivations: config.decodeActivations,
      modelId: config.servedModelName,
      onProgress: (detail) => engine.setStatus("loading", detail),
    });
    engine.setModel(model);
    logReady(engine, model.modelId, started);
  } catch (err) {
    engine.setStatus("error", (err as Error).message);
    console.error(`[leanserve] error: ${(err as Error).message}`);
    await server.shutdown();
    return 1;
  }
  await server.finished;
  return 0;
}

/** The engine under the batching flags (--max-num-seqs, the KV cache's size and dtype, the queue). */
function createServingEngine(config: Config): EngineHandle {
  const sv = config.serving;
  return createEngine(config.servedModelName, {
    batch: {
      maxNumSeqs: sv.maxNumSeqs,
      maxNumBatchedTokens: sv.maxNumBatchedTokens,
      maxModelLen: sv.maxModelLen,
      kvCacheMemory: sv.kvCacheMemory,
      kvCacheDtype: sv.kvCacheDtype,
      maxQueued: sv.maxQueuedRequests,
    },
  });
}

/** One line once serving: the load time (download included) and what the batching flags left for the KV cache. */
function logReady(engine: EngineHandle, modelId: string, started: number): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const c = engine.counters();
  const kvMiB = (c.gpuBytes.kvCache / 2 ** 20).toFixed(0);
  console.log(
    `[leanserve] model "${modelId}" ready in ${seconds} s; KV cache ${c.kvBlocksTotal} blocks ` +
      `(${kvMiB} MiB), max model length ${engine.status().contextLength}`,
  );
}

/**
 * `--quantize`: runs the quantize task's pipeline on the server's GPU into a temporary folder (removed when
 * the process exits normally), reporting progress through /health, and returns that folder.
 */
async function quantizeAtStartup(gpu: Gpu, config: Config, model: string, engine: EngineHandle) {
  const q = config.quant!;
  const out = `${await Deno.makeTempDir({ prefix: "leanserve-quantized-" })}/model`;
  globalThis.addEventListener("unload", () => Deno.removeSync(out, { recursive: true }));
  console.log(`[leanserve] quantizing ${config.model} with ${q.method} ${q.bits}-bit into ${out}`);
  await runQuantize({
    model,
    calib: q.calib,
    out,
    nsamples: q.nsamples,
    seqLen: null,
    seed: q.seed,
    quantizer: "gpu",
    hiddenStorage: "auto",
    quantize: {
      ...QUANTIZE_DEFAULTS,
      method: q.method,
      bits: q.bits,
      groupSize: q.method === "leanquant-nu" ? 0 : q.groupSize,
      actOrder: q.calib !== null, // rtn without calibration text quantizes in stored order
      lmHeadBits: q.lmHeadBits,
    },
  }, { gpu, onProgress: (detail) => engine.setStatus("loading", detail) });
  return out;
}

/**
 * `--model`: a folder as it is, or a repo id resolved through the Hugging Face cache (downloaded when
 * missing, its config.json checked before the weights come), with progress on /health.
 */
async function resolveModelDir(config: Config, engine: EngineHandle): Promise<string> {
  const resolved = await resolveModel(config.model, {
    ...config.hub,
    onProgress: downloadReporter(engine),
    onWarning: (message) => console.warn(`[leanserve] warning: ${message}`),
    checkConfig: (raw, source) => void parseModelConfig(raw, null, source),
  });
  if (resolved.commit) {
    console.log(`[leanserve] ${config.model} is commit ${resolved.commit} in ${resolved.dir}`);
  }
  return resolved.dir;
}

/** Download progress to /health, and as a bar on stderr when it is a terminal (else one line per file). */
function downloadReporter(engine: EngineHandle): (p: DownloadProgress) => void {
  const bar = Deno.stderr.isTerminal() ? createProgressBar(Deno.stderr) : null;
  let file = "";
  return (p) => {
    const label = `downloading ${p.file}: ${formatBytes(p.bytes)} of ${formatBytes(p.total)}`;
    engine.setStatus("loading", `${label} at ${formatBytes(p.rate)}/s, ETA ${formatSeconds(p.etaSeconds)}`);
    if (!bar && p.file !== file) console.log(`[leanserve] downloading ${p.file}`);
    file = p.file;
    bar?.update(p.total > 0 ? p.bytes / p.total : 1, label);
    if (p.bytes === p.total) bar?.done();
  };
}

async function readJsonIfPresent(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read "${path}": ${(err as Error).message}`);
  }
}

if (import.meta.main) Deno.exit(await main());
