/**
 * `deno run -A bench/quant_precision.ts --model <dir> --calib <file> [--nsamples 32] [--seqlen 128]
 *  [--layers n] [--dump <file.json>]`
 *
 * Checks the precision choices of the quantizer on a real model (issue 12; docs/quantization.md §1.1, §2.1,
 * §2.2, pitfall 4) with the full-precision layers (no quantization in between):
 *  - Hessian: the GPU's f32 accumulation (quant/hessian.ts) against an f64 host sum of the same captured
 *    inputs: relative Frobenius error and the largest |ΔH_ij| / sqrt(H_ii·H_jj);
 *  - k-means: the GPU kernel (kernels/quant/kmeans.ts) against the f64 reference (quant/reference) on every
 *    row with the f64 importance of the damped, act-ordered H: the weighted objective Σ a·(w − q)² of both
 *    LUTs (after f16 rounding) and how many rows end with an empty cluster;
 *  - `--dump` writes rows, importances and both LUTs to JSON, for an outside check (e.g. scikit-learn).
 */
import { parseArgs } from "node:util";
import {
  createStorage,
  type Gpu,
  readBuffer,
  readF32,
  readMatrix,
  requestGpu,
  uploadStorage,
} from "../kernels/core/mod.ts";
import { openLlamaWeights, uploadHostLayer } from "../inference/model/mod.ts";
import { loadTokenizer } from "../inference/text/mod.ts";
import { loadCalibration } from "../inference/quantize/mod.ts";
import { createLayerRunner } from "../inference/quantize/layer_runner.ts";
import { embedWindows } from "../inference/quantize/quantize_passes.ts";
import { loadModelConfig } from "../inference/model/mod.ts";
import { createHessian } from "../quant/mod.ts";
import { fitLut } from "../quant/grid.ts";
import { argsortDesc, dampAndFactor, permuteSymmetric } from "../quant/reference/reference_linalg.ts";
import { nearestCode, roundToF16, weightedKMeans } from "../quant/reference/reference_grid.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    calib: { type: "string" },
    nsamples: { type: "string", default: "32" },
    seqlen: { type: "string", default: "128" },
    layers: { type: "string" },
    dump: { type: "string" },
  },
});
if (!values.model || !values.calib) throw new Error("Missing --model or --calib");
const config = await loadModelConfig(values.model);
const tokenizer = await loadTokenizer(values.model);
const rows = Number(values.seqlen);
const calib = await loadCalibration(tokenizer, values.calib, {
  nsamples: Number(values.nsamples),
  seqLen: rows,
});
const gpu = await requestGpu();
const source = await openLlamaWeights(values.model, config);
const runner = createLayerRunner(gpu, config, { rows, storage: "f32" });
const hidden: GPUBuffer[] = [];
await embedWindows(gpu, runner, {
  table: (await source.loadTokenEmbedding()).data,
  dim: config.dim,
  scale: config.embedScale,
  windows: calib.windows,
  onStored: (h) => {
    // This measurement keeps every window on the GPU; past the budget embedWindows hands back host copies.
    if (h instanceof Uint8Array) {
      throw new Error("Cannot hold the windows on the GPU: lower --nsamples or --seqlen");
    }
    hidden.push(h);
  },
});
const dump: Record<string, unknown>[] = [];
const nLayers = values.layers ? Number(values.layers) : config.nLayers;
const GROUPS = [["qkv", "wq"], ["o", "wo"], ["gateUp", "wGate"], ["down", "wDown"]] as const;
for (let l = 0; l < nLayers; l++) {
  const host = await source.loadLayer(l);
  const layer = uploadHostLayer(gpu, host, l);
  for (const [stage, field] of GROUPS) {
    const bound = runner.bind(layer, stage);
    const cols = bound.captureCols;
    const h = createHessian(gpu, cols);
    const H64 = new Float64Array(cols * cols);
    for (const win of hidden) {
      bound.run(win);
      h.addBatch(bound.capture!, rows);
      const x = new Float32Array(await readBuffer(gpu, bound.capture!, rows * cols * 4));
      for (let t = 0; t < rows; t++) {
        for (let i = 0; i < cols; i++) {
          const xi = x[t * cols + i];
          for (let j = 0; j < cols; j++) H64[i * cols + j] += xi * x[t * cols + j];
        }
      }
    }
    h.finalize();
    const Hg = await readMatrix(gpu, h.H);
    h.destroy();
    const n = hidden.length * rows;
    for (let i = 0; i < H64.length; i++) H64[i] *= 2 / n;
    const W = host[field];
    const name = `layer ${l} ${field} (${W.shape[0]}×${cols})`;
    console.log(`${name}: H f32 vs f64 ${hessianError(Hg, H64, cols)}`);
    for (const bits of [2, 3, 4]) {
      const r = await compareKMeans(gpu, W.data, W.shape[0], cols, H64, bits);
      console.log(`  ${bits}-bit k-means: ${r.line}`);
      if (values.dump && bits < 4) dump.push({ layer: l, field, bits, ...r.dump });
    }
  }
  for (const stage of ["gateUp", "out"] as const) {
    for (const win of hidden) runner.bind(layer, stage).run(win);
  }
}
if (values.dump) await Deno.writeTextFile(values.dump, JSON.stringify(dump));
gpu.device.destroy();

