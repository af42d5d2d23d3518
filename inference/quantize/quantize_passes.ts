/**
 * The per-window passes of the quantization pipeline (quantize_model.ts) and what it measures about them:
 *  - `embedWindows`: layer 0's inputs, gathered on the host and stored one window at a time;
 *  - `runWindows`: one submit per window (the stage's pass, then the Hessian batch of its capture), paced by
 *    a wait for the GPU about once a second so progress is real, the queue bounded and the upload staging
 *    released;
 *  - GPU time per kind of pass from timestamp queries at the beginning and end of each compute pass (GPU
 *    work is asynchronous, so host clocks around a submit measure nothing), resolved and read back in one
 *    batch where the pipeline waits anyway; needs `timestamp-query` (kernels/gpu.ts asks for it);
 *  - live and peak bytes of the named GPU allocations the pipeline holds.
 */
import { type Gpu, type MatrixBuffer, readBuffer } from "../../kernels/core/mod.ts";
import { createHostTransit, type HiddenWindow } from "./hidden_windows.ts";
import { type BoundLayer, LAYER_STAGES, type LayerRunner, type LayerStage } from "./layer_runner.ts";

/**
 * A Hessian accumulated on the GPU from captured layer inputs: quant/hessian.ts `createHessian` by default
 * (H = (2/N_tokens)·Σ x xᵀ). Batches are queued right after the window's forward.
 */
export interface HessianSink {
  /** (cols, cols) f32, valid after `finalize()`; one buffer or, past one binding, two parts */
  readonly H: MatrixBuffer;
  /** Adds a batch in a submit of its own. */
  addBatch(x: GPUBuffer, tokens: number, xRowOffset?: number): void;
  /** Adds a batch inside the caller's pass (used when present: one submit per window, and timeable). */
  encodeBatch?(pass: GPUComputePassEncoder, x: GPUBuffer, tokens: number, xRowOffset?: number): void;
  finalize(): void | Promise<void>;
  destroy(): void;
}

/** Where one layer's time went (quantizeModel with `profile`). */
export interface LayerPhases {
  layer: number;
  /** Wall seconds of the four groups' capture passes (forward + Hessian), each closed by a wait for the GPU. */
  captureSeconds: number;
  /** Wall seconds in the quantizer, all seven linears (see LinearReport.seconds for each). */
  quantizeSeconds: number;
  /** Wall seconds of the propagate pass, closed by a wait for the GPU. */
  propagateSeconds: number;
  /** Wall seconds of the whole layer (also the upload and the bookkeeping between phases). */
  totalSeconds: number;
  /**
   * GPU seconds from timestamp queries, summed over windows: the forward pass of each stage and the Hessian
   * accumulation of all four groups. Null when the device has no `timestamp-query`.
   */
  gpu: { forward: Record<LayerStage, number>; hessian: number } | null;
}

/**
 * Runs a bound stage over every window, adding each capture to `sink` (none for "out"). Host windows
 * (hidden_windows.ts) stream through transit buffers created for this call and freed before it returns, so
 * they never share the GPU with the quantizer.
 * @param gpu the device
 * @param hidden the windows' hidden states (updated in place by stages that store)
 * @param options the bound stage, the sink, the timer, and a callback after each window
 */
