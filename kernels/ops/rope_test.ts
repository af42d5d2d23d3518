import assert from "node:assert/strict";
import { createRope } from "./rope.ts";
import { ropeFreqRef, ropeRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse, maxAbsDiff } from "../../tests/_assert.ts";

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

Deno.test("rope() with append writes rotated k and v into the caches at state.pos and nothing else", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createRope(gpu);
  const [rows, nHeads, nKvHeads, headDim, pos, seqLen] = [3, 4, 2, 8, 5, 7];
  const kvDim = nKvHeads * headDim;
  const q = randomF32(rows * nHeads * headDim, 1);
  const k = randomF32(rows * kvDim, 2);
  const v = randomF32(rows * kvDim, 3);
  const kc0 = randomF32(seqLen * kvDim, 4);
  const vc0 = randomF32(seqLen * kvDim, 5);
  const invFreq = invFreqF32(headDim, 10000);
  const [qBuf, kBuf, kCache, vCache] = [q, k, kc0, vc0].map((a, i) => uploadStorage(gpu, a, `b${i}`));
  const step = kernel.bind({
    x: qBuf,
    k: kBuf,
    invFreq: uploadStorage(gpu, invFreq, "invFreq"),
    state: uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state"),
    rows,
    nHeads,
    nKvHeads,
    headDim,
    append: { v: uploadStorage(gpu, v, "v"), kCache, vCache, seqLen },
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => step.encode(pass));
  const kRot = ropeFreqRef(k, invFreq, { rows, nHeads: nKvHeads, headDim, pos0: pos });
  assertNmse(
    await readF32(gpu, qBuf, q.length),
    ropeFreqRef(q, invFreq, { rows, nHeads, headDim, pos0: pos }),
    1e-12,
    "q",
  );
  const kc = await readF32(gpu, kCache, kc0.length);
  const vc = await readF32(gpu, vCache, vc0.length);
  for (let p = 0; p < seqLen; p++) {
    for (let e = 0; e < kvDim; e++) {
      const i = p * kvDim + e;
      const t = p - pos;
      // rows 0 and 1 land at positions 5 and 6; row 2 (position 7 = seqLen) is dropped
      if (t >= 0 && t < rows && p < seqLen) {
        assert.ok(Math.abs(kc[i] - kRot[t * kvDim + e]) <= 1e-6, `kCache[${p}, ${e}]`);
        assert.equal(vc[i], v[t * kvDim + e], `vCache[${p}, ${e}]`);
      } else {
        assert.equal(kc[i], kc0[i], `kCache[${p}, ${e}] must be untouched`);
        assert.equal(vc[i], vc0[i], `vCache[${p}, ${e}] must be untouched`);
      }
    }
  }
  gpu.device.destroy();
});
