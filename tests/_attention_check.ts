/**
 * The shared check of attention.ts and flash_attention.ts (test helper): one case's kernel output against the
 * f64 reference attentionRef, on a KV cache whose unfilled rows are NaN (so reading past the sequence fails).
 */
import assert from "node:assert/strict";
import type { AttentionArgs } from "../kernels/ops/attention.ts";
import { attentionRef } from "../kernels/core/reference.ts";
import { checkPipelines, type Gpu, type Kernel } from "../kernels/core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../kernels/core/buffers.ts";
import { randomF32 } from "./_gpu.ts";
import { assertNmse, maxAbsDiff } from "./_assert.ts";

/** One attention shape: `rows` query rows at positions pos.., over a cache of seqLen positions. */
export interface AttentionCase {
  name: string;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  seqLen: number;
  pos: number;
  splits?: number;
  window?: number;
  softcap?: number;
  scale?: number;
}

/** A (seqLen, kvDim) cache filled up to `filled` rows; later rows are NaN, which must never be read. */
function cache(seqLen: number, kvDim: number, filled: number, seed: number): Float32Array {
  const c = new Float32Array(seqLen * kvDim).fill(NaN);
  c.set(randomF32(filled * kvDim, seed));
  return c;
}

/** Runs `kernel` on case `c` and asserts NMSE ≤ 1e-11 and max |diff| ≤ 2e-6 against the f64 reference. */
export async function checkAttention(
  gpu: Gpu,
  kernel: Kernel<AttentionArgs>,
  c: AttentionCase,
): Promise<void> {
  const { rows, nHeads, nKvHeads, headDim, seqLen, pos } = c;
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  // Scaled so the softmax is far from uniform (scores with a spread of a few units).
  const q = randomF32(rows * qDim, rows + qDim, 3);
  const k = cache(seqLen, kvDim, pos + rows, seqLen + 1);
  const v = cache(seqLen, kvDim, pos + rows, seqLen + 2);
  const out = createStorage(gpu, rows * qDim * 4, "out");
  const bound = kernel.bind({
    q: uploadStorage(gpu, q, "q"),
    kCache: uploadStorage(gpu, k, "kCache"),
    vCache: uploadStorage(gpu, v, "vCache"),
    out,
    state: uploadStorage(gpu, new Uint32Array([pos, 0, 0, 0]), "state"),
    ...c,
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  const got = await readF32(gpu, out, rows * qDim);
  const want = attentionRef(q, k, v, {
    rows,
    nHeads,
    nKvHeads,
    headDim,
    pos0: pos,
    ...(c.window ? { window: c.window } : {}),
    ...(c.softcap ? { softcap: c.softcap } : {}),
    ...(c.scale ? { scale: c.scale } : {}),
  });
  assertNmse(got, want, 1e-11, c.name);
  const err = maxAbsDiff(got, want);
  assert.ok(err <= 2e-6, `${c.name}: max |diff| ${err} > 2e-6`);
}
