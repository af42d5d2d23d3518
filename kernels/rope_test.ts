import assert from "node:assert/strict";
import { createRope } from "./rope.ts";
import { ropeFreqRef, ropeRef } from "./reference.ts";
import { checkPipelines } from "./gpu.ts";
import { readF32, runPass, uploadStorage } from "./buffers.ts";
import { randomF32, testGpu } from "../tests/_gpu.ts";
import { assertNmse, maxAbsDiff } from "../tests/_assert.ts";

/** transformers' default inv_freq, formed in f32: 1 / θ^(2i/headDim). */
function invFreqF32(headDim: number, theta: number): Float32Array {
  const f = Math.fround;
  return Float32Array.from({ length: headDim / 2 }, (_, i) => f(1 / f(f(theta) ** f((2 * i) / headDim))));
}

interface Case {
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  pos: number;
  theta: number;
  fused: boolean;
}

const CASES: Case[] = [
  { rows: 1, nHeads: 1, nKvHeads: 1, headDim: 2, pos: 0, theta: 10000, fused: true },
  { rows: 7, nHeads: 7, nKvHeads: 1, headDim: 126, pos: 5, theta: 10000, fused: true },
  { rows: 63, nHeads: 2, nKvHeads: 1, headDim: 130, pos: 0, theta: 10000, fused: false },
  { rows: 65, nHeads: 1, nKvHeads: 1, headDim: 64, pos: 1, theta: 10000, fused: true },
  { rows: 7, nHeads: 8, nKvHeads: 4, headDim: 8, pos: 0, theta: 10000, fused: true }, // stories260K
  { rows: 64, nHeads: 8, nKvHeads: 4, headDim: 64, pos: 300, theta: 10000, fused: true }, // lq-49m
  { rows: 1, nHeads: 8, nKvHeads: 4, headDim: 64, pos: 2000, theta: 10000, fused: false },
  { rows: 5, nHeads: 32, nKvHeads: 8, headDim: 128, pos: 1998, theta: 500000, fused: true }, // Llama-3-8B-like
  { rows: 2, nHeads: 2, nKvHeads: 1, headDim: 128, pos: 131070, theta: 500000, fused: true }, // 128k context
];

Deno.test("rope() matches the f32-angle f64 reference for q and k", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createRope(gpu);
  await checkPipelines(gpu);
  for (const c of CASES) {
    const { rows, nHeads, nKvHeads, headDim, pos, theta, fused } = c;
    await t.step(JSON.stringify(c), async () => {
      const q = randomF32(rows * nHeads * headDim, rows * 7 + headDim);
      const k = randomF32(rows * nKvHeads * headDim, rows * 11 + headDim);
      const invFreq = invFreqF32(headDim, theta);
      const qBuf = uploadStorage(gpu, q, "q");
      const kBuf = uploadStorage(gpu, k, "k");
      const common = {
        invFreq: uploadStorage(gpu, invFreq, "invFreq"),
        state: uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state"),
        rows,
        headDim,
      };
      const steps = fused ? [kernel.bind({ ...common, x: qBuf, nHeads, k: kBuf, nKvHeads })] : [
        kernel.bind({ ...common, x: qBuf, nHeads }),
        kernel.bind({ ...common, x: kBuf, nHeads: nKvHeads }),
      ];
      runPass(gpu, (pass) => steps.forEach((s) => s.encode(pass)));
      for (const [name, buf, src, heads] of [["q", qBuf, q, nHeads], ["k", kBuf, k, nKvHeads]] as const) {
        const got = await readF32(gpu, buf, src.length);
        const want = ropeFreqRef(src, invFreq, { rows, nHeads: heads, headDim, pos0: pos });
        assertNmse(got, want, 1e-12, name);
        const err = maxAbsDiff(got, want);
        assert.ok(err <= 1e-6, `${name}: max |diff| ${err} > 1e-6`);
      }
    });
  }
  gpu.device.destroy();
});

Deno.test("rope() agrees with the exact-angle reference within the f32 angle rounding", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createRope(gpu);
  await checkPipelines(gpu);
  const [rows, nHeads, headDim, pos, theta] = [60, 4, 64, 5, 10000];
  const x = randomF32(rows * nHeads * headDim, 99);
  const buf = uploadStorage(gpu, x, "x");
  const bound = kernel.bind({
    x: buf,
    invFreq: uploadStorage(gpu, invFreqF32(headDim, theta), "invFreq"),
    state: uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state"),
    rows,
    nHeads,
    headDim,
  });
  runPass(gpu, (pass) => bound.encode(pass));
  const got = await readF32(gpu, buf, x.length);
  // Angles ≤ 65 rad carry ≤ ~1e-5 rad of f32 rounding (product and invFreq), so |diff| ≤ ~2e-5.
  const err = maxAbsDiff(got, ropeRef(x, rows, nHeads, headDim, pos, theta));
  assert.ok(err <= 2e-5, `max |diff| ${err} > 2e-5`);
  assert.throws(() => kernel.bind({ x: buf, invFreq: buf, state: buf, rows, nHeads, headDim: 7 }), /odd/);
  gpu.device.destroy();
});
