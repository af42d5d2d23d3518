import assert from "node:assert/strict";
import { createGatherCols } from "./gather_cols.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readBuffer, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { seededRandom, testGpu } from "../../tests/_gpu.ts";

/** A seeded column map: a shuffled permutation with every `deadEvery`-th column set to −1. */
function columnMap(cols: number, seed: number, deadEvery = 0): Int32Array {
  const rand = seededRandom(seed);
  const idx = Int32Array.from({ length: cols }, (_, i) => i);
  for (let i = cols - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  if (deadEvery > 0) { for (let j = 0; j < cols; j += deadEvery) idx[j] = -1; }
  return idx;
}

Deno.test("gatherCols() gathers 32-bit columns and zeroes −1 columns", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createGatherCols(gpu, { bytes: 4 });
  await checkPipelines(gpu);
  for (const [rows, cols, stride] of [[1, 1, 1], [3, 7, 7], [5, 65, 70], [33, 130, 130]]) {
    await t.step(`rows = ${rows}, cols = ${cols}, srcStride = ${stride}`, async () => {
      const rand = seededRandom(rows * 100 + cols);
      const src = Uint32Array.from({ length: rows * stride }, () => Math.floor(rand() * 2 ** 32));
      const idx = columnMap(cols, cols, 3);
      const dst = createStorage(gpu, rows * cols * 4, "dst");
      const args = { rows, cols, srcStride: stride, dst };
      runPass(
        gpu,
        (pass) =>
          kernel.bind({ ...args, src: uploadStorage(gpu, src, "src"), idx: uploadStorage(gpu, idx, "idx") })
            .encode(pass),
      );
      const got = await readU32(gpu, dst, rows * cols);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) {
          const want = idx[j] < 0 ? 0 : src[r * stride + idx[j]];
          assert.equal(got[r * cols + j], want, `(${r}, ${j})`);
        }
      }
    });
  }
  gpu.device.destroy();
});

Deno.test("gatherCols() gathers packed codes into a dense byte matrix", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createGatherCols(gpu, { bytes: 1 });
  await checkPipelines(gpu);
  for (const [rows, cols] of [[1, 1], [3, 7], [7, 63], [2, 64], [5, 130]]) {
    await t.step(`rows = ${rows}, cols = ${cols}`, async () => {
      const stride = Math.ceil(cols / 4);
      const rand = seededRandom(rows * 31 + cols);
      const srcBytes = new Uint8Array(rows * stride * 4);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) srcBytes[r * stride * 4 + c] = Math.floor(rand() * 256);
      }
      const idx = columnMap(cols, cols + 1, cols > 8 ? 5 : 0);
      const dst = createStorage(gpu, rows * cols, "dst");
      runPass(gpu, (pass) =>
        kernel.bind({
          src: uploadStorage(gpu, srcBytes, "src"),
          idx: uploadStorage(gpu, idx, "idx"),
          dst,
          rows,
          cols,
          srcStride: stride,
        }).encode(pass));
      const got = new Uint8Array(await readBuffer(gpu, dst, rows * cols));
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) {
          const want = idx[j] < 0 ? 0 : srcBytes[r * stride * 4 + idx[j]];
          assert.equal(got[r * cols + j], want, `(${r}, ${j})`);
        }
      }
    });
  }
  const tiny = createStorage(gpu, 16, "tiny");
  assert.throws(
    () => kernel.bind({ src: tiny, idx: tiny, dst: tiny, rows: 2, cols: 8, srcStride: 1 }),
    /srcStride 1 is less than a row \(2\)/,
  );
  gpu.device.destroy();
});
