/**
 * leanserve's composition root: parseConfig → requestGpu → createApp + Deno.serve (answering 503
 * while loading) → quantize if asked → loadModel → engine ready. It does nothing else.
 */
import { join } from "node:path";
import { ConfigError, HELP_TEXT, parseConfig } from "./config.ts";
import { createApp } from "./server/app.ts";
import { createShutdown, type Shutdown } from "./server/shutdown.ts";
import { samplingFromGenerationConfig } from "./server/protocol.ts";
import { createEngine, type EngineHandle, loadModel } from "./inference/engine/mod.ts";
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
  const shutdown = createShutdown({ graceMs: config.shutdownGraceSeconds * 1000 });
  const app = createApp({
    engine,
    config,
    generationDefaults: samplingFromGenerationConfig(generationJson),
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
    const dir = config.quant ? await quantizeAtStartup(gpu, config, engine, shutdown) : config.model;
    const model = await loadModel(gpu, dir, {
      weightType: config.dtype,
      decodeActivations: config.decodeActivations,
      modelId: config.servedModelName,
      onProgress: (detail) => engine.setStatus("loading", detail),
    });
    engine.setModel(model);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const c = engine.counters();
    console.log(
      `[leanserve] model "${model.modelId}" ready in ${seconds} s; KV cache ${c.kvBlocksTotal} blocks ` +
        `(${
          (c.gpuBytes.kvCache / 2 ** 20).toFixed(0)
        } MiB), max model length ${engine.status().contextLength}`,
    );
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

/**
 * `--quantize`: runs the quantize task's pipeline on the server's GPU into a temporary folder (removed at
 * shutdown), reporting progress through /health, and returns that folder.
 */
async function quantizeAtStartup(
  gpu: Gpu,
  config: ReturnType<typeof parseConfig>,
  engine: EngineHandle,
  shutdown: Shutdown,
) {
  const q = config.quant!;
  const tmp = await Deno.makeTempDir({ prefix: "leanserve-quantized-" });
  shutdown.onCleanup(() => Deno.remove(tmp, { recursive: true }));
  const out = `${tmp}/model`;
  console.log(`[leanserve] quantizing ${config.model} with ${q.method} ${q.bits}-bit into ${out}`);
  await runQuantize({
    model: config.model,
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

async function readJsonIfPresent(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read "${path}": ${(err as Error).message}`);
  }
}

if (import.meta.main) Deno.exit(await main());
