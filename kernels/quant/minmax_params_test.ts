import assert from "node:assert/strict";
import { createMinMaxParams } from "./minmax_params.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { minMaxParams } from "../../quant/reference/reference_grid.ts";

Deno.test("minMaxParams() kernel matches quant.py find_params per row and group", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cases = [
    { rows: 1, cols: 7, g: 7, bits: 4 },
    { rows: 7, cols: 63, g: 32, bits: 3 },
    { rows: 9, cols: 64, g: 64, bits: 2 },
    { rows: 33, cols: 130, g: 64, bits: 4 },
    { rows: 3, cols: 300, g: 300, bits: 4 },
  ];
  for (const { rows, cols, g, bits } of cases) {
    await t.step(`rows = ${rows}, cols = ${cols}, group = ${g}, bits = ${bits}`, async () => {
      const kernel = createMinMaxParams(gpu, { bits });
      await checkPipelines(gpu);
      const x = randomF32(rows * cols, rows * 1000 + cols, 2);
      // Awkward rows: all positive (xmin clamps to 0), all negative, all zero (the [−1, 1] fallback).
      for (let c = 0; c < cols; c++) {
        x[c] = Math.abs(x[c]);
        if (rows > 1) x[cols + c] = -Math.abs(x[cols + c]);
        if (rows > 2) x[2 * cols + c] = 0;
      }
      const nGroups = Math.ceil(cols / g);
      const xBuf = uploadStorage(gpu, x, "x");
      const out = createStorage(gpu, rows * nGroups * 8, "out");
      runPass(gpu, (pass) => {
        for (let gi = 0; gi < nGroups; gi++) {
          const groupCols = Math.min(g, cols - gi * g);
          kernel.bind({
            x: xBuf,
            out,
            rows,
            stride: cols,
            colStart: gi * g,
            groupCols,
            nGroups,
            groupIndex: gi,
          })
            .encode(pass);
        }
      });
      const got = await readF32(gpu, out, rows * nGroups * 2);
      for (let r = 0; r < rows; r++) {
        for (let gi = 0; gi < nGroups; gi++) {
          const set = x.subarray(r * cols + gi * g, r * cols + Math.min((gi + 1) * g, cols));
          const want = minMaxParams(set, { bits });
          const at = 2 * (r * nGroups + gi);
          assert.ok(
            Math.abs(got[at] - want.scale) <= 1e-6 * want.scale,
            `scale (${r}, ${gi}): ${got[at]} vs ${want.scale}`,
          );
          assert.equal(got[at + 1], want.zero, `zero (${r}, ${gi})`);
        }
      }
    });
  }
  const tiny = createStorage(gpu, 64, "tiny");
  const kernel = createMinMaxParams(gpu, { bits: 4 });
  const bad = { x: tiny, out: createStorage(gpu, 64, "o"), rows: 2, stride: 8, nGroups: 2, groupIndex: 0 };
  assert.throws(
    () => kernel.bind({ ...bad, colStart: 4, groupCols: 8 }),
    /columns \[4, 12\) exceed stride 8/,
  );
  assert.throws(() => kernel.bind({ ...bad, colStart: 0, groupCols: 4, groupIndex: 2 }), /groupIndex 2/);
  gpu.device.destroy();
});
