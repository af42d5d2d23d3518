/**
 * `deno run -A bench/factor_split.ts [--cols 16384] [--tokens 4096] [--reps 2]`
 *
 * Times the Hessian factorisation (quant/cholesky.ts `factorHessian`: Cholesky, triangular inverse, the two
 * gathers) on a C×C Hessian of random activations, held in one buffer and in two (kernels/core/matrix_parts.ts,
 * forced by lowering the binding limit of the same device so the split falls near the middle), and checks
 * that both give the same U bit for bit. At C > 23170 (e.g. 28672, Llama-3-70B's down_proj) only the
 * two-buffer run exists. Random activations: the timing is real, the matrix is not a model's.
 */
import { parseArgs } from "node:util";
import {
  describeGpu,
  destroyMatrix,
  type Gpu,
  readMatrix,
  requestGpu,
  rowsPerPartFor,
  uploadStorage,
} from "../kernels/core/mod.ts";
import { createHessian } from "../quant/mod.ts";
import { factorHessian } from "../quant/cholesky.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cols: { type: "string", default: "16384" },
    tokens: { type: "string", default: "4096" },
    reps: { type: "string", default: "2" },
  },
});
const cols = Number(values.cols);
const tokens = Number(values.tokens);
const reps = Number(values.reps);
const gpu = await requestGpu();
console.log(`adapter: ${describeGpu(gpu)}`);

let seed = 11;
const x = new Float32Array(tokens * cols);
for (let i = 0; i < x.length; i++) {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  x[i] = seed / 2 ** 31 - 1;
}
const xBuf = uploadStorage(gpu, x, "x");
const hessian = createHessian(gpu, cols);
hessian.addBatch(xBuf, tokens);
hessian.finalize();
xBuf.destroy();

/** Best-of-`reps` seconds of factorHessian on `g`, and U of the last run (read back when `keep`). */
async function time(g: Gpu, keep: boolean) {
  let best = Infinity;
  let U: Float32Array | null = null;
  let parts = 0;
  for (let r = 0; r < reps; r++) {
    await gpu.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    const f = await factorHessian(g, hessian.H, cols, { onRetry: console.warn });
    await gpu.device.queue.onSubmittedWorkDone();
    best = Math.min(best, (performance.now() - t0) / 1000);
    parts = f.U.parts.length;
    if (keep && r === reps - 1) U = await readMatrix(gpu, f.U);
    destroyMatrix(f.U);
  }
  return { seconds: best, parts, U };
}

const fitsOne = cols * cols * 4 <= gpu.maxBindingBytes;
// Lower the limit so the split falls near the middle (rows per part a multiple of 128 where possible).
const half = Math.ceil(cols / 2 / 128) * 128;
const small: Gpu = fitsOne ? { ...gpu, maxBindingBytes: half * cols * 4 } : gpu;
const one = fitsOne ? await time(gpu, true) : null;
const two = await time(small, fitsOne);
let identical: boolean | null = null;
if (one?.U && two.U) identical = one.U.every((v, i) => Object.is(v, two.U![i]));
const summary = {
  date: new Date().toISOString().slice(0, 10),
  adapter: describeGpu(gpu),
  cols,
  tokens,
  bytesPerMatrix: cols * cols * 4,
  factorPeakBytes: 3 * cols * cols * 4, // H, A (becomes U) and X
  rowsPerPart: rowsPerPartFor(small, cols, cols),
  oneBufferSeconds: one?.seconds ?? null,
  twoBufferSeconds: two.seconds,
  twoBufferParts: two.parts,
  identicalU: identical,
};
console.log(JSON.stringify(summary, null, 2));
hessian.destroy();
gpu.device.destroy();
