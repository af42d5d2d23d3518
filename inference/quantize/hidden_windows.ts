/**
 * Where the calibration hidden states live (issue 12: an 8B model in ≤ 6 GB of GPU memory without giving up
 * f32 states). At Llama-3-8B shape with 128 × 2048 tokens the f32 states are 4.3 GB, more than half the
 * budget. So only the first windows that fit `gpuHiddenBytes` stay on the GPU; the rest keep their exact bytes
 * in host memory and are streamed through a few transit buffers: uploaded before their stage's pass and, for
 * the stages that store (gateUp, out), copied back after it. The bytes are the same either way, so results
 * do not depend on where a window lives (quantize_model_test.ts checks they are bit-identical); only time
 * does: every stage moves the host windows over PCIe once (the stores twice).
 *
 * Transit slots are reused round-robin; a slot is written again only once its previous window's pass (and
 * readback) is done, so at most SLOTS windows are in flight and upload staging stays bounded.
 */
import { createStorage, type Gpu } from "../../kernels/core/mod.ts";

/** One window's hidden state: a GPU buffer, or its bytes in host memory (the runner's storage format). */
export type HiddenWindow = GPUBuffer | Uint8Array<ArrayBuffer>;

/**
 * Default bytes of hidden states kept on the GPU: 1 GiB. Every model whose calibration states fit keeps them
 * all there (no transfers); at 8B shape (32 MiB per f32 window) 32 of 128 windows stay.
 */
export const DEFAULT_GPU_HIDDEN_BYTES = 2 ** 30;

/** Windows in flight through the transit buffers. */
const SLOTS = 3;

/** A transit buffer and, for stages that store, its readback buffer. */
export interface TransitSlot {
  readonly buffer: GPUBuffer;
  /** Created on the first readback. */
  readback: GPUBuffer | null;
  /** Settles when the slot's last window (and its readback) is done. */
  busy: Promise<void>;
}

/** Streams host windows through the GPU, one stage at a time. */
export interface HostTransit {
  /** GPU bytes it holds now. */
  readonly bytes: number;
  /** Waits for a free slot and queues `data` into its buffer (ordered before the next submit). */
  upload(data: Uint8Array<ArrayBuffer>): Promise<TransitSlot>;
  /** Records the copy of the slot's buffer into its readback buffer (after the stage stored into it). */
  recordReadback(enc: GPUCommandEncoder, slot: TransitSlot): void;
  /** After the window's submit: marks the slot busy until it is done, copying back into `into` if given. */
  submitted(slot: TransitSlot, into: Uint8Array | null): void;
  /** Waits for every window in flight; rethrows a failed readback. */
  drain(): Promise<void>;
  destroy(): void;
}

/**
 * How many of `count` windows of `bytes` each stay on the GPU under `budget` bytes.
 * @returns windows 0..n−1 are resident, the rest live on the host
 */
export function residentWindows(count: number, bytes: number, budget: number): number {
  if (!(budget >= 0)) throw new Error(`Cannot budget ${budget} bytes of hidden states: expected ≥ 0`);
  return Math.min(count, Math.floor(budget / bytes));
}

/**
 * Creates the transit buffers for windows of `size` bytes.
 * @param gpu the device
 * @param size bytes of one window (a multiple of 4)
 */
export function createHostTransit(gpu: Gpu, size: number): HostTransit {
  const slots: TransitSlot[] = Array.from({ length: SLOTS }, (_, i) => ({
    buffer: createStorage(gpu, size, `hidden transit ${i}`),
    readback: null,
    busy: Promise.resolve(),
  }));
  let next = 0;
  const settle = (slot: TransitSlot, p: Promise<void>) => {
    p.catch(() => {}); // surfaces when the slot is next awaited, or in drain()
    slot.busy = p;
  };
  return {
    get bytes() {
      return slots.reduce((s, t) => s + t.buffer.size + (t.readback?.size ?? 0), 0);
    },
    async upload(data) {
      if (data.byteLength !== size) {
        throw new Error(`Cannot upload ${data.byteLength} bytes as a ${size}-byte window`);
      }
      const slot = slots[next];
      next = (next + 1) % SLOTS;
      await slot.busy;
      gpu.device.queue.writeBuffer(slot.buffer, 0, data);
      return slot;
    },
    recordReadback(enc, slot) {
      slot.readback ??= gpu.device.createBuffer({
        label: "hidden transit readback",
        size: slot.buffer.size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.copyBufferToBuffer(slot.buffer, 0, slot.readback, 0, slot.buffer.size);
    },
    submitted(slot, into) {
      const rb = slot.readback;
      if (!into || !rb) return settle(slot, gpu.device.queue.onSubmittedWorkDone());
      settle(
        slot,
        rb.mapAsync(GPUMapMode.READ).then(() => {
          into.set(new Uint8Array(rb.getMappedRange(), 0, into.byteLength));
          rb.unmap();
        }),
      );
    },
    async drain() {
      await Promise.all(slots.map((s) => s.busy));
    },
    destroy() {
      for (const s of slots) {
        s.buffer.destroy();
        s.readback?.destroy();
      }
    },
  };
}
