/**
 * `deno task bench:quantize [--shape llama3-8b|llama3-70b] [--layers 2] [--nsamples 128] [--seqlen 2048]
 *  [--method leanquant-aff] [--bits 4] [--group-size 128] [--storage auto|f16|f32] [--gpu-hidden-mib <n>|all]
 *  [--raw] [--json <file>]`
 *
 * Times the real true-sequential pipeline (quantize_model.ts with the GPU quantizer) on a stack of decoder
 * layers with random weights at a real shape and random calibration token ids, and projects the time of the
 * whole model as (mean time per layer) × nLayers. The embedding table is shrunk to 32000 rows (it only
 * provides layer 0's inputs and plays no part in the timing). Random weights: quality numbers are meaningless.
 *
 * Unless --raw, the pipeline runs with `profile`: it waits for the GPU after each capture (so the quantizer's
 * seconds are its own) and times every forward and Hessian pass with timestamp queries, giving seconds per
 * layer by phase, and TFLOP/s against the FLOPs the shape implies (counted below, for this pipeline and for
 * the previous one that re-ran the layer from its input at every stage).
 *
 * Also reported: the whole model's projected time at Llama-3-8B and Llama-3-70B shapes, scaled from the
 * measured layers by their work (forward and Hessian FLOPs for the capture and propagate phases, Σ rows·cols²
 * + cols³ over the linears for the quantizer phase; an estimate, not a measurement), and the whole-process
 * peak GPU memory from the driver
 * (`nvidia-smi`, sampled every 200 ms, where it exists) beside the pipeline's own tracked peak.
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import { HESSIAN_TILE } from "../kernels/quant/mod.ts";
import {
  type LayerWeights,
  type LlamaWeightSource,
  type ModelConfig,
  parseModelConfig,
} from "../inference/model/mod.ts";
import {
  type HiddenStorageChoice,
  LAYER_STAGES,
  type LayerPhases,
  type LayerStage,
  quantizeModel,
} from "../inference/quantize/mod.ts";
import { createGpuQuantizer, QUANTIZE_DEFAULTS, type QuantMethod } from "../quant/mod.ts";
import { PRESETS } from "./random_model.ts";

/**
 * Llama-3-70B's shape: for the projection, and runnable with `--shape llama3-70b` (its down_proj Hessian,
 * 28,672 columns, is held in two buffers: kernels/core/matrix_parts.ts).
 */
