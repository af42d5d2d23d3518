import { createSoftcap } from "./softcap.ts";
import { softcapRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertAllClose } from "../../tests/_assert.ts";

Deno.test("softcap() matches c·tanh(x / c) in f64, including far past the cap", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createSoftcap(gpu);
  await checkPipelines(gpu);
  for (const [n, cap] of [[1, 30], [7, 30], [1000, 30], [513, 50]] as const) {
    await t.step(`n = ${n}, cap = ${cap}`, async () => {
      const x = randomF32(n, n + cap, 80);
      // Far past the cap: tanh's argument must not overflow, and the sign must survive.
      if (n >= 7) x.set([1e6, -1e6, 0, -1e-7, cap, -cap], 1);
      const buf = uploadStorage(gpu, x, "x");
      const bound = kernel.bind({ x: buf, n, cap });
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, buf, n);
      assertAllClose(got, softcapRef(x, cap), { atol: 5e-6 * cap, rtol: 1e-5, what: `n ${n}` });
    });
  }
  gpu.device.destroy();
});
