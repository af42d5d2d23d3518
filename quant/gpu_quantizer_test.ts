/**
 * The GPU quantizer (factor + grid + GPTQ loop on WebGPU) against the f64 reference quantizer, through the
 * pipeline's LinearQuantizer slot, for every method: the codes must agree up to rounding ties.
 */
import assert from "node:assert/strict";
import { testGpu } from "../tests/_gpu.ts";
import { readF32 } from "../kernels/core/buffers.ts";
import { correlatedInputs, gaussian, hessianOf } from "./reference/_reference_cases.ts";
import { createGpuQuantizer } from "./gpu_quantizer.ts";
import { createReferenceQuantizer } from "./reference/reference_quantizer.ts";
import { QUANTIZE_DEFAULTS, type QuantizeOptions, type QuantMethod } from "./types.ts";

Deno.test("createGpuQuantizer() gives the reference's codes for every method", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rows = 48;
  const cols = 160;
  const W = Float32Array.from(gaussian(rows * cols, 7), (v) => 0.05 * v);
  const H = Float32Array.from(hessianOf(correlatedInputs(cols, 512, 3), cols));
  for (let j = 0; j < cols; j++) H[5 * cols + j] = H[j * cols + 5] = 0; // a dead input channel
  const gpuQuantizer = createGpuQuantizer(gpu, { onRetry: () => {} });
  const refQuantizer = createReferenceQuantizer(null, { onRetry: () => {} });
  const cases: [QuantMethod, 2 | 3 | 4, number][] = [
    ["rtn", 4, 0],
    ["gptq", 3, 0],
    ["gptq", 3, 32],
    ["leanquant-nu", 3, 0],
    ["leanquant-nu", 2, 0],
    ["leanquant-aff", 3, 0],
    ["leanquant-aff", 4, 32],
  ];
  for (const [method, bits, groupSize] of cases) {
    await t.step(`${method} ${bits}-bit group ${groupSize}`, async () => {
      const opts: QuantizeOptions = { ...QUANTIZE_DEFAULTS, method, bits, groupSize, affT: 256 };
      const ref = await refQuantizer({ W, H, rows, cols }, opts);
      const got = await gpuQuantizer({ W, H, rows, cols }, opts);
      let same = 0;
      for (let i = 0; i < rows * cols; i++) same += got.codes[i] === ref.codes[i] ? 1 : 0;
      const fraction = same / (rows * cols);
      console.log(`  ${method} ${bits}-bit g${groupSize}: ${(100 * fraction).toFixed(2)} % identical codes`);
      assert.ok(fraction >= 0.99, `identical codes ${fraction}`);
      assert.ok(Math.abs(got.loss / ref.loss - 1) < 1e-2, `loss ${got.loss} vs reference ${ref.loss}`);
      assert.ok(Math.abs(got.dampUsed / ref.dampUsed - 1) < 1e-5, "damping");
      if (method === "leanquant-nu") {
        const diff = got.lut!.reduce((m, v, i) => Math.max(m, Math.abs(v - ref.lut![i])), 0);
        assert.ok(diff < 1e-3, `LUT max |diff| ${diff}`);
      }
      const Q = got.Q instanceof GPUBuffer ? await readF32(gpu, got.Q, rows * cols) : got.Q;
      // Dead columns quantize exactly to 0 on the include-zero affine grids (nu: the LUT entry nearest 0).
      const deadOk = (v: number) => method === "leanquant-nu" || v === 0;
      assert.ok(
        Q.every((v, i) => Number.isFinite(v) && (i % cols !== 5 || deadOk(v))),
        "Q finite, dead column 0",
      );
      if (got.Q instanceof GPUBuffer) got.Q.destroy();
    });
  }
  gpu.device.destroy();
});
