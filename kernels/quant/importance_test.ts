import assert from "node:assert/strict";
import { createImportance } from "./importance.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { importanceWeights } from "../../quant/reference/reference_grid.ts";
import { upperInverseFactorReversal } from "../../quant/reference/reference_linalg.ts";
import { randomSpd } from "../../quant/reference/_reference_cases.ts";
import { assertAllClose } from "../../tests/_assert.ts";
import { seededRandom, testGpu } from "../../tests/_gpu.ts";

async function gpuImportance(gpu: Gpu, U: Float32Array, cols: number, exponent: number) {
  const importance = createStorage(gpu, cols * 4, "importance");
  const bound = createImportance(gpu).bind({ U: uploadStorage(gpu, U, "U"), importance, cols, exponent });
  runPass(gpu, (pass) => bound.encode(pass));
  return await readF32(gpu, importance, cols);
}

Deno.test("importance() is U_kk^-p normalised by its maximum, like importanceWeights()", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  createImportance(gpu);
  await checkPipelines(gpu);
  for (const cols of [1, 7, 64, 65, 300]) {
    await t.step(`U of a random SPD H with an outlier channel, cols = ${cols}`, async () => {
      const U = Float32Array.from(
        upperInverseFactorReversal(randomSpd(cols, cols, { outlier: cols >> 1 }), cols)!,
      );
      for (const p of [4, 3, 0.5]) {
        const got = await gpuImportance(gpu, U, cols, p);
        const rtol = Number.isInteger(p) ? 1e-6 : 1e-5; // pow() is exp2(p·log2 r) for fractional p
        assertAllClose(got, importanceWeights(U, cols, p), { rtol, atol: 1e-37, what: `p ${p}` });
        assert.equal(Math.max(...got), 1);
      }
    });
  }
  await t.step("a diagonal spanning 1e-6..1e3 (U^-4 up to 1e24) stays finite", async () => {
    const cols = 257;
    const rand = seededRandom(5);
    const U = new Float32Array(cols * cols);
    for (let k = 0; k < cols; k++) U[k * cols + k] = 10 ** (-6 + 9 * rand());
    const got = await gpuImportance(gpu, U, cols, 4);
    assert.ok(got.every((v) => Number.isFinite(v) && v >= 0 && v <= 1));
    assertAllClose(got, importanceWeights(U, cols, 4), { rtol: 1e-6, atol: 1e-37, what: "wide diagonal" });
  });
  assert.throws(
    () =>
      createImportance(gpu).bind({
        U: createStorage(gpu, 4, "U"),
        importance: createStorage(gpu, 4, "a"),
        cols: 1,
        exponent: -1,
      }),
    /exponent ≥ 0/,
  );
  gpu.device.destroy();
});
