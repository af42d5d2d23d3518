import assert from "node:assert/strict";
import { createReferenceQuantizer, referenceOptions } from "./reference_quantizer.ts";
import { gptqReference } from "./reference.ts";
import { correlatedInputs, gaussian, hessianOf } from "./_reference_cases.ts";
import { QUANTIZE_DEFAULTS, type QuantizeOptions } from "../types.ts";
import { uploadStorage } from "../../kernels/core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";

const rows = 12, cols = 40;
const W = Float32Array.from(gaussian(rows * cols, 5));
const H = Float32Array.from(hessianOf(correlatedInputs(cols, 200, 9), cols));

function opts(method: QuantizeOptions["method"], extra: Partial<QuantizeOptions> = {}): QuantizeOptions {
  return { ...QUANTIZE_DEFAULTS, method, bits: 3, affT: 64, ...extra };
}

Deno.test("createReferenceQuantizer() returns the reference's result in f32, with the grid of each method", async (t) => {
  const quantize = createReferenceQuantizer(null);
  for (const method of ["rtn", "gptq", "leanquant-nu", "leanquant-aff"] as const) {
    await t.step(method, async () => {
      const o = opts(method, { groupSize: method === "gptq" ? 16 : 0 });
      const got = await quantize({ W, H, rows, cols }, o);
      const want = gptqReference(W, H, referenceOptions(o));
      assert.equal(got.method, method);
      assert.equal(got.bits, 3);
      assert.deepEqual(got.codes, want.codes);
      assert.deepEqual(got.Q, Float32Array.from(want.Q));
      assert.equal(got.loss, want.loss);
      assert.equal(got.dampUsed, want.dampUsed);
      if (method === "leanquant-nu") {
        assert.equal(got.lut?.length, rows * 8);
        assert.equal(got.scale, undefined);
      } else {
        const groups = method === "gptq" ? Math.ceil(cols / 16) : 1;
        assert.equal(got.scale?.length, rows * groups);
        assert.equal(got.zero?.length, rows * groups);
        assert.equal(got.gIdx?.length, cols);
        assert.equal(got.lut, undefined);
      }
    });
  }
});

Deno.test("referenceOptions() maps groupSize 0 to row-wise and keeps every knob", () => {
  const o = referenceOptions(opts("leanquant-aff", { affSteps: 7, percdamp: 0.1, actOrder: false }));
  assert.equal(o.grid, "aff");
  assert.equal(o.groupSize, -1);
  assert.equal(o.affSteps, 7);
  assert.equal(o.affT, 64);
  assert.equal(o.percdamp, 0.1);
  assert.equal(o.actOrder, false);
  assert.equal(o.exponent, 4);
  assert.equal(o.blockSize, 128);
});

Deno.test("createReferenceQuantizer() reads a GPU Hessian back and rejects bad shapes", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const o = opts("gptq");
  const fromGpu = await createReferenceQuantizer(gpu)({ W, H: uploadStorage(gpu, H, "H"), rows, cols }, o);
  const fromHost = await createReferenceQuantizer(null)({ W, H, rows, cols }, o);
  assert.deepEqual(fromGpu.codes, fromHost.codes);
  assert.deepEqual(fromGpu.Q, fromHost.Q);
  await assert.rejects(
    createReferenceQuantizer(null)({ W, H: uploadStorage(gpu, H, "H"), rows, cols }, o),
    /without a GPU/,
  );
  await assert.rejects(createReferenceQuantizer(null)({ W, H, rows: 11, cols }, o), /W has 480 values/);
  gpu.device.destroy();
});