export async function runWindows(
  gpu: Gpu,
  hidden: readonly HiddenWindow[],
  { bound, sink, rows, timer, onWindow, slice, onTransitBytes }: {
    bound: BoundLayer;
    sink: HessianSink | null;
    rows: number;
    timer: PassTimer | null;
    onWindow: () => void;
    /** Awaited after each window's submit: cancellation and the server's turn on the queue. */
    slice?: () => Promise<void>;
    /** Told the transit buffers' bytes when they are made and 0 when freed (memory accounting). */
    onTransitBytes?: (bytes: number) => void;
  },
): Promise<void> {
  const host = hidden.find((h) => h instanceof Uint8Array);
  const transit = host instanceof Uint8Array ? createHostTransit(gpu, host.byteLength) : null;
  try {
    let synced = performance.now();
    for (const h of hidden) {
      const onHost = h instanceof Uint8Array;
      // Before a resident window, results of host windows are mapped (a drain); the window's passes then
      // run while they are copied back, instead of leaving the GPU idle during the copy.
      const overlap = !onHost && transit !== null && transit.pending;
      if (overlap) await transit.mapPending();
      const x = onHost ? await transit!.upload(h) : h;
      const enc = gpu.device.createCommandEncoder({ label: `window ${bound.stage}` });
      bound.encode(enc, x, timer?.writes(`forward ${bound.stage}`));
      if (sink?.encodeBatch) {
        const writes = timer?.writes("hessian");
        const pass = enc.beginComputePass(writes ? { timestampWrites: writes } : {});
        sink.encodeBatch(pass, bound.capture!, rows);
        pass.end();
      }
      if (onHost && bound.writesHidden) transit!.recordReadback(enc, x, h);
      gpu.device.queue.submit([enc.finish()]);
      if (onHost) {
        transit!.submitted();
        onTransitBytes?.(transit!.bytes);
      }
      if (overlap) transit.copyOut();
      if (sink && !sink.encodeBatch) sink.addBatch(bound.capture!, rows);
      if (timer?.full) {
        await timer.flush();
        synced = performance.now();
      } else if (performance.now() - synced > 1000) {
        await gpu.device.queue.onSubmittedWorkDone();
        synced = performance.now();
      }
      onWindow();
      await slice?.();
    }
    await transit?.drain();
  } finally {
    if (transit) {
      // Nothing may still read or write the transit buffers once they are freed.
      await transit.drain().catch(() => {});
      transit.destroy();
      onTransitBytes?.(0);
    }
  }
}

/** Where {@link embedWindows} puts window `w`: on the GPU, or in host memory. */
export type WindowPlace = (w: number) => "gpu" | "host";

/**
 * Layer 0's inputs: the token embeddings of every window, gathered on the host (the table never goes up)
 * and stored through the runner's scratch, so upload staging holds about a second of windows at a time.
 * @param runner converts and stores each window
 * @param table (vocabSize, dim) f32 token embeddings
 * @param scale the model's embedding scale (Gemma's √dim, else 1), applied in f32 as the forward's embed does
 * @param windows token ids, each `runner.rows` long
 * @param place where each window goes (default: every window on the GPU)
 * @param onStored receives each new hidden state, a GPU buffer the caller owns or host bytes
 */
export async function embedWindows(
  gpu: Gpu,
  runner: LayerRunner,
  { table, dim, scale, windows, place = () => "gpu", onStored, slice }: {
    table: Float32Array;
    dim: number;
    scale: number;
    windows: readonly Uint32Array[];
    place?: WindowPlace;
    onStored: (hidden: HiddenWindow) => void;
    slice?: () => Promise<void>;
  },
): Promise<void> {
  const vocabSize = table.length / dim;
  let synced = performance.now();
  for (const [w, ids] of windows.entries()) {
    const x = new Float32Array(ids.length * dim);
    ids.forEach((id, t) => {
      if (id >= vocabSize) {
        throw new Error(`Cannot embed calibration token ${id}: vocabulary has ${vocabSize} ids`);
      }
      x.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
    });
    if (scale !== 1) x.forEach((v, i) => x[i] = Math.fround(v * scale));
    if (place(w) === "host") {
      onStored(await hostWindow(gpu, runner, x));
    } else {
      const h = runner.createHidden(`hidden window ${w}`);
      onStored(h);
      runner.store(x, h);
    }
    if (performance.now() - synced > 1000) {
      await gpu.device.queue.onSubmittedWorkDone();
      synced = performance.now();
    }
    await slice?.();
  }
}

