/** GPU time of one compute pass, from timestamp queries: the timing the kernel benchmarks share. */
import type { Gpu } from "../kernels/core/mod.ts";

/** Seconds of GPU time for one pass holding `encode`'s dispatches (best of `runs`). */
export async function timePass(
  gpu: Gpu,
  encode: (pass: GPUComputePassEncoder) => void,
  runs = 3,
): Promise<number> {
  const dev = gpu.device;
  const qs = dev.createQuerySet({ type: "timestamp", count: 2 });
  const resolved = dev.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let best = Infinity;
  try {
    for (let i = 0; i < runs; i++) {
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass({
        timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
      });
      encode(pass);
      pass.end();
      enc.resolveQuerySet(qs, 0, 2, resolved, 0);
      enc.copyBufferToBuffer(resolved, 0, read, 0, 16);
      dev.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(read.getMappedRange().slice(0));
      read.unmap();
      best = Math.min(best, Number(t[1] - t[0]) / 1e9);
    }
  } finally {
    qs.destroy();
    resolved.destroy();
    read.destroy();
  }
  return best;
}
