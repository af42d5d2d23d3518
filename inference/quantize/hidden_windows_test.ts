import assert from "node:assert/strict";
import { createHostTransit } from "./hidden_windows.ts";
import { createStorage, readU32, uploadStorage } from "../../kernels/core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";

/**
 * The transit queues uploads without waiting for the passes that read the previous window from the same
 * buffer, and copies results back a few windows at a time: both are only right if queue order holds and
 * every readback buffer goes back to its own window. Eleven windows: more than the transit buffers (2), the
 * readback buffers (4) and the windows in flight between drains (8).
 */
Deno.test("host windows stream through the transit buffers in queue order", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const [words, count] = [256, 11];
  const size = words * 4;
  const window = (w: number, plus = 0) => Uint32Array.from({ length: words }, (_, i) => w * 1000 + i + plus);
  const bytes = (a: Uint32Array) => new Uint8Array(a.buffer as ArrayBuffer);
  try {
    await t.step("a reading stage sees each window's own bytes", async () => {
      const windows = Array.from({ length: count }, (_, w) => bytes(window(w)));
      const seen = createStorage(gpu, count * size, "seen");
      const transit = createHostTransit(gpu, size);
      try {
        for (const [w, h] of windows.entries()) {
          const x = await transit.upload(h);
          const enc = gpu.device.createCommandEncoder();
          enc.copyBufferToBuffer(x, 0, seen, w * size, size); // the stage's read of its input
          gpu.device.queue.submit([enc.finish()]);
          transit.submitted();
        }
        await transit.drain();
        const got = await readU32(gpu, seen, count * words);
        for (let w = 0; w < count; w++) {
          assert.deepEqual(
            got.subarray(w * words, (w + 1) * words),
            window(w),
            `window ${w} as its pass read it`,
          );
        }
      } finally {
        transit.destroy();
        seen.destroy();
      }
    });
    await t.step("a storing stage's results land in their own host windows", async () => {
      const windows = Array.from({ length: count }, (_, w) => bytes(window(w)));
      const results = Array.from({ length: count }, (_, w) => window(w, 7));
      const computed = uploadStorage(gpu, Uint32Array.from(results.flatMap((r) => [...r])), "results");
      const transit = createHostTransit(gpu, size);
      try {
        for (const [w, h] of windows.entries()) {
          const x = await transit.upload(h);
          const enc = gpu.device.createCommandEncoder();
          enc.copyBufferToBuffer(computed, w * size, x, 0, size); // the stage stores its output in place
          transit.recordReadback(enc, x, h);
          gpu.device.queue.submit([enc.finish()]);
          transit.submitted();
          assert.ok(transit.bytes <= (2 + 4) * size, "two transit buffers and at most four readbacks");
        }
        await transit.drain();
        windows.forEach((h, w) => assert.deepEqual(new Uint32Array(h.buffer), results[w], `window ${w}`));
      } finally {
        transit.destroy();
        computed.destroy();
      }
    });
  } finally {
    gpu.device.destroy();
  }
});