/** A window's bytes in the runner's storage format: f32 as they are, f16 rounded by the runner's own kernel. */
async function hostWindow(
  gpu: Gpu,
  runner: LayerRunner,
  x: Float32Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  if (runner.storage === "f32") return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const h = runner.createHidden("hidden window in transit");
  try {
    runner.store(x, h);
    return new Uint8Array(await readBuffer(gpu, h, runner.hiddenBytes));
  } finally {
    h.destroy();
  }
}

/** Timestamp queries around compute passes, totalled per label. */
export interface PassTimer {
  /** Bytes of GPU memory it holds. */
  readonly bytes: number;
  /** True when the next window's passes may not fit: `flush()` first. */
  readonly full: boolean;
  /**
   * Reserves the begin/end queries of one pass.
   * @param label what the pass does, e.g. "forward qkv" or "hessian"
   * @returns the pass descriptor's `timestampWrites`
   */
  writes(label: string): GPUComputePassTimestampWrites;
  /** Resolves the passes recorded so far (waits for the GPU: one readback) and adds them to the totals. */
  flush(): Promise<void>;
  /** The totals since the last call, as a layer's GPU phases; resets them. */
  take(): NonNullable<LayerPhases["gpu"]>;
  destroy(): void;
}

/** Passes per window at most (the stage's pass and the Hessian's). */
const PASSES_PER_WINDOW = 2;

/**
 * Creates a pass timer.
 * @param gpu a device with `timestamp-query`
 * @param capacity queries (2 per pass; WebGPU allows up to 4096 per set)
 * @returns the timer
 */
export function createPassTimer(gpu: Gpu, capacity = 4096): PassTimer {
  const querySet = gpu.device.createQuerySet({ label: "pass timer", type: "timestamp", count: capacity });
  const resolved = gpu.device.createBuffer({
    label: "pass timer resolved",
    size: capacity * 8, // (capacity) u64 nanoseconds
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const labels: string[] = [];
  const totals = new Map<string, number>();
  return {
    bytes: capacity * 8,
    get full() {
      return 2 * (labels.length + PASSES_PER_WINDOW) > capacity;
    },
    writes(label) {
      const i = 2 * labels.length;
      if (i + 2 > capacity) throw new Error("Cannot time another pass: flush() the timer first");
      labels.push(label);
      return { querySet, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 };
    },
    async flush() {
      if (labels.length === 0) return;
      const n = 2 * labels.length;
      const enc = gpu.device.createCommandEncoder({ label: "pass timer resolve" });
      enc.resolveQuerySet(querySet, 0, n, resolved, 0);
      gpu.device.queue.submit([enc.finish()]);
      const t = new BigUint64Array(await readBuffer(gpu, resolved, n * 8));
      labels.forEach((label, k) => {
        // A clock that is not monotonic across passes on some drivers must not make time negative.
        const ns = t[2 * k + 1] > t[2 * k] ? Number(t[2 * k + 1] - t[2 * k]) : 0;
        totals.set(label, (totals.get(label) ?? 0) + ns / 1e9);
      });
      labels.length = 0;
    },
    take() {
      const forward = Object.fromEntries(LAYER_STAGES.map((s) => [s, totals.get(`forward ${s}`) ?? 0]));
      const out = { forward: forward as Record<LayerStage, number>, hessian: totals.get("hessian") ?? 0 };
      totals.clear();
      return out;
    },
    destroy() {
      querySet.destroy();
      resolved.destroy();
    },
  };
}

/** Live and peak bytes of named GPU allocations; `set` replaces a name's bytes (0 when freed). */
export class MemoryTracker {
  #bytes = new Map<string, number>();
  live = 0;
  peak = 0;
  /** Bytes held under `name` now. */
  bytes(name: string): number {
    return this.#bytes.get(name) ?? 0;
  }
  /** Sets the bytes held under `name` and updates the peak. */
  set(name: string, bytes: number): void {
    this.live += bytes - (this.#bytes.get(name) ?? 0);
    this.#bytes.set(name, bytes);
    this.peak = Math.max(this.peak, this.live);
  }
}
