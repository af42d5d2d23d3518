/**
 * How a job shares the one GPU queue with serving. The queue is FIFO and the decode loop keeps a few chunks
 * submitted ahead (inference/engine/generate.ts READ_AHEAD), so waiting for the queue to drain costs the job
 * the decode's whole backlog: waiting after every slice made a 10 s stories260K job take 440 s on lavapipe
 * while streams ran. So the job submits slices back to back for a turn (at most `quantumMs` of wall time or
 * `maxSlices` slices), then waits for the queue to drain and lets the event loop run, so the decode loop
 * submits its next chunks ahead of the job's next turn. A decode chunk thus waits for at most one turn of
 * job work; without requests in flight the job never waits.
 */
import type { Gpu } from "../../kernels/core/mod.ts";

/** Turn length of a job while requests are in flight. */
export interface YieldPolicy {
  /** Wall time of job slices between two waits (default 250 ms). */
  quantumMs?: number;
  /** Most slices between two waits (default 8). */
  maxSlices?: number;
}

/**
 * Builds the `yieldToServing` hook a job's pipeline awaits after every slice.
 * @param gpu the device whose queue is shared
 * @param busy true while requests are in flight
 * @param policy turn length
 * @returns the hook
 */
export function createServingYield(
  gpu: Gpu,
  busy: () => boolean,
  { quantumMs = 250, maxSlices = 8 }: YieldPolicy = {},
): () => Promise<void> {
  let turnStart: number | null = null;
  let slices = 0;
  return async () => {
    if (!busy()) {
      turnStart = null;
      return;
    }
    turnStart ??= performance.now();
    slices++;
    if (slices < maxSlices && performance.now() - turnStart < quantumMs) return;
    await gpu.device.queue.onSubmittedWorkDone();
    await new Promise((resolve) => setTimeout(resolve, 0));
    turnStart = performance.now();
    slices = 0;
  };
}
