import assert from "node:assert/strict";
import { createExactQuantizer, exactOptions } from "./exact_quantizer.ts";
import { exactReference } from "./reference/reference_exact.ts";
import { correlatedInputs, gaussian, hessianOf } from "./reference/_reference_cases.ts";
import { QUANTIZE_DEFAULTS, type QuantizeOptions } from "./types.ts";
import { uploadStorage } from "../kernels/core/buffers.ts";
import { testGpu } from "../tests/_gpu.ts";

const rows = 8, cols = 24;
const W = Float32Array.from(gaussian(rows * cols, 6));
const H = Float32Array.from(hessianOf(correlatedInputs(cols, 100, 8), cols));

function opts(method: QuantizeOptions["method"], extra: Partial<QuantizeOptions> = {}): QuantizeOptions {
  return { ...QUANTIZE_DEFAULTS, method, bits: 3, affT: 64, ...extra };
}

Deno.test("createExactQuantizer() returns exactReference's result in f32 in the LUT or affine file shape", async (t) => {
  const quantize = createExactQuantizer(null);
  for (const method of ["leanquant-nu", "leanquant-aff"] as const) {
    await t.step(method, async () => {
      const o = opts(method, { percdamp: 0.1 });
      const got = await quantize({ W, H, rows, cols }, o);
      const want = exactReference(W, H, exactOptions(o));
      assert.equal(got.method, method);
      assert.equal(got.bits, 3);
      assert.deepEqual(got.codes, want.codes);
      assert.deepEqual(got.Q, Float32Array.from(want.Q));
      assert.equal(got.loss, want.loss);
      assert.equal(got.dampUsed, want.dampUsed);
      if (method === "leanquant-nu") {
        assert.equal(got.lut?.length, rows * 8);
        // f16-representable LUT entries survive the f32 copy bit for bit.
        assert.deepEqual(got.lut, Float32Array.from(want.lut!));
        assert.equal(got.scale, undefined);
      } else {
        assert.equal(got.scale?.length, rows);
        assert.equal(got.zero?.length, rows);
        assert.deepEqual(got.gIdx, new Int32Array(cols));
        assert.equal(got.lut, undefined);
      }
    });
  }
});

Deno.test("exactOptions() maps the knobs and rejects what the exact variant cannot do", () => {
  const o = exactOptions(opts("leanquant-aff", { affSteps: 7, percdamp: 0.1, exponent: 3 }));
  assert.deepEqual(o, { bits: 3, grid: "aff", percdamp: 0.1, exponent: 3, affT: 64, affSteps: 7 });
  assert.throws(() => exactOptions(opts("gptq")), /"gptq" with the exact quantizer/);
  assert.throws(() => exactOptions(opts("leanquant-aff", { groupSize: 8 })), /groupSize 8/);
  assert.equal(exactOptions(opts("leanquant-nu", { groupSize: 8 })).grid, "nu");
});

Deno.test("createExactQuantizer() reads a GPU Hessian back and rejects bad shapes", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const o = opts("leanquant-nu");
  const fromGpu = await createExactQuantizer(gpu)({ W, H: uploadStorage(gpu, H, "H"), rows, cols }, o);
  const fromHost = await createExactQuantizer(null)({ W, H, rows, cols }, o);
  assert.deepEqual(fromGpu.codes, fromHost.codes);
  assert.deepEqual(fromGpu.Q, fromHost.Q);
  await assert.rejects(
    createExactQuantizer(null)({ W, H: uploadStorage(gpu, H, "H"), rows, cols }, o),
    /without a GPU/,
  );
  await assert.rejects(createExactQuantizer(null)({ W, H, rows: 7, cols }, o), /W has 192 values/);
  gpu.device.destroy();
});
