/**
 * The quantization job manager: ONE job at a time (another is refused with a 409), each a state machine
 *   queued → calibrating → quantizing → [evaluating] → [activating] → done | failed | cancelled
 * with progress, timings, GPU bytes, per-linear losses and perplexities, observable as JSON snapshots
 * (the wire shape of GET /v1/quantize/{id}) and as change notifications (its SSE stream).
 *
 * Jobs share the GPU with serving: the pipeline awaits `yieldToServing` after every slice it submits, which
 * (only while requests are in flight) takes turns with the decode loop on the queue (serving_yield.ts), so
 * decode steps queue between short turns of job work instead of behind a whole layer. Activation swaps the served model through
 * `engine.setModel` (requests in flight finish on the old one, freed after the last of them).
 */
import { join } from "node:path";
import type { Gpu } from "../../kernels/core/mod.ts";
import { destroyLoadedModel, type EngineHandle, loadModel, type LoadModelOptions } from "../engine/mod.ts";
import { type QuantizeRequest, requestToJson } from "../quantize/mod.ts";
import {
  type ArtifactJson,
  artifactName,
  listArtifacts,
  modelRevision,
  modelShortName,
} from "./artifacts.ts";
import { Job, type JobJson } from "./job.ts";
import { runQuantization } from "./pipeline.ts";
import { createServingYield, type YieldPolicy } from "./serving_yield.ts";
import { JobInputError, type ResolvedText, resolveTextSource, sourceIdentity } from "./sources.ts";

/** What the manager works with. */
export interface JobManagerOptions {
  gpu: Gpu;
  engine: EngineHandle;
  /**
   * The full-precision folder jobs read from; null when unknown (then quantize requests get a 409). A function:
   * the server knows it only once --model is resolved (a repo id may still be downloading).
   */
  sourceModel: () => string | null;
  artifactsDir: string;
  /** `--calib-dir`: where `calibration.file`, `eval.file` and dataset names may point. */
  calibDirs: readonly string[];
  /** How activated artifacts are loaded (served name, dtype, decode activations). */
  loadOptions: LoadModelOptions;
  /** `--calib-gpu-memory`: bytes of calibration hidden states a job keeps on the GPU (default 1.75 GiB). */
  calibGpuMemory?: number;
  log?: (line: string) => void;
  /** Turn length of job work while requests are in flight (serving_yield.ts). */
  yieldPolicy?: YieldPolicy;
  /** Finished jobs kept for GET (default 50). */
  history?: number;
}

/** How a job is submitted. */
export interface SubmitOptions {
  /** Files must lie in the calibration directories (HTTP; default true). */
  confine?: boolean;
  /** When the artifact exists already, activate it instead of refusing (startup; default false). */
  reuse?: boolean;
}

/** The job manager. */
export interface JobManager {
  /** Starts a quantization; throws JobInputError (400/409/503) before anything runs. */
  submit(request: QuantizeRequest, options?: SubmitOptions): Promise<JobJson>;
  /** Starts serving a published artifact; 404 when there is none of that name. */
  activate(name: string): Promise<JobJson>;
  /** A job's snapshot, or null. (Promises, like every call here: the server may hold a remote manager.) */
  get(id: string): Promise<JobJson | null>;
  list(): Promise<JobJson[]>;
  /** Cancels a running job and waits (a few seconds at most) for it to stop; 409 when already finished. */
  cancel(id: string): Promise<JobJson>;
  /** Calls `listener` with each new snapshot until the job ends; returns the unsubscribe function. */
  subscribe(id: string, listener: (job: JobJson) => void): () => void;
  /** Resolves with the job's final snapshot. */
  wait(id: string): Promise<JobJson>;
  artifacts(): Promise<ArtifactJson[]>;
}

/**
 * Creates the manager.
 * @param o the GPU, the engine, the source folder, the directories
 * @returns the manager
 */
