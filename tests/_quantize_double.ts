/**
 * A test double of the quantization API contract (POST/GET/DELETE /v1/quantize, its SSE events, /v1/artifacts
 * and activation), for the console page's browser checks only, until the real API lands. Jobs play a
 * scripted timeline of job objects (queued → calibrating → quantizing layer by layer with losses → evaluating
 * → done) at a fixed pace; nothing is quantized.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";

const SUBLAYERS = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.down_proj",
];

/** A job object as the contract describes it. */
// deno-lint-ignore no-explicit-any -- mirrors the JSON contract, checked by the page
export type Job = Record<string, any>;

/** An artifact entry of GET /v1/artifacts. */
export interface Artifact {
  name: string;
  path: string;
  method: string;
  bits: number;
  group_size: number;
  created_at: number;
  ppl: number | null;
  active: boolean;
}

/** The double's state, for the test to inspect. */
export interface QuantizeDouble {
  app: Hono;
  /** Bodies of POST /v1/quantize, as received. */
  posted: unknown[];
  artifacts: Artifact[];
  jobs: Map<string, Job>;
}

/**
 * Builds the double.
 * @param options `layers` of the pretend model, `stepMs` between job updates, `adminKey` required as Bearer,
 *   `onActivate` called when an artifact becomes the served one.
 */
