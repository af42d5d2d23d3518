/**
 * The engine's Worker: everything that touches the GPU runs here, apart from the HTTP loop in main.ts.
 * Deno's GPU waits (mapAsync, onSubmittedWorkDone) block their thread until the queue drains, so on the
 * main thread they held up every HTTP request, /health included, for whole decode chunks; here they block
 * only the engine (docs/architecture.md "Two threads").
 *
 * main.ts posts `boot` with the parsed config; this Worker then requests the GPU (answering `boot:gpu`),
 * serves the engine and the job manager on its port (inference/remote), resolves --model (download
 * progress on /health), quantizes at startup or loads the model, and answers `boot:model` (the model's
 * generation_config.json) and `boot:ready`, or `boot:failed` with the reason.
 */
import { join, resolve } from "node:path";
import { type Config, type QuantConfig, startupQuant } from "./config.ts";
import { createEngine, type EngineHandle, loadModel } from "./inference/engine/mod.ts";
import { createJobManager, type JobJson, type JobManager, sourceOfModel } from "./inference/jobs/mod.ts";
import { loadModelConfig, parseModelConfig } from "./inference/model/mod.ts";
import { type DownloadProgress, resolveModel } from "./inference/hub/mod.ts";
import { withAdapterBudget } from "./inference/quantize/mod.ts";
import { type Port, serveEngine } from "./inference/remote/mod.ts";
import { createProgressBar, formatBytes, formatSeconds } from "./cli/progress.ts";
import { describeGpu, type Gpu, requestGpu } from "./kernels/core/mod.ts";

/** main.ts to the Worker. */
export type BootRequest = { t: "boot"; config: Config };

/** The Worker's startup reports to main.ts (beside the engine's own messages, inference/remote). */
export type BootReport =
  | { t: "boot:gpu"; ok: true; description: string; isCpu: boolean }
  | { t: "boot:gpu"; ok: false; error: string }
  /** the served folder's generation_config.json (null without one): the server's sampling defaults */
  | { t: "boot:model"; generationConfig: unknown }
  | { t: "boot:ready" }
  | { t: "boot:failed"; error: string };

async function boot(port: Port, config: Config): Promise<void> {
  const report = (m: BootReport) => port.postMessage(m);
  let gpu: Gpu;
  try {
    gpu = await requestGpu();
  } catch (err) {
    report({ t: "boot:gpu", ok: false, error: (err as Error).message });
    return;
  }
  report({ t: "boot:gpu", ok: true, description: describeGpu(gpu), isCpu: gpu.isCpu });

  const engine = createServingEngine(config);
  const loadOptions = {
    weightType: config.dtype,
    decodeActivations: config.decodeActivations,
    modelId: config.servedModelName,
    ...(config.chatTemplate !== null ? { chatTemplate: config.chatTemplate } : {}),
  };
  // Known once --model is resolved (a repo may still be downloading); until then requests wait for ready.
  let sourceModel: string | null = null;
  const jobs = createJobManager({
    gpu,
    engine,
    sourceModel: () => sourceModel,
    artifactsDir: resolve(config.artifactsDir),
    calibDirs: config.calibDirs.map((d) => resolve(d)),
    calibGpuMemory: config.calibGpuMemory,
    loadOptions,
  });
  serveEngine(port, { engine, jobs });

  try {
    const started = performance.now();
    const modelDir = await resolveModelDir(config, engine);
    sourceModel = await sourceOfModel(modelDir).then((d) => d && resolve(d));
    report({
      t: "boot:model",
      generationConfig: await generationConfig(config.generationConfig, modelDir),
    });
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
    report({ t: "boot:ready" });
  } catch (err) {
    engine.setStatus("error", (err as Error).message);
    // The process exits on this report (main.ts terminates this Worker and returns 1): the device goes
    // first, since a Worker terminated with a live one segfaulted Deno at exit about once in 24 starts.
    gpu.device.destroy();
    report({ t: "boot:failed", error: (err as Error).message });
  }
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
      maxPromptTokens: config.limits.maxPromptTokens,
      kvCacheMemory: sv.kvCacheMemory,
      kvCacheDtype: sv.kvCacheDtype,
      maxQueued: sv.maxQueuedRequests,
      batchInvariant: sv.batchInvariant,
      prefixCaching: sv.prefixCaching,
      schedulingPolicy: sv.schedulingPolicy,
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

/**
 * The sampling defaults' generation_config.json (--generation-config): the model's if it has one ("auto"),
 * none ("vllm"), or the one a named folder must hold.
 */
async function generationConfig(flag: string, modelDir: string): Promise<unknown> {
  if (flag === "vllm") return null;
  const json = await readJsonIfPresent(join(flag === "auto" ? modelDir : flag, "generation_config.json"));
  if (json === null && flag !== "auto") {
    throw new Error(`Cannot use --generation-config "${flag}": it holds no generation_config.json`);
  }
  return json;
}

async function readJsonIfPresent(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read "${path}": ${(err as Error).message}`);
  }
}

// In a Worker: wait for main.ts's boot message (the module may also be imported for its types).
if ((globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== undefined) {
  const port = self as unknown as Port;
  const onBoot = (event: MessageEvent) => {
    const m = event.data as BootRequest;
    if (m?.t !== "boot") return;
    port.removeEventListener("message", onBoot);
    void boot(port, m.config);
  };
  port.addEventListener("message", onBoot);
}
