import { createSiluMul, type GateActivation } from "./silu_mul.ts";
import { geluTanhMulRef, siluMulRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertAllClose, assertNmse } from "../../tests/_assert.ts";

const REFERENCE: Record<GateActivation, typeof siluMulRef> = { silu: siluMulRef, gelu_tanh: geluTanhMulRef };

for (const activation of ["silu", "gelu_tanh"] as const) {
  Deno.test(`siluMul({ activation: "${activation}" }) matches the f64 reference, scalar and vec4 paths`, async (t) => {
    const gpu = await testGpu();
    if (!gpu) return;
    const kernel = createSiluMul(gpu, { activation });
    await checkPipelines(gpu);
    // n % 4 picks the path: 1, 7, 63, 65 and 4099 are scalar; 64, 5632 (stories-like rows·hiddenDim)
    // and 3·1408 are vec4.
    for (const n of [1, 7, 63, 64, 65, 4099, 5632, 3 * 1408]) {
      await t.step(`n = ${n}`, async () => {
        const gate = randomF32(n, n, 8);
        const up = randomF32(n, n + 1, 3);
        // Saturated gates: e^−g overflows f32 for g < −88, where silu must still be ~0, not NaN; GELU's
        // tanh must not overflow either.
        if (n >= 7) gate.set([-100, 100, -89, 89, 0, -1e-8], 1);
        const out = createStorage(gpu, n * 4, "out");
        const bound = kernel.bind({
          gate: uploadStorage(gpu, gate, "gate"),
          up: uploadStorage(gpu, up, "up"),
          out,
          n,
        });
        runPass(gpu, (pass) => bound.encode(pass));
        const got = await readF32(gpu, out, n);
        const want = REFERENCE[activation](gate, up);
        assertNmse(got, want, 1e-12, `n ${n}`);
        assertAllClose(got, want, { atol: 1e-6, rtol: 1e-5, what: `n ${n}` });
      });
    }
    gpu.device.destroy();
  });
}
