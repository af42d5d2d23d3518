import assert from "node:assert/strict";
import { createFillRandom } from "./fill_random.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, f16BitsToF32, readU32, runPass } from "../core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";

Deno.test("fillRandom() writes seeded values in [-scale, scale) with mean ≈ 0", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const f16 of [false, true]) {
    await t.step(f16 ? "f16 pairs" : "f32", async () => {
      const kernel = createFillRandom(gpu, { f16 });
      await checkPipelines(gpu);
      const count = 10_000;
      const words = f16 ? count / 2 : count;
      const read = async (seed: number) => {
        const out = createStorage(gpu, words * 4, "out");
        const bound = kernel.bind({ out, count, seed, scale: 0.5 });
        runPass(gpu, (pass) => bound.encode(pass));
        const raw = await readU32(gpu, out, words);
        if (!f16) return Array.from(new Float32Array(raw.buffer));
        return Array.from(new Uint16Array(raw.buffer), f16BitsToF32);
      };
      const a = await read(1);
      const b = await read(1);
      const c = await read(2);
      assert.deepEqual(a, b, "same seed, same values");
      assert.notDeepEqual(a, c, "another seed, other values");
      assert.ok(a.every((v) => v >= -0.5 && v <= 0.5), "range");
      const mean = a.reduce((s, v) => s + v, 0) / count;
      const variance = a.reduce((s, v) => s + v * v, 0) / count;
      assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
      assert.ok(Math.abs(variance - 0.25 / 3) < 0.01, `variance ${variance} vs uniform 1/12`);
    });
  }
  gpu.device.destroy();
});
