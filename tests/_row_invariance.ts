/**
 * The batch-invariance check of the batched decode kernels (test helper): every row of a `rows`-row call must
 * get, bit for bit, what it gets alone, in another split of the rows, and under another build (all but the K
 * split), since the engine's batched greedy decode must equal one-at-a-time decode.
 */
import assert from "node:assert/strict";
import {
  checkPipelines,
  createStorage,
  type Encodable,
  type Gpu,
  readF32,
  runPass,
} from "../kernels/core/mod.ts";

/**
 * @param bind binds rows [r0, r0 + n) of the case's x into `y` (n, outDim), with an optional build override
 * @param other the build override for the last comparison
 */
export async function assertRowInvariance<T>(
  gpu: Gpu,
  rows: number,
  outDim: number,
  bind: (y: GPUBuffer, r0: number, n: number, tune?: T) => Encodable,
  other: T,
): Promise<void> {
  const run = async (r0: number, n: number, tune?: T) => {
    const y = createStorage(gpu, n * outDim * 4, "y");
    const bound = bind(y, r0, n, tune);
    await checkPipelines(gpu);
    runPass(gpu, (pass) => bound.encode(pass));
    const out = await readF32(gpu, y, n * outDim);
    y.destroy();
    return out;
  };
  const all = await run(0, rows);
  const same = (got: Float32Array, r0: number, what: string) =>
    assert.deepEqual(got, all.slice(r0 * outDim, r0 * outDim + got.length), what);
  for (const r of [0, rows >> 1, rows - 1]) same(await run(r, 1), r, `row ${r} alone`);
  same(await run(3, rows - 7), 3, `rows 3..${rows - 5}`);
  same(await run(0, rows, other), 0, "another build");
}
