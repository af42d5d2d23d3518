/**
 * True-sequential, layer-by-layer quantization of a Llama model (leanquant.md §5 and pitfall 15, gptq's
 * `llama_sequential` with --true-sequential). For each decoder layer:
 *   1. upload the layer (f32 dense) — only this layer's weights are on the GPU; the rest stays on disk;
 *   2. for each group [q, k, v] → [o] → [gate, up] → [down]: run the layer up to the group's input over
 *      every calibration window (inputs already pass through the quantized earlier groups), accumulate one
 *      Hessian for the group (one per distinct input), quantize each linear with it, and swap the dense weight
 *      for its dequantized Q;
 *   3. run the fully quantized layer once more: its outputs replace the windows' hidden states, which are
 *      the next layer's inputs (propagating quantized inputs is part of the method).
 * The hidden states of all windows live on the GPU (one buffer per window, updated in place); the quantizer
 * is injected (`LinearQuantizer`), so the f64 reference and the GPU quantizer run the same pipeline.
 */
import type { Gpu } from "../kernels/gpu.ts";
import { uploadStorage } from "../kernels/buffers.ts";
import type { QuantizeOptions } from "../quant/types.ts";
import type { LinearQuantizer, QuantizedLinearWithQ } from "../quant/reference_quantizer.ts";
import {
  createLayerRunner,
  destroyGpuLayer,
  gpuLayerBytes,
  type LayerRunner,
  type LayerStage,
  linearBytes,
  replaceLinear,
  uploadHostLayer,
} from "./layer_runner.ts";
import { createHessian } from "../quant/hessian.ts";
import type { GpuLayer } from "./model.ts";
import type { LayerWeights, LlamaWeightSource } from "./weights.ts";
import { type LinearField, modulePrefix, type QuantizedLayer } from "./quant_format.ts";

/**
 * A Hessian accumulated on the GPU from captured layer inputs: quant/hessian.ts `createHessian` by default
 * (H = (2/N_tokens)·Σ x xᵀ). `addBatch` submits its own work in queue order, right after the window's forward.
 */
export interface HessianSink {
  /** (cols, cols) f32, valid after `finalize()` */
  readonly H: GPUBuffer;
  addBatch(x: GPUBuffer, tokens: number, xRowOffset?: number): void;
  finalize(): void | Promise<void>;
  destroy(): void;
}

/** Makes the Hessian of one group's input. */
export type HessianFactory = (gpu: Gpu, cols: number) => HessianSink;

/** The true-sequential groups: the stage that captures their shared input, and their linears. */
export const SEQUENTIAL_GROUPS: readonly { stage: LayerStage; fields: readonly LinearField[] }[] = [
  { stage: "qkv", fields: ["wq", "wk", "wv"] },
  { stage: "o", fields: ["wo"] },
  { stage: "gateUp", fields: ["wGate", "wUp"] },
  { stage: "down", fields: ["wDown"] },
];

/** Where the run is, for a progress bar. */
export interface QuantizeProgress {
  /** 0-based layer index */
  layer: number;
  nLayers: number;
  /** e.g. "capture self_attn.q_proj self_attn.k_proj self_attn.v_proj", "quantize mlp.down_proj", "propagate" */
  step: string;
  /** Share of the whole run done, 0..1 (windows and quantizations weighted alike). */
  fraction: number;
}

/** What happened to one linear. */
export interface LinearReport {
  layer: number;
  field: LinearField;
  /** module name without the layer, e.g. "self_attn.q_proj" */
  name: string;
  rows: number;
  cols: number;
  loss: number;
  dampUsed: number;
  seconds: number;
}

/** The run's summary. */
export interface QuantizeModelResult {
  linears: LinearReport[];
  /** Σ loss per layer */
  layerLoss: number[];
  seconds: number;
  /** Peak bytes of GPU memory the pipeline itself held (quantizer internals not included). */
  peakGpuBytes: number;
}

/** Options of {@link quantizeModel}. */
export interface QuantizeModelOptions {
  quantize: QuantizeOptions;
  quantizer: LinearQuantizer;
  /** Calibration windows, all of one length ≤ the context. */
  windows: readonly Uint32Array[];
  /** Hessian accumulation (default quant/hessian.ts `createHessian`). */
  hessian?: HessianFactory;
  onProgress?: (p: QuantizeProgress) => void;
  /** Receives each layer's results as soon as it is done (e.g. to write its shard). */
  onLayer?: (layer: number, results: QuantizedLayer) => Promise<void> | void;
}

