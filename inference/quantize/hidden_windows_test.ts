import assert from "node:assert/strict";
import { createHostTransit, isResident } from "./hidden_windows.ts";
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
    await t.step("results mapped before a resident window's pass are copied back after it", async () => {
      const windows = Array.from({ length: 3 }, (_, w) => bytes(window(w)));
      const results = Array.from({ length: 3 }, (_, w) => window(w, 3));
      const computed = uploadStorage(gpu, Uint32Array.from(results.flatMap((r) => [...r])), "results");
      const resident = uploadStorage(gpu, window(99), "resident");
      const transit = createHostTransit(gpu, size);
      try {
        for (const [w, h] of windows.entries()) {
          const x = await transit.upload(h);
          const enc = gpu.device.createCommandEncoder();
          enc.copyBufferToBuffer(computed, w * size, x, 0, size);
          transit.recordReadback(enc, x, h);
          gpu.device.queue.submit([enc.finish()]);
          transit.submitted();
        }
        assert.ok(transit.pending);
        await transit.mapPending();
        assert.ok(!transit.pending, "mapped results are no longer pending");
        const enc = gpu.device.createCommandEncoder(); // the resident window's pass, while results are mapped
        enc.copyBufferToBuffer(computed, 0, resident, 0, size);
        gpu.device.queue.submit([enc.finish()]);
        transit.copyOut();
        windows.forEach((h, w) => assert.deepEqual(new Uint32Array(h.buffer), results[w], `window ${w}`));
        assert.deepEqual(await readU32(gpu, resident, words), results[0], "the resident pass ran");
        // the buffers are free again: a second round reuses them
        const x = await transit.upload(bytes(window(5)));
        const enc2 = gpu.device.createCommandEncoder();
        transit.recordReadback(enc2, x, windows[0]);
        gpu.device.queue.submit([enc2.finish()]);
        transit.submitted();
        await transit.drain();
        assert.deepEqual(new Uint32Array(windows[0].buffer), window(5), "a window read back unchanged");
        assert.ok(transit.bytes <= (2 + 4) * size);
      } finally {
        transit.destroy();
        computed.destroy();
        resident.destroy();
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

Deno.test("resident windows are spread evenly, as many as the budget allows", () => {
  for (const [count, resident] of [[128, 56], [128, 32], [2, 1], [5, 0], [7, 7], [10, 3]]) {
    const at = Array.from({ length: count }, (_, w) => w).filter((w) => isResident(w, count, resident));
    assert.equal(at.length, resident, `${resident} of ${count}`);
    const gaps = at.slice(1).map((w, i) => w - at[i]);
    assert.ok(gaps.every((g) => Math.abs(g - count / resident) < 1), `${resident} of ${count}: gaps ${gaps}`);
  }
});
