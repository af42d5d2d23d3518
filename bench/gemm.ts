/**
 * `deno task bench:gemm [--rows 512] [--formats dense,affine4,lut4] [--variants f32,f16,f16k32,...]
 * [--rounds 1] [--lm-head]`:
 * prefill GEMM speed (TFLOP/s) at Llama-3-8B shapes for each weight format and GEMM variant (arithmetic
 * and tiles), timed with timestamp-query over passes of several dispatches. Weights are random; one format
 * per process gives the steadiest figures (see bench/kernels.ts). Affine and LUT weights also take the
 * decode variants `q8` (their int8 GEMV, ≤ 2 rows, as an unpinned call with q8 activations runs it, for LUT
 * weights with `LutTune.q8Gemv`; LUT also `q8c` with chunk tables, `q8s` with byte-shifted ones; then optional r<rows per workgroup>
 * u<unroll>, e.g. q8r8u4) and `gemv` (the f32 GEMV an unpinned call with f32 activations runs: for LUT
 * weights at one row the x-stationary or row-per-lane build, as the planner picks); affine weights `mm`
 * (the batched q8 path the engine decodes with), dense f16 and LUT weights `mm` (their batched decode
 * paths), LUT weights also `mq` (the int8 batched LUT path as the engine runs it: chunk tables where they
 * fit), `mqc` (chunk tables always) and `mqs` (byte-shifted tables), each with build overrides
 * [n<outputs per lane>][u<unroll>][w<workgroup>][k<K split>][r<rows per dispatch>][l<rows per lane>], then p
 * (pp) for the int8 builds that load the next piece's codes (and activation rows) ahead, e.g. mmn4u1, mmp,
 * mqpp. One matrix is timed over and over, so at few rows it may sit in the 50 MB L2: compare variants with
 * each other, and decode speed with `deno task bench:serve`. `--lm-head` adds the f16 LM head (128256×4096),
 * reported apart from the layer's total.
 */
