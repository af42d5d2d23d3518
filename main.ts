/**
 * leanserve's composition root: parseConfig → requestGpu → createApp + Deno.serve (answering 503
 * while loading) → [the startup quantization job] or loadModel → engine ready. It does nothing else.
 */
import { join, resolve } from "node:path";
import { ConfigError, HELP_TEXT, parseConfig, type QuantConfig } from "./config.ts";
import { createApp } from "./server/app.ts";
import { samplingFromGenerationConfig } from "./server/protocol.ts";
import { createEngine, type EngineHandle, loadModel } from "./inference/engine/mod.ts";
import { createJobManager, type JobJson, type JobManager, sourceOfModel } from "./inference/jobs/mod.ts";
import { describeGpu, requestGpu } from "./kernels/core/mod.ts";
import { createProgressBar } from "./cli/progress.ts";

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
  const generationJson = await readJsonIfPresent(join(config.model, "generation_config.json"));
  const gpu = await requestGpu();
  console.log(`[leanserve] ${describeGpu(gpu)}`);
  if (gpu.isCpu) console.warn("[leanserve] warning: serving on a CPU adapter (llvmpipe); expect low speed");

  const sv = config.serving;
  const engine = createEngine(config.servedModelName, {
    batch: {
      maxNumSeqs: sv.maxNumSeqs,
      maxNumBatchedTokens: sv.maxNumBatchedTokens,
      maxModelLen: sv.maxModelLen,
      kvCacheMemory: sv.kvCacheMemory,
      kvCacheDtype: sv.kvCacheDtype,
      maxQueued: sv.maxQueuedRequests,
    },
  });
  const loadOptions = {
    weightType: config.dtype,
    decodeActivations: config.decodeActivations,
    modelId: config.servedModelName,
  };
  const jobs = createJobManager({
    gpu,
    engine,
    sourceModel: await sourceOfModel(config.model).then((d) => d && resolve(d)),
    artifactsDir: resolve(config.artifactsDir),
    calibDirs: config.calibDirs.map((d) => resolve(d)),
    loadOptions,
  });
  const app = createApp({
    engine,
    config,
    generationDefaults: samplingFromGenerationConfig(generationJson),
    jobs,
  });
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: ({ hostname, port }) => console.log(`[leanserve] listening on http://${hostname}:${port}`),
  }, app.fetch);

  try {
    const started = performance.now();
    if (config.quant) {
      await quantizeAtStartup(jobs, engine, config.quant);
    } else {
      const onProgress = (detail: string) => engine.setStatus("loading", detail);
      engine.setModel(await loadModel(gpu, config.model, { ...loadOptions, onProgress }));
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const c = engine.counters();
    console.log(
      `[leanserve] model "${engine.status().modelId}" ready in ${seconds} s; KV cache ${c.kvBlocksTotal} blocks ` +
        `(${
          (c.gpuBytes.kvCache / 2 ** 20).toFixed(0)
        } MiB), max model length ${engine.status().contextLength}`,
    );
  } catch (err) {
    engine.setStatus("error", (err as Error).message);
    console.error(`[leanserve] error: ${(err as Error).message}`);
    await server.shutdown();
    return 1;
  }
  await server.finished;
  return 0;
}

/**
 * `--quantize`: the same job as POST /v1/quantize, with activate; an artifact made earlier with the same
 * source revision and options (its deterministic name) is served at once instead. Progress goes to /health
 * and stderr.
 */
async function quantizeAtStartup(
  jobs: JobManager,
  engine: EngineHandle,
  request: QuantConfig,
): Promise<void> {
  const job = await jobs.submit({ ...request, activate: true }, { confine: false, reuse: true });
  console.log(
    job.status === "queued" && job.kind === "quantize"
      ? `[leanserve] quantizing into artifact ${job.name}`
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

async function readJsonIfPresent(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read "${path}": ${(err as Error).message}`);
  }
}

if (import.meta.main) Deno.exit(await main());
