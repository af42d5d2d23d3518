/**
 * Where the calibration hidden states live (issue 12: an 8B model in ≤ 6 GB of GPU memory without giving up
 * f32 states). At Llama-3-8B shape with 128 × 2048 tokens the f32 states are 4.3 GB, more than half the
 * budget. So only as many windows as fit `gpuHiddenBytes` (`--calib-gpu-memory`) stay on the GPU, spread
 * evenly over the windows ({@link isResident}); the rest keep their exact bytes in host memory and are
 * streamed through a few transit buffers: uploaded before their stage's pass and, for the stages that store
 * (gateUp, out), copied back after it. The bytes are the same either way, so results
 * do not depend on where a window lives (quantize_model_test.ts checks they are bit-identical); only time
 * does: every stage moves the host windows over PCIe once (the stores twice).
 *
 * Uploads are queued without waiting (queue order keeps each behind the passes that read the buffer
 * before); at most MAX_IN_FLIGHT windows and READBACKS results wait between two drains, so upload staging
 * and readback buffers stay bounded.
 */
import { createStorage, type Gpu } from "../../kernels/core/mod.ts";

/** One window's hidden state: a GPU buffer, or its bytes in host memory (the runner's storage format). */
export type HiddenWindow = GPUBuffer | Uint8Array<ArrayBuffer>;

/**
 * Default bytes of hidden states kept on the GPU: 1.75 GiB. Every model whose calibration states fit keeps
 * them all there (no transfers); at 8B shape (32 MiB per f32 window) 56 of 128 windows stay, for a
 * whole-process peak of 5,504–5,508 MiB (under issue 12's 6 GB), against 4,739 MiB with 1 GiB and 8,072 MiB
 * with every window, which is faster (H100; per-layer times in BENCHMARKS.md "Quantization speed").
 */
export const DEFAULT_GPU_HIDDEN_BYTES = 1.75 * 2 ** 30;

/** Transit buffers, used in turn: queue order keeps a write behind the passes that read the previous one. */
const TRANSIT_BUFFERS = 2;
/**
 * Windows submitted between two waits for the GPU: bounds the upload staging queued behind the GPU's work.
 * Every wait drains the whole queue (Deno's `mapAsync` and `onSubmittedWorkDone`, docs/webgpu.md §3).
 */
const MAX_IN_FLIGHT = 8;
/** Readback buffers: the storing stages' results are copied back to host memory this many at a time. */
const READBACKS = 4;

/** Streams host windows through the GPU, one stage at a time. */
export interface HostTransit {
  /** GPU bytes it holds now (transit and readback buffers). */
  readonly bytes: number;
  /**
   * Queues `data` into the next transit buffer, ordered after the work already submitted, and returns that
   * buffer. Waits for the GPU (a drain) first when MAX_IN_FLIGHT windows or READBACKS results are pending.
   */
  upload(data: Uint8Array<ArrayBuffer>): Promise<GPUBuffer>;
  /**
   * Records the copy of `buffer` (after the stage stored into it) into a free readback buffer; the bytes
   * land in `into` at the next drain. Call after {@link upload} for the same window, which left one free.
   */
  recordReadback(enc: GPUCommandEncoder, buffer: GPUBuffer, into: Uint8Array): void;
  /** After the window's submit. */
  submitted(): void;
  /** Whether results wait to be copied back. */
  readonly pending: boolean;
  /**
   * Waits for everything submitted (a drain) and maps the pending results' buffers: submit work that needs
   * no upload (a resident window) before {@link copyOut}, so the GPU runs it while the host copies.
   */
  mapPending(): Promise<void>;
  /** Copies the mapped results to their host windows and frees their buffers. */
  copyOut(): void;
  /** Waits for everything submitted and copies every pending result to its host window. */
  drain(): Promise<void>;
  destroy(): void;
}

/**
 * How many of `count` windows of `bytes` each stay on the GPU under `budget` bytes.
 * @returns the number of resident windows; {@link isResident} says which
 */
export function residentWindows(count: number, bytes: number, budget: number): number {
  if (!(budget >= 0)) throw new Error(`Cannot budget ${budget} bytes of hidden states: expected ≥ 0`);
  return Math.min(count, Math.floor(budget / bytes));
}

