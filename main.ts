/**
 * leanserve's composition root: parseConfig → requestGpu → createApp + Deno.serve (answering 503
 * while loading) → resolveModel (download a repo id into the HF cache) → [the startup quantization job] or
 * loadModel → engine ready. It does nothing else.
 */
import { join, resolve } from "node:path";
import {
  type Config,
  ConfigError,
  HELP_TEXT,
  parseConfig,
  type QuantConfig,
  startupQuant,
} from "./config.ts";
import { createApp } from "./server/app.ts";
import { createShutdown } from "./server/shutdown.ts";
import { samplingFromGenerationConfig } from "./server/protocol.ts";
import { createEngine, type EngineHandle, loadModel, type SamplingParams } from "./inference/engine/mod.ts";
import { createJobManager, type JobJson, type JobManager, sourceOfModel } from "./inference/jobs/mod.ts";
import { loadModelConfig, parseModelConfig } from "./inference/model/mod.ts";
import { type DownloadProgress, resolveModel } from "./inference/hub/mod.ts";
import { withAdapterBudget } from "./inference/quantize/mod.ts";
import { createProgressBar, formatBytes, formatSeconds } from "./cli/progress.ts";
import { describeGpu, type Gpu, requestGpu } from "./kernels/core/mod.ts";

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
  const loadOptions = {
    weightType: config.dtype,
    decodeActivations: config.decodeActivations,
    modelId: config.servedModelName,
  };
  // Known once --model is resolved (a repo may still be downloading); until then requests wait for ready.
  let sourceModel: string | null = null;
  const generationDefaults: Partial<SamplingParams> = {};
  const jobs = createJobManager({
    gpu,
    engine,
    sourceModel: () => sourceModel,
    artifactsDir: resolve(config.artifactsDir),
    calibDirs: config.calibDirs.map((d) => resolve(d)),
    calibGpuMemory: config.calibGpuMemory,
    loadOptions,
  });
  const shutdown = createShutdown({ graceMs: config.shutdownGraceSeconds * 1000 });
  const app = createApp({
    engine,
    config,
    generationDefaults,
    jobs,
    ...(config.logRequests ? { logRequest: (line: string) => console.log(line) } : {}),
    stopSignal: shutdown.stopSignal,
  });
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: ({ hostname, port }) => console.log(`[leanserve] listening on http://${hostname}:${port}`),
  }, app.fetch);
  shutdown.listen(server); // SIGTERM/SIGINT: drain, cut after the grace, clean up, exit 0

  try {
    const started = performance.now();
    const modelDir = await resolveModelDir(config, engine);
    sourceModel = await sourceOfModel(modelDir).then((d) => d && resolve(d));
    const generationJson = await readJsonIfPresent(join(modelDir, "generation_config.json"));
    Object.assign(generationDefaults, samplingFromGenerationConfig(generationJson));
    const quant = startupQuant(config, gpu);
    if (config.quant && !quant) {
      console.warn(
        "[leanserve] CPU adapter: serving the default model unquantized (LeanQuant at startup takes " +
          "hours without a GPU); pass --quantize leanquant-aff to quantize anyway",
      );
    }
    if (quant) {
      const { seqLen } = await loadModelConfig(modelDir);
      await quantizeAtStartup(jobs, engine, withAdapterBudget(quant, gpu, seqLen));
    } else {
      const onProgress = (detail: string) => engine.setStatus("loading", detail);
      await engine.setModel(await loadModel(gpu, modelDir, { ...loadOptions, onProgress }));
    }
    logReady(engine, engine.status().modelId, started);
  } catch (err) {
    engine.setStatus("error", (err as Error).message);
    console.error(`[leanserve] error: ${(err as Error).message}`);
    await server.shutdown();
    await shutdown.cleanup();
    return 1;
  }
  await server.finished; // only a signal closes the server; let its sequence clean up and exit
  await shutdown.finished();
  return 0;
}

/** The engine under the batching flags (--max-num-seqs, the KV cache's size and dtype, the queue). */
function createServingEngine(config: Config): EngineHandle {
  const sv = config.serving;
  return createEngine(config.servedModelName, {
    batch: {
      maxNumSeqs: sv.maxNumSeqs,
      maxNumBatchedTokens: sv.maxNumBatchedTokens,
      decodingPrefillTokens: sv.decodingPrefillTokens,
      maxModelLen: sv.maxModelLen,
      kvCacheMemory: sv.kvCacheMemory,
      kvCacheDtype: sv.kvCacheDtype,
      maxQueued: sv.maxQueuedRequests,
      batchInvariant: sv.batchInvariant,
      prefixCaching: sv.prefixCaching,
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
 * `--quantize`: the same job as POST /v1/quantize, with activate; an artifact made earlier with the same
 * source revision and options (its deterministic name, which includes the calibration budget that
 * `withAdapterBudget` chose for this adapter) is served at once instead. Progress goes to /health
 * and stderr.
 */
async function quantizeAtStartup(
  jobs: JobManager,
  engine: EngineHandle,
  request: QuantConfig,
): Promise<void> {
  const job = await jobs.submit({ ...request, activate: true }, { confine: false, reuse: true });
  const c = request.calibration;
  const budget = c.source ? `, calibration ${c.nsamples} × ${c.seqlen ?? "min(context, 2048)"} tokens` : "";
  console.log(
    job.status === "queued" && job.kind === "quantize"
      ? `[leanserve] quantizing into artifact ${job.name}${budget}`
      : `[leanserve] serving cached artifact ${job.name}`,
  );
  const bar = createProgressBar(Deno.stderr);
  const show = (j: JobJson) => {
    if (["done", "failed", "cancelled"].includes(j.status)) return; // activation has already set the state
    const p = j.progress;
    const where = p.layers > 0 ? `, layer ${p.layer}/${p.layers} ${p.sublayer ?? ""}` : "";
    engine.setStatus("loading", `${j.status}: ${(100 * p.fraction).toFixed(0)} %${where}`);
    if (j.kind === "quantize") bar.update(p.fraction, `${j.status}${where}`);
  };
  const unsubscribe = jobs.subscribe(job.id, show);
  const done = await jobs.wait(job.id);
  unsubscribe();
  bar.done();
  if (done.status !== "done") throw new Error(`Cannot quantize at startup: ${done.error ?? done.status}`);
  console.log(`[leanserve] artifact ${done.artifact?.path}`);
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
