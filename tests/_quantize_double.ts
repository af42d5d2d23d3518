/**
 * A test double of the quantization API (POST/GET/DELETE /v1/quantize, its SSE events, /v1/artifacts and
 * activation) for the console's browser checks that a real job cannot be made to do on demand (a paced
 * timeline, a 409, a cancel mid-way, two artifacts to compare) without a GPU. It follows the real routes
 * (server/routes/quantize.ts, artifacts.ts) and job JSON (inference/jobs/job.ts): bodies are validated by the
 * real parser and `options` is its requestToJson, `progress.layer` is 1-based while the losses' layer is
 * 0-based, `eval` appears only once both perplexities are known, a 202 carries `{id, object, status,
 * status_url}`, cancelling an ended job is a 409. Jobs play a scripted timeline (queued → calibrating →
 * quantizing layer by layer with losses → evaluating → [activating] → done) at a fixed pace; nothing is
 * quantized. The real API is driven by tests/browser_admin_test.ts's stories260K test.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { parseQuantizeRequest, QuantizeOptionsError, requestToJson } from "../inference/quantize/mod.ts";

const SUBLAYERS = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.down_proj",
];

/** A job object as inference/jobs/job.ts writes it. */
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

  function newJob(kind: "quantize" | "activate", name: string, options: Job | null, status: string): Job {
    const id = `qjob-${jobs.size + 1}`;
    const now = Math.floor(Date.now() / 1000);
    const job: Job = {
      id,
      object: "quantize.job",
      kind,
      name,
      status,
      created_at: now,
      options,
      progress: { layer: 0, layers: 0, sublayer: null, fraction: 0, eta_seconds: null },
      timings: { started_at: now, finished_at: null, elapsed_seconds: 0 },
      peak_gpu_bytes: 0,
      gpu_bytes: 0,
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

  /** The timeline of a quantization; `evaluate` and `activate` come from the request, not from `options`. */
  function quantizeSteps(options: Job, evaluate: boolean, activateWhenDone: boolean): ((j: Job) => void)[] {
    const steps: ((j: Job) => void)[] = [(j) => (j.status = "calibrating")];
    const total = layers * SUBLAYERS.length;
    for (let layer = 0; layer < layers; layer++) {
      SUBLAYERS.forEach((sublayer, s) => {
        steps.push((j) => {
          j.status = "quantizing";
          const done = layer * SUBLAYERS.length + s + 1;
          j.progress = {
            layer: layer + 1, // 1-based on the wire
            layers,
            sublayer: `quantize ${sublayer}`,
            fraction: done / total,
            eta_seconds: (total - done) * 2,
          };
          j.losses.push({ layer, sublayer, loss: 0.01 * (layer + 1) ** 2 * (s + 1) });
          j.gpu_bytes = 50_000_000 + done * 1_000_000;
          j.peak_gpu_bytes = Math.max(j.peak_gpu_bytes, j.gpu_bytes + 20_000_000);
        });
      });
    }
    if (evaluate) {
      for (const which of ["before", "after"]) {
        steps.push((j) => {
          j.status = "evaluating";
          j.progress = { ...j.progress, sublayer: `perplexity ${which} 2/2`, eta_seconds: 1 };
        });
      }
    }
    steps.push((j) => {
      const name = String(j.name);
      if (evaluate) j.eval = { ppl_before: 10.25, ppl_after: 10.75, windows: 2 };
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
      j.artifact = { name, path: artifact.path };
      if (activateWhenDone) j.status = "activating";
    });
    steps.push((j) => {
      if (activateWhenDone) activate(artifacts.find((a) => a.name === j.name)!);
      j.progress = { ...j.progress, fraction: 1, eta_seconds: 0 };
      j.gpu_bytes = 0;
      j.status = "done";
    });
    return steps;
  }

  const accepted = (c: import("hono").Context, job: Job) => {
    const statusUrl = `/v1/quantize/${job.id}`;
    c.header("location", statusUrl);
    return c.json({ id: job.id, object: job.object, status: job.status, status_url: statusUrl }, 202);
  };

  const app = new Hono();
  app.use("/v1/quantize/*", requireKey(adminKey));
  app.use("/v1/quantize", requireKey(adminKey));
  app.use("/v1/artifacts/*", requireKey(adminKey));
  app.use("/v1/artifacts", requireKey(adminKey));
  app.post("/v1/quantize", async (c) => {
    const body = await c.req.json();
    posted.push(body);
    let request;
    try {
      request = parseQuantizeRequest(body);
    } catch (err) {
      if (!(err instanceof QuantizeOptionsError)) throw err;
      return c.json(errorBody(err.message, null, err.field || null), 400);
    }
    const running = [...jobs.values()].find((j) => !terminal(j));
    if (running) {
      const message =
        `Cannot start a job while job ${running.id} is ${running.status}: one job runs at a time`;
      return c.json(errorBody(message, "job_running"), 409);
    }
    if (request.name !== null && artifacts.some((a) => a.name === request.name)) {
      return c.json(
        errorBody(`Cannot create artifact "${request.name}": it exists already`, "artifact_exists", "name"),
        409,
      );
    }
    const options = requestToJson(request);
    const job = newJob("quantize", request.name ?? `double-${jobs.size + 1}`, options, "queued");
    play(job, quantizeSteps(options, request.eval !== null, request.activate));
    return accepted(c, job);
  });
  app.get("/v1/quantize", (c) => c.json({ object: "list", data: [...jobs.values()].reverse() }));
  app.get("/v1/quantize/:id", (c) => {
    const job = jobs.get(c.req.param("id"));
    return job ? c.json(job) : c.json(errorBody("Cannot find job", "job_not_found"), 404);
  });
  app.delete("/v1/quantize/:id", (c) => {
    const job = jobs.get(c.req.param("id"));
    if (!job) return c.json(errorBody("Cannot find job", "job_not_found"), 404);
    if (terminal(job)) {
      return c.json(errorBody(`Cannot cancel job "${job.id}": it is ${job.status}`, "job_finished"), 409);
    }
    job.status = "cancelled";
    job.gpu_bytes = 0;
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
    if ([...jobs.values()].some((j) => !terminal(j))) {
      return c.json(errorBody("Cannot start a job while another runs", "job_running"), 409);
    }
    const job = newJob("activate", artifact.name, null, "queued");
    job.artifact = { name: artifact.name, path: artifact.path };
    play(job, [(j) => (j.status = "activating"), (j) => {
      activate(artifact);
      j.status = "done";
    }]);
    return accepted(c, job);
  });
  return { app, posted, artifacts, jobs };
}

function errorBody(message: string, code: string | null, param: string | null = null) {
  return { error: { message, type: "invalid_request_error", param, code } };
}

function requireKey(key: string) {
  return async (c: import("hono").Context, next: () => Promise<void>) => {
    if (c.req.header("authorization") !== `Bearer ${key}`) {
      return c.json(errorBody("Invalid admin key", "invalid_api_key"), 401);
    }
    return await next();
  };
}