function hessianError(Hg: Float32Array, H: Float64Array, n: number): string {
  let num = 0, den = 0, worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const d = Hg[i * n + j] - H[i * n + j];
      num += d * d;
      den += H[i * n + j] ** 2;
      const s = Math.sqrt(H[i * n + i] * H[j * n + j]);
      if (s > 0) worst = Math.max(worst, Math.abs(d) / s);
    }
  }
  return `rel. Frobenius ${Math.sqrt(num / den).toExponential(2)}, max |ΔH|/sqrt(HiiHjj) ${
    worst.toExponential(2)
  }`;
}

/** GPU k-means vs the f64 reference on every row of W (act-order, damped f64 importance). */
async function compareKMeans(gpu: Gpu, W: Float32Array, R: number, C: number, H: Float64Array, bits: number) {
  const perm = argsortDesc(Array.from({ length: C }, (_, i) => H[i * C + i]));
  const dead = Array.from({ length: C }, (_, i) => H[i * C + i] === 0);
  const Hp = permuteSymmetric(H.map((v, k) => dead[Math.floor(k / C)] && k % (C + 1) === 0 ? 1 : v), perm);
  const U = dampAndFactor(Hp, C, { percdamp: 0.01, onRetry: () => {} }).Hinv;
  let uMin = Infinity;
  for (let k = 0; k < C; k++) uMin = Math.min(uMin, U[k * C + k]);
  const a = Float64Array.from({ length: C }, (_, k) => (uMin / U[k * C + k]) ** 4);
  const Wp = new Float32Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < C; k++) Wp[r * C + k] = dead[perm[k]] ? 0 : W[r * C + perm[k]];
  }
  const K = 2 ** bits;
  const wBuf = uploadStorage(gpu, Wp, "W");
  const aBuf = uploadStorage(gpu, Float32Array.from(a), "a");
  const lutBuf = createStorage(gpu, R * K * 4, "lut");
  fitLut(gpu, { W: wBuf, rows: R, cols: C, importance: aBuf, bits, lut: lutBuf });
  const gpuLut = await readF32(gpu, lutBuf, R * K);
  [wBuf, aBuf, lutBuf].forEach((b) => b.destroy());
  let errGpu = 0, errRef = 0, empty = 0, differ = 0;
  const refLuts: number[][] = [];
  for (let r = 0; r < R; r++) {
    const x = Wp.subarray(r * C, (r + 1) * C);
    const ref = Array.from(weightedKMeans(x, a, { k: K }).centers, roundToF16);
    refLuts.push(ref);
    const g = gpuLut.subarray(r * K, (r + 1) * K);
    if (g.some((v, j) => v !== ref[j])) differ++;
    const used = new Uint8Array(K);
    for (let c = 0; c < C; c++) {
      errGpu += a[c] * (x[c] - g[nearestCode(g, x[c])]) ** 2;
      const j = nearestCode(ref, x[c]);
      used[j] = 1;
      errRef += a[c] * (x[c] - ref[j]) ** 2;
    }
    if (used.includes(0)) empty++;
  }
  return {
    line: `Σa(w−q)² GPU/f64 ${(errGpu / errRef).toFixed(6)}, rows whose LUT differs ${differ}/${R}, ` +
      `rows with an unused centre ${empty}/${R}`,
    dump: {
      rows: R,
      cols: C,
      W: Array.from(Wp),
      a: Array.from(a),
      gpu: Array.from(gpuLut),
      ref: refLuts.flat(),
    },
  };
}