/** Live and peak bytes of the GPU buffers the pipeline holds. */
class MemoryTracker {
  live = 0;
  peak = 0;
  add(bytes: number) {
    this.live += bytes;
    this.peak = Math.max(this.peak, this.live);
  }
  sub(bytes: number) {
    this.live -= bytes;
  }
}

/**
 * Quantizes every decoder layer of the model `source` reads, true-sequentially.
 * @param gpu the device
 * @param source the full-precision weights, read one layer at a time
 * @param options quantizer, options, calibration windows and callbacks
 * @returns per-linear losses, time and peak GPU memory
 * @example
 * ```ts ignore
 * const source = await openLlamaWeights(dir, config);
 * const result = await quantizeModel(gpu, source, {
 *   quantize: { ...QUANTIZE_DEFAULTS, method: "leanquant-nu", bits: 4 },
 *   quantizer: createReferenceQuantizer(gpu),
 *   windows: calib.windows,
 *   onLayer: (i, layer) => writer.writeLayer(i, layer),
 * });
 * ```
 */
export async function quantizeModel(
  gpu: Gpu,
  source: LlamaWeightSource,
  { quantize, quantizer, windows, hessian = createHessian, onProgress, onLayer }: QuantizeModelOptions,
): Promise<QuantizeModelResult> {
  const c = source.config;
  const rows = windows[0]?.length ?? 0;
  if (windows.length === 0 || windows.some((w) => w.length !== rows)) {
    throw new Error("Cannot quantize: expected at least one calibration window, all of the same length");
  }
  const started = performance.now();
  const mem = new MemoryTracker();
  const runner = createLayerRunner(gpu, c, { rows });
  mem.add(runner.bytes);
  const hidden = await embedWindows(gpu, source, windows);
  mem.add(hidden.length * rows * c.dim * 4);
  const N = windows.length;
  const total = (5 * N + 7 * N) * c.nLayers; // window runs + quantizations (each weighted like N windows)
  let units = 0;
  const run: Run = {
    gpu,
    c,
    runner,
    hidden,
    mem,
    quantize,
    quantizer,
    hessian,
    linears: [],
    report(layer, step, add) {
      units += add;
      onProgress?.({ layer, nLayers: c.nLayers, step, fraction: units / total });
    },
  };
  const layerLoss: number[] = [];
  try {
    for (let l = 0; l < c.nLayers; l++) {
      const results = await quantizeLayer(run, await source.loadLayer(l), l);
      layerLoss.push(run.linears.filter((r) => r.layer === l).reduce((s, r) => s + r.loss, 0));
      await onLayer?.(l, results);
    }
  } finally {
    hidden.forEach((b) => b.destroy());
    runner.destroy();
  }
  return {
    linears: run.linears,
    layerLoss,
    seconds: (performance.now() - started) / 1000,
    peakGpuBytes: mem.peak,
  };
}

/** State shared by the steps of one run. */
interface Run {
  gpu: Gpu;
  c: LlamaWeightSource["config"];
  runner: LayerRunner;
  /** per window (rows, dim) f32: the current layer's inputs, replaced by its outputs */
  hidden: GPUBuffer[];
  mem: MemoryTracker;
  quantize: QuantizeOptions;
  quantizer: LinearQuantizer;
  hessian: HessianFactory;
  linears: LinearReport[];
  report(layer: number, step: string, add: number): void;
}

/** One decoder layer: upload, the four sequential groups, then propagate the windows through it. */
async function quantizeLayer(run: Run, host: LayerWeights, l: number): Promise<QuantizedLayer> {
  const { gpu, runner, hidden, mem } = run;
  const layer = uploadHostLayer(gpu, host, l);
  mem.add(gpuLayerBytes(layer));
  try {
    const results: Partial<QuantizedLayer> = {};
    for (const group of SEQUENTIAL_GROUPS) await quantizeGroup(run, { host, layer, l, group, results });
    const out = runner.bind(layer, "out");
    await runWindows(gpu, hidden, (w) => out.run(w, w), () => run.report(l, "propagate", 1));
    await gpu.device.queue.onSubmittedWorkDone();
    return results as QuantizedLayer;
  } finally {
    mem.sub(gpuLayerBytes(layer));
    destroyGpuLayer(layer);
  }
}