export function quantizeApiDouble(
  { layers = 4, stepMs = 120, adminKey = "admin-key", onActivate = (_a: Artifact) => {} } = {},
): QuantizeDouble {
  const posted: unknown[] = [];
  const jobs = new Map<string, Job>();
  const listeners = new Map<string, Set<() => void>>();
  const artifacts: Artifact[] = [{
    name: "rtn4",
    path: "/tmp/artifacts/rtn4",
    method: "rtn",
    bits: 4,
    group_size: 128,
    created_at: 1_700_000_000,
    ppl: 12.5,
    active: false,
  }];
  const terminal = (j: Job) => ["done", "failed", "cancelled"].includes(j.status);
  const changed = (job: Job) => listeners.get(job.id)?.forEach((f) => f());

  /** Plays `steps` (each mutates the job) one per stepMs, unless the job ends first. */
  function play(job: Job, steps: ((j: Job) => void)[]) {
    const started = Date.now();
    const tick = (i: number) => {
      if (terminal(job) || i >= steps.length) return;
      steps[i](job);
      job.timings.elapsed_seconds = (Date.now() - started) / 1000;
      if (terminal(job)) job.timings.finished_at = Math.floor(Date.now() / 1000);
      changed(job);
      setTimeout(() => tick(i + 1), stepMs);
    };
    setTimeout(() => tick(0), stepMs);
  }

  function newJob(options: Job, status: string): Job {
    const id = `qjob-${jobs.size + 1}`;
    const now = Math.floor(Date.now() / 1000);
    const job: Job = {
      id,
      object: "quantize.job",
      name: options.name ?? id,
      status,
      created_at: now,
      options,
      progress: { layer: 0, layers, sublayer: null, fraction: 0, eta_seconds: null },
      timings: { started_at: now, finished_at: null, elapsed_seconds: 0 },
      peak_gpu_bytes: null,
      gpu_bytes: null,
      losses: [],
      eval: null,
      artifact: null,
      error: null,
    };
    jobs.set(id, job);
    return job;
  }

  function activate(a: Artifact) {
    for (const x of artifacts) x.active = x === a;
    onActivate(a);
  }

  function quantizeSteps(options: Job): ((j: Job) => void)[] {
    const steps: ((j: Job) => void)[] = [(j) => (j.status = "calibrating")];
    if (options.eval) steps.push((j) => (j.eval = { ppl_before: 10.25, ppl_after: null, windows: 2 }));
    for (let layer = 0; layer < layers; layer++) {
      SUBLAYERS.forEach((sublayer, s) => {
        steps.push((j) => {
          j.status = "quantizing";
          const done = layer * SUBLAYERS.length + s + 1;
          j.progress = {
            layer,
            layers,
            sublayer,
            fraction: done / (layers * SUBLAYERS.length),
            eta_seconds: (layers * SUBLAYERS.length - done) * 2,
          };
          j.losses.push({ layer, sublayer, loss: 0.01 * (layer + 1) ** 2 * (s + 1) });
          j.gpu_bytes = 50_000_000 + done * 1_000_000;
          j.peak_gpu_bytes = Math.max(j.peak_gpu_bytes ?? 0, j.gpu_bytes + 20_000_000);
        });
      });
    }
    if (options.eval) steps.push((j) => (j.status = "evaluating"), (j) => (j.eval.ppl_after = 10.75));
    steps.push((j) => {
      const name = String(j.name);
      const artifact: Artifact = {
        name,
        path: `/tmp/artifacts/${name}`,
        method: options.method,
        bits: options.bits,
        group_size: options.group_size,
        created_at: Math.floor(Date.now() / 1000),
        ppl: j.eval?.ppl_after ?? null,
        active: false,
      };
      artifacts.push(artifact);
      if (options.activate) activate(artifact);
      j.artifact = { name, path: artifact.path };
      j.progress.fraction = 1;
      j.status = "done";
    });
    return steps;
  }

  const app = new Hono();
  app.use("/v1/quantize/*", requireKey(adminKey));
  app.use("/v1/quantize", requireKey(adminKey));
  app.use("/v1/artifacts/*", requireKey(adminKey));
  app.use("/v1/artifacts", requireKey(adminKey));
  app.post("/v1/quantize", async (c) => {
    const body = await c.req.json();
    posted.push(body);
    if ([...jobs.values()].some((j) => !terminal(j))) {
      return c.json(errorBody("Cannot start a quantization: a job is running", "job_running"), 409);
    }
    const job = newJob(body, "queued");
    play(job, quantizeSteps(body));
    return c.json({
      id: job.id,
      object: job.object,
      status: job.status,
      status_url: `/v1/quantize/${job.id}`,
    }, 202);
  });
  app.get("/v1/quantize", (c) => c.json({ object: "list", data: [...jobs.values()] }));
  app.get("/v1/quantize/:id", (c) => {
    const job = jobs.get(c.req.param("id"));
    return job ? c.json(job) : c.json(errorBody("Cannot find job", "job_not_found"), 404);
  });
  app.delete("/v1/quantize/:id", (c) => {
    const job = jobs.get(c.req.param("id"));
    if (!job) return c.json(errorBody("Cannot find job", "job_not_found"), 404);
    if (!terminal(job)) job.status = "cancelled";
    changed(job);
    return c.json(job);
  });
  app.get("/v1/quantize/:id/events", (c) => {
    const job = jobs.get(c.req.param("id"));
    if (!job) return c.json(errorBody("Cannot find job", "job_not_found"), 404);
    return streamSSE(c, async (stream) => {
      let wake = () => {};
      const listener = () => wake();
      if (!listeners.has(job.id)) listeners.set(job.id, new Set());
      listeners.get(job.id)!.add(listener);
      try {
        for (;;) {
          const next = new Promise<void>((r) => (wake = r));
          await stream.writeSSE({ event: "job", data: JSON.stringify(job) });
          if (terminal(job) || stream.aborted) return;
          await next;
        }
      } finally {
        listeners.get(job.id)!.delete(listener);
      }
    });
  });
  app.get("/v1/artifacts", (c) => c.json({ object: "list", data: artifacts }));
  app.post("/v1/artifacts/:name/activate", (c) => {
    const artifact = artifacts.find((a) => a.name === c.req.param("name"));
    if (!artifact) return c.json(errorBody("Cannot find artifact", "artifact_not_found"), 404);
    const job = newJob(
      { activate: true, name: artifact.name, method: artifact.method, bits: artifact.bits },
      "activating",
    );
    play(job, [(j) => (j.progress.fraction = 0.5), (j) => {
      activate(artifact);
      j.progress.fraction = 1;
      j.artifact = { name: artifact.name, path: artifact.path };
      j.status = "done";
    }]);
    return c.json(job, 202);
  });
  return { app, posted, artifacts, jobs };
}

function errorBody(message: string, code: string) {
  return { error: { message, type: "invalid_request_error", param: null, code } };
}

function requireKey(key: string) {
  return async (c: import("hono").Context, next: () => Promise<void>) => {
    if (c.req.header("authorization") !== `Bearer ${key}`) {
      return c.json(errorBody("Invalid admin key", "invalid_api_key"), 401);
    }
    return await next();
  };
}