import { parseArgs } from "node:util";
import {
  checkPipelines,
  createStorage,
  describeGpu,
  type Encodable,
  requestGpu,
} from "../kernels/core/mod.ts";
import { createMatmul, createMatmulAffine, createMatmulLut } from "../kernels/matmul/mod.ts";
import { type GpuLinear, linearBuffers } from "../inference/model/mod.ts";
import { parseFormat, presetConfig, randomWeights } from "./random_model.ts";
import { timePass } from "./gpu_timer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rows: { type: "string", default: "512" },
    formats: { type: "string", default: "dense,affine4,lut4" },
    variants: { type: "string", default: "f32,f16,f16k32" },
    reps: { type: "string", default: "10" },
    rounds: { type: "string", default: "1" },
    "lm-head": { type: "boolean", default: false },
  },
});
const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot time kernels: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}`);
const REPS = Number(values.reps);

/**
 * A variant names its whole build, so defaults never blur a comparison: f32|f16, then optional k<TK>
 * (default 16), m<TM>, n<TN>, p (pipelined; plain otherwise), e.g. f16k32p.
 */
function parseVariant(v: string) {
  const m = /^(f32|f16)(?:k(\d+))?(?:m(\d+))?(?:n(\d+))?(p?)$/.exec(v);
  if (!m) throw new Error(`Invalid variant "${v}": expected f32|f16, then k<TK>, m<TM>, n<TN>, p`);
  const tune = {
    tk: Number(m[2] ?? 16),
    ...(m[3] ? { tm: Number(m[3]) } : {}),
    ...(m[4] ? { tn: Number(m[4]) } : {}),
    pipelined: m[5] === "p",
  };
  return { math: m[1] as "f32" | "f16", tune };
}

const rowsList = values.rows.split(",").map(Number);
const maxRows = Math.max(...rowsList);
const x = createStorage(gpu, maxRows * 14336 * 4, "x");
const y = createStorage(gpu, maxRows * (values["lm-head"] ? 128256 : 14336) * 4, "y");

/** The GEMV variants (`q8…`, `gemv`; see the header), or null for another variant. */
function gemvVariant(l: GpuLinear, rows: number, variant: string): Encodable | null {
  const m = /^(?:(gemv)|q8([cs])?(?:r(\d+))?(?:u(\d+))?)$/.exec(variant);
  if (!m) return null;
  if (l.format === "dense") throw new Error(`Variant "${variant}" is for affine and LUT weights`);
  const activations = m[1] ? "f32" as const : "q8" as const;
  const tune = { ...(m[3] ? { rb: Number(m[3]) } : {}), ...(m[4] ? { unroll: Number(m[4]) } : {}) };
  if (l.format === "affine") {
    if (m[2]) throw new Error(`Variant "${variant}": chunk or byte-shifted tables are for LUT weights`);
    return createMatmulAffine(gpu, { accumulate: false, activations, tune }).bind({
      x,
      w: l.weights,
      y,
      rows,
    });
  }
  const tables = m[2] ? { q8Chunks: m[2] === "c" } : {};
  const lutTune = { ...tune, ...tables, q8Gemv: activations === "q8" };
  return createMatmulLut(gpu, { accumulate: false, activations, tune: lutTune })
    .bind({ x, w: l.weights, y, rows });
}

/** The batched decode variants of affine, LUT and dense weights (see the header), or null for a GEMM variant. */
function decodeVariant(l: GpuLinear, rows: number, variant: string): Encodable | null {
  const gemv = gemvVariant(l, rows, variant);
  if (gemv) return gemv;
  const m = /^(mm|mqc|mqs|mq)(?:n(\d+))?(?:u(\d+))?(?:w(\d+))?(?:k(\d+))?(?:r(\d+))?(?:l(\d+))?(pp?)?$/.exec(
    variant,
  );
  if (!m) return null;
  const keys = ["no", "unroll", "wg", "ks", "rows", "rl"] as const;
  const mm = Object.fromEntries(keys.flatMap((k, i) => m[i + 2] ? [[k, Number(m[i + 2])]] : []));
  const prefetch = m[8] === "p" ? "codes" as const : m[8] === "pp" ? "all" as const : undefined;
  if (m[8] && m[1] === "mm" && l.format !== "affine") {
    throw new Error(`Variant "${variant}": the prefetch builds are the int8 ones (affine mm…p, LUT mq…p)`);
  }

  if (m[1] !== "mm" && l.format !== "lut") throw new Error(`Variant "${variant}" is for LUT weights only`);
  if (l.format === "dense") {
    const { buffer } = l.panels[0];
    return createMatmul(gpu, { weightType: l.weightType, accumulate: false, path: "gemv", tune: { mm } })
      .bind({ x, w: buffer, y, rows, inDim: l.inDim, outDim: l.outDim });
  }
  if (l.format === "lut") {
    const activations = m[1] === "mm" ? "f32" as const : "q8" as const;
    const tune = {
      mm,
      ...(prefetch ? { q8Prefetch: prefetch } : {}),
      ...(m[1] === "mq" ? {} : { q8Chunks: m[1] === "mqc" }),
    };
    return createMatmulLut(gpu, { accumulate: false, path: "gemv", activations, tune }).bind({
      x,
      w: l.weights,
      y,
      rows,
    });
  }
  return createMatmulAffine(gpu, {
    accumulate: false,
    path: "gemv",
    tune: { mm, ...(prefetch ? { q8Prefetch: prefetch } : {}) },
  })
    .bind({ x, w: l.weights, y, rows });
}

function bindVariant(l: GpuLinear, rows: number, variant: string): Encodable {
  const decode = decodeVariant(l, rows, variant);
  if (decode) return decode;
  const { math, tune } = parseVariant(variant);
  if (l.format === "dense") {
    const p = l.panels[0];
    return createMatmul(gpu, {
      weightType: l.weightType,
      accumulate: false,
      path: "gemm",
      gemmMath: math,
      tune,
    })
      .bind({ x, w: p.buffer, y, rows, inDim: l.inDim, outDim: l.outDim });
  }
  if (l.format === "affine") {
    return createMatmulAffine(gpu, { accumulate: false, path: "gemm", gemmMath: math, tune })
      .bind({ x, w: l.weights, y, rows });
  }
  return createMatmulLut(gpu, { accumulate: false, gemmMath: math, tune: { gemvMaxRows: 0, ...tune } })
    .bind({ x, w: l.weights, y, rows });
}

const c = presetConfig("llama3-8b");
for (const name of values.formats.split(",")) {
  const format = parseFormat(name);
  const m = await randomWeights(gpu, { ...c, nLayers: 1 }, "f16", format);
  m.tokenEmbedding.destroy();
  if (!values["lm-head"]) linearBuffers(m.lmHead).forEach((b) => b.destroy());
  const L = m.layers[0];
  const shapes: [string, GpuLinear][] = [
    ["4096×4096 (q/o)", L.wq],
    ["1024×4096 (k/v)", L.wk],
    ["14336×4096 (gate/up)", L.wUp],
    ["4096×14336 (down)", L.wDown],
    ...(values["lm-head"] ? [["128256×4096 (lm_head, f16)", m.lmHead] as [string, GpuLinear]] : []),
  ];
  const variants = values.variants.split(",");
  // Rounds go over all variants in turn and each figure is the best of its rounds. On the H100 timings
  // drifted upwards along a long variant list (also with rounds; not understood), so a variant compares
  // fairly only with its neighbours, or run one variant per process (bench/serve_suite.sh).
  for (const rows of rowsList) {
    const best = new Map<string, number>();
    const failed = new Map<string, string>();
    const bound = new Map<string, Encodable>();
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const variant of variants) {
        for (const [label, l] of shapes) {
          const key = `${variant}|${label}`;
          if (failed.has(key)) continue;
          if (!bound.has(key)) {
            try {
              bound.set(key, bindVariant(l, rows, variant));
              await checkPipelines(gpu);
            } catch (e) {
              failed.set(key, (e as Error).message.slice(0, 120));
              continue;
            }
          }
          const kernel = bound.get(key)!;
          const t = await timePass(gpu, (pass) => {
            for (let i = 0; i < REPS; i++) kernel.encode(pass);
          }) / REPS;
          best.set(key, Math.min(t, best.get(key) ?? Infinity));
        }
      }
    }
    for (const variant of variants) {
      let total = 0;
      let flops = 0;
      const parts: string[] = [];
      for (const [label, l] of shapes) {
        const key = `${variant}|${label}`;
        const t = best.get(key);
        if (t === undefined) {
          parts.push(`${label} failed: ${failed.get(key)}`);
          continue;
        }
        const f = 2 * rows * l.inDim * l.outDim;
        // A layer runs q/o twice, k/v twice and gate/up twice; the LM head is not a layer's.
        const times = label.includes("lm_head") ? 0 : label.includes("down") ? 1 : 2;
        total += times * t;
        flops += times * f;
        parts.push(`${label} ${(t * 1e3).toFixed(3)} ms ${(f / t / 1e12).toFixed(1)} TFLOP/s`);
      }
      console.log(
        `${name.padEnd(8)} rows ${rows} ${variant.padEnd(10)} layer linears ${(total * 1e3).toFixed(2)} ms ` +
          `(${(flops / total / 1e12).toFixed(1)} TFLOP/s) | ${parts.join(" | ")}`,
      );
    }
  }
  if (values["lm-head"]) linearBuffers(m.lmHead).forEach((b) => b.destroy());
  for (const l of [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]) {
    linearBuffers(l).forEach((b) => b.destroy());
  }
}
gpu.device.destroy();