/** One group: capture its input over every window into one Hessian, then quantize its linears with it. */
async function quantizeGroup(
  run: Run,
  { host, layer, l, group, results }: {
    host: LayerWeights;
    layer: GpuLayer;
    l: number;
    group: (typeof SEQUENTIAL_GROUPS)[number];
    results: Partial<QuantizedLayer>;
  },
): Promise<void> {
  const { gpu, c, mem } = run;
  const names = group.fields.map((f) => shortName(modulePrefix(c, l, f)));
  const bound = run.runner.bind(layer, group.stage);
  const sink = run.hessian(gpu, bound.captureCols);
  const hBytes = bound.captureCols ** 2 * 4;
  mem.add(hBytes);
  try {
    await runWindows(gpu, run.hidden, (w) => {
      bound.run(w);
      sink.addBatch(bound.capture!, run.runner.rows);
    }, () => run.report(l, `capture ${names.join(" ")}`, 1));
    await sink.finalize();
    for (const [k, field] of group.fields.entries()) {
      run.report(l, `quantize ${names[k]}`, 0);
      const t0 = performance.now();
      const [rows, cols] = host[field].shape;
      const q = await run.quantizer({ W: host[field].data, H: sink.H, rows, cols }, run.quantize);
      checkResult(q, rows, cols, modulePrefix(c, l, field));
      const { Q, ...ql } = q;
      mem.sub(linearBytes(layer[field]));
      layer[field] = replaceLinear(gpu, layer[field], Q, `layers.${l}.${field} Q`);
      mem.add(linearBytes(layer[field]));
      results[field] = ql;
      const seconds = (performance.now() - t0) / 1000;
      run.linears.push({
        layer: l,
        field,
        name: names[k],
        rows,
        cols,
        loss: q.loss,
        dampUsed: q.dampUsed,
        seconds,
      });
      run.report(l, `quantize ${names[k]}`, run.hidden.length);
    }
  } finally {
    sink.destroy();
    mem.sub(hBytes);
  }
}

/** Runs `fn` per window, waiting for the GPU about once a second so progress is real and the queue bounded. */
async function runWindows(gpu: Gpu, hidden: GPUBuffer[], fn: (w: GPUBuffer) => void, tick: () => void) {
  let synced = performance.now();
  for (const w of hidden) {
    fn(w);
    if (performance.now() - synced > 1000) {
      await gpu.device.queue.onSubmittedWorkDone();
      synced = performance.now();
    }
    tick();
  }
}

/** Layer 0's inputs: the token embeddings of every window, gathered on the host (the table never goes up). */
async function embedWindows(gpu: Gpu, source: LlamaWeightSource, windows: readonly Uint32Array[]) {
  const { dim, vocabSize } = source.config;
  const table = (await source.loadTokenEmbedding()).data;
  return windows.map((ids, w) => {
    const x = new Float32Array(ids.length * dim);
    ids.forEach((id, t) => {
      if (id >= vocabSize) {
        throw new Error(`Cannot embed calibration token ${id}: vocabulary has ${vocabSize} ids`);
      }
      x.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
    });
    return uploadStorage(gpu, x, `hidden window ${w}`);
  });
}

function checkResult(q: QuantizedLinearWithQ, rows: number, cols: number, name: string): void {
  const fail = (msg: string): never => {
    throw new Error(`Cannot use the quantization of "${name}": ${msg}`);
  };
  if (q.rows !== rows || q.cols !== cols) fail(`shape (${q.rows}, ${q.cols}), expected (${rows}, ${cols})`);
  if (q.codes.length !== rows * cols) fail(`${q.codes.length} codes, expected ${rows * cols}`);
  if (q.Q instanceof Float32Array) {
    if (q.Q.length !== rows * cols) fail(`Q has ${q.Q.length} values, expected ${rows * cols}`);
    if (!q.Q.every(Number.isFinite)) fail("Q has non-finite values");
  }
  if (!Number.isFinite(q.loss)) fail(`loss ${q.loss}`);
}

/** "model.layers.3.self_attn.q_proj" → "self_attn.q_proj". */
function shortName(prefix: string): string {
  return prefix.replace(/^.*\.layers\.\d+\./, "");
}