const LLAMA3_70B = {
  ...PRESETS["llama3-8b"],
  hidden_size: 8192,
  intermediate_size: 28672,
  num_hidden_layers: 80,
  num_attention_heads: 64,
};

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shape: { type: "string", default: "llama3-8b" },
    layers: { type: "string", default: "2" },
    nsamples: { type: "string", default: "128" },
    seqlen: { type: "string", default: "2048" },
    method: { type: "string", default: "leanquant-aff" },
    bits: { type: "string", default: "4" },
    "group-size": { type: "string", default: "128" },
    storage: { type: "string", default: "auto" },
    "gpu-hidden-mib": { type: "string" },
    raw: { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const layers = Number(values.layers);
const SHAPES: Record<string, Record<string, unknown>> = { ...PRESETS, "llama3-70b": LLAMA3_70B };
if (!SHAPES[values.shape]) {
  throw new Error(`Cannot bench shape "${values.shape}": known shapes are ${Object.keys(SHAPES).join(", ")}`);
}
const full = parseModelConfig(SHAPES[values.shape], null, values.shape);
const config = parseModelConfig(
  { ...SHAPES[values.shape], num_hidden_layers: layers, vocab_size: 32000 },
  null,
);
const driver = watchDriverMemory();
const gpu = await requestGpu();
console.log(`adapter: ${describeGpu(gpu)}`);

let seed = 7;
function random(n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    out[i] = scale * (seed / 2 ** 31 - 1);
  }
  return out;
}
const t = (data: Float32Array, shape: number[]) => ({ data, shape });
const c = config;
const q = c.nHeads * c.headDim;
function randomLayer(): LayerWeights {
  return {
    attnNorm: t(new Float32Array(c.dim).fill(1), [c.dim]),
    wq: t(random(q * c.dim, 0.02), [q, c.dim]),
    wk: t(random(c.kvDim * c.dim, 0.02), [c.kvDim, c.dim]),
    wv: t(random(c.kvDim * c.dim, 0.02), [c.kvDim, c.dim]),
    wo: t(random(c.dim * q, 0.02), [c.dim, q]),
    mlpNorm: t(new Float32Array(c.dim).fill(1), [c.dim]),
    wGate: t(random(c.hiddenDim * c.dim, 0.02), [c.hiddenDim, c.dim]),
    wUp: t(random(c.hiddenDim * c.dim, 0.02), [c.hiddenDim, c.dim]),
    wDown: t(random(c.dim * c.hiddenDim, 0.02), [c.dim, c.hiddenDim]),
  };
}
const unused = () => Promise.reject(new Error("not used by the pipeline"));
const source: LlamaWeightSource = {
  config,
  tensorCount: 0,
  loadTokenEmbedding: () => Promise.resolve(t(random(c.vocabSize * c.dim, 1), [c.vocabSize, c.dim])),
  // Like a checkpoint read, the layer is made in a later task, so it can overlap the previous layer's GPU work.
  loadLayer: () => new Promise((resolve) => setTimeout(() => resolve(randomLayer()), 0)),
  loadFinalNorm: unused,
  loadLmHead: unused,
  readTensorRaw: unused,
  loadAll: unused,
  close: () => {},
};
const seqLen = Number(values.seqlen);
const windows = Array.from(
  { length: Number(values.nsamples) },
  (_, w) => Uint32Array.from({ length: seqLen }, (_, i) => (w * 7919 + i * 104729) % c.vocabSize),
);
const quantize = {
  ...QUANTIZE_DEFAULTS,
  method: values.method as QuantMethod,
  bits: Number(values.bits) as 2 | 3 | 4,
  groupSize: values.method === "leanquant-nu" ? 0 : Number(values["group-size"]),
};
const layerTimes: number[] = [];
let last = performance.now();
const result = await quantizeModel(gpu, source, {
  quantize,
  quantizer: createGpuQuantizer(gpu),
  windows,
  hiddenStorage: values.storage as HiddenStorageChoice,
  ...(values["gpu-hidden-mib"] === undefined ? {} : {
    gpuHiddenBytes: values["gpu-hidden-mib"] === "all"
      ? Infinity
      : Number(values["gpu-hidden-mib"]) * 2 ** 20,
  }),
  profile: !values.raw,
  onLayer: (i) => {
    const now = performance.now();
    layerTimes.push((now - last) / 1000);
    last = now;
    console.log(`layer ${i + 1}/${layers}: ${layerTimes.at(-1)!.toFixed(1)} s`);
  },
});
// Layer 0's time includes embedding the windows; the projection uses the later layers where there are any.
const steadyFrom = layerTimes.length > 1 ? 1 : 0;
const mean = (xs: number[]) => xs.slice(steadyFrom).reduce((s, v) => s + v, 0) / (xs.length - steadyFrom);
const perLayer = mean(layerTimes);
const byLinear = new Map<string, number>();
for (const r of result.linears) byLinear.set(r.name, (byLinear.get(r.name) ?? 0) + r.seconds / layers);
const flops = layerFlops(c, windows.length, seqLen);
const summary = {
  date: new Date().toISOString().slice(0, 10),
  adapter: describeGpu(gpu),
  shape: `${values.shape} (random weights)`,
  method: quantize.method,
  bits: quantize.bits,
  groupSize: quantize.groupSize,
  calibration: `${windows.length} × ${seqLen} tokens`,
  hiddenStorage: result.hiddenStorage,
  hiddenWindowsOnGpu: `${result.gpuWindows} of ${windows.length}`,
  profiled: !values.raw,
  layerSeconds: layerTimes,
  secondsPerLayer: perLayer,
  projectedModelSeconds: perLayer * full.nLayers,
  projectedByShape: result.phases.length ? projectShapes(result.phases.slice(steadyFrom)) : null,
  phasesPerLayer: result.phases.length ? phaseSummary(result.phases.slice(steadyFrom), flops) : null,
  teraflopPerLayer: {
    forward: flops.forwardTotal / 1e12,
    forwardPreviousPipeline: flops.forwardPrevious / 1e12,
    hessian: flops.hessian / 1e12,
  },
  quantizerSecondsPerLinear: Object.fromEntries(byLinear),
  pipelinePeakGpuBytes: result.peakGpuBytes,
  driverPeakMiB: null as { idle: number; peak: number } | null,
};
gpu.device.destroy();
summary.driverPeakMiB = await driver.stop();
console.log(JSON.stringify(summary, null, 2));
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(summary, null, 2));

/** Mean seconds per layer by phase, and the throughput the GPU timestamps imply. */
function phaseSummary(phases: LayerPhases[], f: ReturnType<typeof layerFlops>) {
  const avg = (pick: (p: LayerPhases) => number) => phases.reduce((s, p) => s + pick(p), 0) / phases.length;
  const gpuPhases = phases.every((p) => p.gpu !== null);
  const forwardGpu = Object.fromEntries(
    LAYER_STAGES.map((s) => [s, gpuPhases ? avg((p) => p.gpu!.forward[s] ?? 0) : null]),
  ) as Record<LayerStage, number | null>;
  const forwardSeconds = gpuPhases ? LAYER_STAGES.reduce((s, st) => s + forwardGpu[st]!, 0) : null;
  const hessianSeconds = gpuPhases ? avg((p) => p.gpu!.hessian) : null;
  return {
    wallSeconds: {
      capture: avg((p) => p.captureSeconds),
      quantize: avg((p) => p.quantizeSeconds),
      propagate: avg((p) => p.propagateSeconds),
      total: avg((p) => p.totalSeconds),
    },
    gpuSeconds: gpuPhases
      ? { forward: forwardSeconds, forwardByStage: forwardGpu, hessian: hessianSeconds }
      : null,
    teraflopsPerSecond: gpuPhases
      ? { forward: f.forwardTotal / forwardSeconds! / 1e12, hessian: f.hessian / hessianSeconds! / 1e12 }
      : null,
  };
}