/**
 * Whether window `w` of `count` is one of the `resident` windows on the GPU: they are spread evenly over the
 * windows, so a stage walking them in order meets a resident window every few host ones, and its passes
 * (which need no upload) keep the GPU busy while the host copies the host windows' results back
 * (runWindows). The order of the windows, and so of every sum over them, never depends on the budget.
 */
export function isResident(w: number, count: number, resident: number): boolean {
  return Math.floor(((w + 1) * resident) / count) > Math.floor((w * resident) / count);
}

/**
 * Creates the transit buffers for windows of `size` bytes.
 *
 * Why no wait per window: a wait is a drain in Deno (docs/webgpu.md §3), so waiting for each window's
 * slot, as this did first, ran uploads and GPU passes one after the other (an 8B layer with 96 of 128
 * windows on the host took 23.2 s against 14.9 s with all on the GPU; H100, BENCHMARKS.md). Queue order
 * makes `writeBuffer` land after the passes already submitted, so uploads overlap the GPU's work; only the
 * readbacks need waits: at most READBACKS windows at a time, and runWindows maps them before a resident
 * window's pass and copies them back while it runs ({@link isResident} spreads those windows).
 * @param gpu the device
 * @param size bytes of one window (a multiple of 4)
 */
export function createHostTransit(gpu: Gpu, size: number): HostTransit {
  const buffers = Array.from(
    { length: TRANSIT_BUFFERS },
    (_, i) => createStorage(gpu, size, `hidden transit ${i}`),
  );
  const readbacks: GPUBuffer[] = [];
  const free: GPUBuffer[] = [];
  const pending: { rb: GPUBuffer; into: Uint8Array }[] = [];
  let mapped: { rb: GPUBuffer; into: Uint8Array }[] = [];
  let next = 0;
  let inFlight = 0;
  const mapPending = async () => {
    if (pending.length === 0) {
      if (inFlight > 0) await gpu.device.queue.onSubmittedWorkDone();
      inFlight = 0;
      return;
    }
    const done = pending.splice(0);
    // The first map waits for all submitted work; a failure unmaps the others and frees every buffer.
    const maps = await Promise.allSettled(done.map(({ rb }) => rb.mapAsync(GPUMapMode.READ)));
    inFlight = 0;
    const failed = maps.find((m) => m.status === "rejected");
    if (failed) {
      for (const [i, m] of maps.entries()) if (m.status === "fulfilled") done[i].rb.unmap();
      free.push(...done.map(({ rb }) => rb));
      throw (failed as PromiseRejectedResult).reason;
    }
    mapped.push(...done);
  };
  const copyOut = () => {
    const done = mapped;
    mapped = [];
    try {
      for (const { rb, into } of done) into.set(new Uint8Array(rb.getMappedRange(), 0, into.byteLength));
    } finally {
      for (const { rb } of done) rb.unmap();
      free.push(...done.map(({ rb }) => rb));
    }
  };
  const drain = async () => {
    await mapPending();
    copyOut();
  };
  return {
    get bytes() {
      return TRANSIT_BUFFERS * size + readbacks.length * size;
    },
    async upload(data) {
      if (data.byteLength !== size) {
        throw new Error(`Cannot upload ${data.byteLength} bytes as a ${size}-byte window`);
      }
      if (inFlight >= MAX_IN_FLIGHT || pending.length >= READBACKS) await drain();
      const buffer = buffers[next];
      next = (next + 1) % TRANSIT_BUFFERS;
      gpu.device.queue.writeBuffer(buffer, 0, data);
      return buffer;
    },
    recordReadback(enc, buffer, into) {
      let rb = free.pop();
      if (!rb) {
        if (readbacks.length >= READBACKS) {
          throw new Error("Cannot read back a window: no readback buffer is free");
        }
        rb = gpu.device.createBuffer({
          label: `hidden transit readback ${readbacks.length}`,
          size,
          usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        });
        readbacks.push(rb);
      }
      enc.copyBufferToBuffer(buffer, 0, rb, 0, size);
      pending.push({ rb, into });
    },
    submitted() {
      inFlight++;
    },
    get pending() {
      return pending.length > 0;
    },
    mapPending,
    copyOut,
    drain,
    destroy() {
      for (const b of [...buffers, ...readbacks]) b.destroy();
    },
  };
}