export function createJobManager(o: JobManagerOptions): JobManager {
  const jobs = new Map<string, Job>();
  let current: Job | null = null;
  const log = o.log ?? console.log;

  const yieldToServing = createServingYield(o.gpu, () => o.engine.inFlight() > 0, o.yieldPolicy);

  function claim(job: Job): void {
    if (current) {
      throw new JobInputError(
        `Cannot start a job while job ${current.id} is ${current.status}: one job runs at a time`,
        null,
        409,
        "job_running",
      );
    }
    current = job;
    jobs.set(job.id, job);
    const limit = o.history ?? 50;
    for (const [id, j] of jobs) {
      if (jobs.size <= limit) break;
      if (j.terminal) jobs.delete(id);
    }
  }

  function drop(job: Job): void {
    jobs.delete(job.id);
    if (current === job) current = null;
  }

  function finish(job: Job, run: Promise<void>): void {
    run.then(
      () => job.end("done", null),
      (err) => {
        const cancelled = job.signal.aborted;
        if (!cancelled) log(`[jobs] job ${job.id} failed: ${(err as Error).message}`);
        job.end(cancelled ? "cancelled" : "failed", cancelled ? null : (err as Error).message);
      },
    ).finally(() => {
      if (current === job) current = null;
    });
  }

  async function activateDir(job: Job, dir: string): Promise<void> {
    job.setStatus("activating");
    const model = await loadModel(o.gpu, dir, o.loadOptions);
    if (job.signal.aborted) {
      destroyLoadedModel(model);
      job.signal.throwIfAborted();
    }
    await o.engine.setModel(model);
    log(`[jobs] serving ${dir}`);
  }

  async function submit(request: QuantizeRequest, { confine = true, reuse = false }: SubmitOptions = {}) {
    const job = new Job("quantize", requestToJson(request));
    claim(job);
    try {
      const sourceModel = o.sourceModel();
      if (!sourceModel) {
        throw new JobInputError(
          "Cannot quantize: the served folder is quantized and its manifest names no full-precision source",
          null,
          409,
          "no_source_model",
        );
      }
      const rules = { calibDirs: o.calibDirs, confine };
      const calib = request.calibration.source &&
        await resolveTextSource(request.calibration.source, "calibration", rules);
      const evalText = request.eval && await resolveTextSource(request.eval.source, "eval", rules);
      const revision = await modelRevision(sourceModel);
      const name = request.name ?? await defaultName(sourceModel, revision, request, calib);
      job.name = name;
      const dest = join(o.artifactsDir, name);
      if (await exists(dest)) {
        if (!reuse) {
          throw new JobInputError(
            `Cannot create artifact "${name}": it exists already; activate it with ` +
              `POST /v1/artifacts/${name}/activate or give another name`,
            "name",
            409,
            "artifact_exists",
          );
        }
        job.artifact = { name, path: await Deno.realPath(dest) };
        finish(job, activateDir(job, dest));
        return job.toJSON();
      }
      finish(job, runJob(job, request, { sourceModel, calib, evalText, dest, revision }));
      return job.toJSON();
    } catch (err) {
      drop(job);
      throw err;
    }
  }

  async function runJob(
    job: Job,
    request: QuantizeRequest,
    { sourceModel, calib, evalText, dest, revision }: {
      sourceModel: string;
      calib: ResolvedText | null;
      evalText: ResolvedText | null;
      dest: string;
      revision: string;
    },
  ): Promise<void> {
    await new Promise((r) => setTimeout(r, 0)); // the 202 goes out before the first GPU work
    const result = await runQuantization(
      {
        gpu: o.gpu,
        sourceDir: sourceModel,
        request,
        calibration: calib,
        evalText,
        dest,
        record: { name: job.name, source: { revision } },
        served: () => o.engine.lease(),
        ...(o.calibGpuMemory === undefined ? {} : { gpuHiddenBytes: o.calibGpuMemory }),
      },
      job.events(),
      { signal: job.signal, yieldToServing },
    );
    job.artifact = { name: job.name!, path: await Deno.realPath(result.dir) };
    if (result.eval) {
      job.eval = {
        ppl_before: result.eval.pplBefore,
        ppl_after: result.eval.pplAfter,
        windows: result.eval.windows,
      };
    }
    job.notify(true);
    if (request.activate) await activateDir(job, result.dir);
  }

  async function activate(name: string) {
    const dir = join(o.artifactsDir, name);
    const listed = (await listArtifacts(o.artifactsDir, null)).find((a) => a.name === name);
    if (!listed) {
      throw new JobInputError(
        `Cannot find artifact "${name}" in ${o.artifactsDir}`,
        "name",
        404,
        "artifact_not_found",
      );
    }
    const job = new Job("activate", null);
    job.name = name;
    job.artifact = { name, path: listed.path };
    claim(job);
    finish(job, activateDir(job, dir));
    return job.toJSON();
  }

  function need(id: string): Job {
    const job = jobs.get(id);
    if (!job) throw new JobInputError(`Cannot find job "${id}"`, "id", 404, "job_not_found");
    return job;
  }

  return {
    submit,
    activate,
    get: (id) => Promise.resolve(jobs.get(id)?.toJSON() ?? null),
    list: () => Promise.resolve([...jobs.values()].reverse().map((j) => j.toJSON())),
    async cancel(id) {
      const job = need(id);
      if (job.terminal) {
        throw new JobInputError(`Cannot cancel job "${id}": it is ${job.status}`, "id", 409, "job_finished");
      }
      job.cancel();
      await Promise.race([job.ended, new Promise((r) => setTimeout(r, 10_000))]);
      return job.toJSON();
    },
    subscribe: (id, listener) => need(id).subscribe(listener),
    wait: async (id) => (await need(id).ended, need(id).toJSON()),
    async artifacts() {
      const dir = o.engine.lease();
      const active = dir?.model.dir ? await Deno.realPath(dir.model.dir).catch(() => null) : null;
      dir?.release();
      return await listArtifacts(o.artifactsDir, active);
    },
  };
}

/** The deterministic name; the calibration text counts by its content (or the built-in source's version). */
async function defaultName(
  sourceModel: string,
  revision: string,
  request: QuantizeRequest,
  calib: ResolvedText | null,
): Promise<string> {
  const options = requestToJson(request);
  if (calib && options.calibration) {
    const { text_chars: _, file: _f, dataset: _d, ...rest } = options.calibration as Record<string, unknown>;
    options.calibration = { ...rest, source: await sourceIdentity(calib) };
  }
  return artifactName(modelShortName(await Deno.realPath(sourceModel)), revision, options);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