/**
 * FLOPs of one layer over `n` windows of `rows` tokens (a multiply-add counts 2): each stage's forward
 * GEMMs and causal attention (QKᵀ and P·V over positions ≤ t), as this pipeline runs them and as the
 * previous one did (every stage re-ran the layer from its input), and the Hessians (hessian_accum.ts runs
 * the 128×128 tiles on or above the diagonal).
 */
function layerFlops(c: ModelConfig, n: number, rows: number) {
  const T = n * rows;
  const qDim = c.nHeads * c.headDim;
  const gemm = (inDim: number, outDim: number) => 2 * T * inDim * outDim;
  const qkv = gemm(c.dim, qDim) + 2 * gemm(c.dim, c.kvDim);
  const attention = n * 2 * 2 * qDim * (rows * (rows + 1)) / 2;
  const o = gemm(qDim, c.dim);
  const gateUp = 2 * gemm(c.dim, c.hiddenDim);
  const down = gemm(c.hiddenDim, c.dim);
  const forward: Record<LayerStage, number> = {
    qkv: 0,
    o: qkv + attention,
    gateUp: qkv + attention + o,
    down: gateUp,
    out: gateUp + down,
  };
  const attentionBlock = qkv + attention + o;
  const previous = (qkv + attention) + attentionBlock + (attentionBlock + gateUp) +
    (attentionBlock + gateUp + down);
  const tiles = (cols: number) => Math.ceil(cols / HESSIAN_TILE);
  const hessianOf = (cols: number) => 2 * T * HESSIAN_TILE ** 2 * tiles(cols) * (tiles(cols) + 1) / 2;
  return {
    forward,
    forwardTotal: LAYER_STAGES.reduce((s, st) => s + forward[st], 0),
    forwardPrevious: previous,
    hessian: 2 * hessianOf(c.dim) + hessianOf(qDim) + hessianOf(c.hiddenDim),
  };
}

/**
 * Whole-model seconds at the 8B and 70B shapes from the measured layers: capture and propagate scale with the
 * forward and Hessian FLOPs, the quantizer with Σ (rows·cols² + cols³) over the seven linears (GPTQ's work).
 */
function projectShapes(phases: LayerPhases[]) {
  const avg = (pick: (p: LayerPhases) => number) => phases.reduce((s, p) => s + pick(p), 0) / phases.length;
  const passes = avg((p) => p.totalSeconds - p.quantizeSeconds);
  const quantizer = avg((p) => p.quantizeSeconds);
  const work = (m: ModelConfig) => {
    const f = layerFlops(m, windows.length, seqLen);
    const qDim = m.nHeads * m.headDim;
    const shapes = [[qDim, m.dim], [m.kvDim, m.dim], [m.kvDim, m.dim], [m.dim, qDim], [m.hiddenDim, m.dim], [
      m.hiddenDim,
      m.dim,
    ], [m.dim, m.hiddenDim]];
    return {
      passes: f.forwardTotal + f.hessian,
      gptq: shapes.reduce((s, [r, k]) => s + r * k * k + k ** 3, 0),
    };
  };
  const here = work(c);
  const project = (m: ModelConfig) => {
    const w = work(m);
    const perLayer = passes * w.passes / here.passes + quantizer * w.gptq / here.gptq;
    return { secondsPerLayer: perLayer, modelSeconds: perLayer * m.nLayers, layers: m.nLayers };
  };
  return {
    note: "estimate scaled from the measured layers by work; random weights",
    "llama3-8b": project(parseModelConfig(PRESETS["llama3-8b"], null, "llama3-8b")),
    "llama3-70b": project(parseModelConfig(LLAMA3_70B, null, "llama3-70b")),
  };
}

/** Samples the GPU's used memory (MiB) with nvidia-smi every 200 ms, where it exists; null elsewhere. */
function watchDriverMemory(): { stop(): Promise<{ idle: number; peak: number } | null> } {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "200"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch {
    return { stop: () => Promise.resolve(null) };
  }
  const seen: number[] = [];
  const reading = (async () => {
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      // One line per GPU per sample: the bench's device is the only one in use, so take the largest.
      for (const line of lines) if (line.trim()) seen.push(Number(line.trim()));
    }
  })();
  return {
    async stop() {
      await new Promise((r) => setTimeout(r, 400)); // a last sample after the device is gone
      try {
        child.kill();
      } catch { /* already exited */ }
      await reading.catch(() => {});
      await child.status;
      const ok = seen.filter(Number.isFinite);
      return ok.length ? { idle: ok[0], peak: Math.max(...ok) } : null;
    },
  };
}
