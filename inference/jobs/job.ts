/**
 * One job's state and its JSON snapshot: the exact wire shape of GET /v1/quantize/{id}, its SSE events and
 * the list (a web page codes against it, so fields are only ever added).
 */
import type { LinearReport, QuantizeProgress } from "../quantize/mod.ts";
import type { RunEvents, RunPhase } from "./pipeline.ts";

/** The states; the last three are terminal. */
export type JobStatus =
  | "queued"
  | "calibrating"
  | "quantizing"
  | "evaluating"
  | "activating"
  | "done"
  | "failed"
  | "cancelled";

/** A job as JSON. */
export interface JobJson {
  id: string;
  object: "quantize.job";
  /** "quantize" (POST /v1/quantize) or "activate" (POST /v1/artifacts/{name}/activate). */
  kind: "quantize" | "activate";
  /** The artifact's name (known once the job has resolved it). */
  name: string | null;
  status: JobStatus;
  /** Unix seconds. */
  created_at: number;
  /** The request with every default filled (requestToJson); null for activations. */
  options: Record<string, unknown> | null;
  progress: {
    /** 1-based layer being worked on; 0 before the pipeline starts. */
    layer: number;
    layers: number;
    /** What runs now, e.g. "quantize mlp.down_proj" or "perplexity after 3/8". */
    sublayer: string | null;
    /** Share of the whole job done, 0..1. */
    fraction: number;
    eta_seconds: number | null;
  };
  timings: { started_at: number | null; finished_at: number | null; elapsed_seconds: number | null };
  /** Most GPU bytes the job held at once: the pipeline's accounted buffers, or the evaluated model. */
  peak_gpu_bytes: number;
  gpu_bytes: number;
  losses: { layer: number; sublayer: string; loss: number }[];
  eval: { ppl_before: number | null; ppl_after: number; windows: number } | null;
  artifact: { name: string; path: string } | null;
  error: string | null;
}

const TERMINAL: readonly JobStatus[] = ["done", "failed", "cancelled"];
/** Share of the progress bar the perplexities take when the job evaluates. */
const EVAL_SHARE = 0.15;
/** Least time between two progress notifications (state changes are sent at once). */
const NOTIFY_MS = 200;

/** A job being run by the manager. */
export class Job {
  readonly id = `qjob-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
  readonly createdAt = Math.floor(Date.now() / 1000);
  status: JobStatus = "queued";
  name: string | null = null;
  artifact: JobJson["artifact"] = null;
  eval: JobJson["eval"] = null;
  readonly ended: Promise<void>;
  #done!: () => void;
  #abort = new AbortController();
  #listeners = new Set<(job: JobJson) => void>();
  #progress: JobJson["progress"] = { layer: 0, layers: 0, sublayer: null, fraction: 0, eta_seconds: null };
  #losses: JobJson["losses"] = [];
  #started: number | null = null;
  #finished: number | null = null;
  #gpu = { live: 0, peak: 0 };
  #error: string | null = null;
  #lastNotify = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly kind: JobJson["kind"], readonly options: Record<string, unknown> | null) {
    this.ended = new Promise((resolve) => (this.#done = resolve));
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get terminal(): boolean {
    return TERMINAL.includes(this.status);
  }

  cancel(): void {
    this.#abort.abort(new Error("Cancelled"));
  }

  setStatus(status: JobStatus): void {
    if (this.#started === null) this.#started = Date.now();
    this.status = status;
    this.notify(true);
  }

  end(status: "done" | "failed" | "cancelled", error: string | null): void {
    this.#finished = Date.now();
    this.#error = error;
    this.#gpu.live = 0;
    if (status === "done") this.#progress = { ...this.#progress, fraction: 1, eta_seconds: 0 };
    this.setStatus(status);
    this.#listeners.clear();
    this.#done();
  }

  /** The callbacks a pipeline run reports through. */
  events(): RunEvents {
    const evalShare = (this.options as { eval?: unknown } | null)?.eval ? EVAL_SHARE : 0;
    return {
      phase: (p: RunPhase) => this.setStatus(p),
      progress: (p: QuantizeProgress) => {
        this.#gpu.live = p.gpuBytes;
        this.#gpu.peak = Math.max(this.#gpu.peak, p.peakGpuBytes);
        this.#setProgress(p.layer + 1, p.nLayers, p.step, p.fraction * (1 - evalShare));
      },
      linear: (r: LinearReport) => this.#losses.push({ layer: r.layer, sublayer: r.name, loss: r.loss }),
      evalProgress: (which, done, total) => {
        const base = 1 - evalShare + (which === "after" ? evalShare / 2 : 0);
        const p = this.#progress;
        this.#setProgress(
          p.layer,
          p.layers,
          `perplexity ${which} ${done}/${total}`,
          base + evalShare / 2 * done / total,
        );
      },
      gpuBytes: (bytes) => {
        this.#gpu.live = bytes;
        this.#gpu.peak = Math.max(this.#gpu.peak, bytes);
        this.notify(false);
      },
      log: (line) => console.log(`[jobs] ${this.id}: ${line}`),
    };
  }

  #setProgress(layer: number, layers: number, sublayer: string, fraction: number): void {
    const elapsed = this.#started === null ? 0 : (Date.now() - this.#started) / 1000;
    const eta = fraction > 0.01 ? Math.round(elapsed * (1 - fraction) / fraction) : null;
    this.#progress = { layer, layers, sublayer, fraction, eta_seconds: eta };
    this.notify(false);
  }

  /** Calls `listener` with every later snapshot; returns the unsubscribe function. */
  subscribe(listener: (job: JobJson) => void): () => void {
    if (this.terminal) return () => {};
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Tells the subscribers; progress-only changes at most every NOTIFY_MS, the last one always. */
  notify(force: boolean): void {
    if (!force && Date.now() - this.#lastNotify < NOTIFY_MS) {
      this.#timer ??= setTimeout(() => this.notify(true), NOTIFY_MS);
      return;
    }
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#lastNotify = Date.now();
    const snapshot = this.toJSON();
    for (const listener of this.#listeners) listener(snapshot);
  }

  toJSON(): JobJson {
    const end = this.#finished ?? Date.now();
    return {
      id: this.id,
      object: "quantize.job",
      kind: this.kind,
      name: this.name,
      status: this.status,
      created_at: this.createdAt,
      options: this.options,
      progress: { ...this.#progress },
      timings: {
        started_at: this.#started === null ? null : Math.floor(this.#started / 1000),
        finished_at: this.#finished === null ? null : Math.floor(this.#finished / 1000),
        elapsed_seconds: this.#started === null ? null : Math.round((end - this.#started) / 100) / 10,
      },
      peak_gpu_bytes: this.#gpu.peak,
      gpu_bytes: this.#gpu.live,
      losses: [...this.#losses],
      eval: this.eval,
      artifact: this.artifact,
      error: this.#error,
    };
  }
}
