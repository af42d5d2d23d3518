/**
 * True-sequential, layer-by-layer quantization of a Llama model (docs/quantization.md §5 and pitfall 15, gptq's
 * `llama_sequential` with --true-sequential). For each decoder layer (h = every window's hidden state):
 *   1. upload the layer (f32 dense) — only this layer's weights are on the GPU; the rest stays on disk;
 *   2. [q, k, v]   capture norm1(h) over every window into one Hessian; quantize q, k, v with it;
 *   3. [o]         capture attn(h) computed through the QUANTIZED q, k, v; quantize o;
 *   4. [gate, up]  run the attention block through the quantized q, k, v, o, STORING the post-attention
 *                  residual h ← h + attn·Woᵀ in place and capturing norm2(h); quantize gate and up;
 *   5. [down]      capture silu(gate)·up of norm2(h) through the quantized gate, up; quantize down;
 *   6. propagate   h ← h + act·Wdownᵀ through the quantized MLP: the next layer's inputs.
 * Each Hessian sees inputs computed through the already quantized earlier groups and the output is the fully
 * quantized layer's, as in gptq. Storing h in step 4 spares steps 5–6 re-running q/k/v, attention and o
 * (layer_runner.ts): at Llama-3-8B shape with 128 × 2048 tokens the forward work per layer drops from
 * ≈ 251 to ≈ 198 TFLOP (GEMMs 233 → 189, 4 → 2 attention passes), plus ≈ 68 TFLOP of Hessians. Sparing
 * more would mean caching activations per window (attn for step 4, act for step 6: 2.1 and 7.5 GB even
 * in f16 at 8B), which a 6 GB budget cannot hold: we recompute them instead.
 *
 * Memory at 8B (128 × 2048): hidden states 4.3 GB in f32 (the default wherever they fit
 * {@link AUTO_F32_HIDDEN_LIMIT}; f16 halves that but is lossy, see {@link chooseHiddenStorage}), of which only
 * `gpuHiddenBytes` (default 1.75 GiB) stay on the GPU and the rest stream from host memory (hidden_windows.ts;
 * bit-identical, slower), the f32 layer ≤ 0.87 GB, one Hessian ≤ 0.82 GB (down_proj), the runner's scratch
 * 0.54 GB while capturing; tracked peak 4.0 GB at the down_proj capture, 5,508 MiB for the whole process
 * (BENCHMARKS.md, "Quantization speed", 2026-12-06). After each capture the weights no later step reads
 * (SEQUENTIAL_GROUPS.freed), the scratch and the transit buffers are freed for the quantizer, whose own
 * buffers (GPU quantizer: ≈ 2·cols²·4 + rows·cols·4 bytes, 1.9 GB for down_proj) then join ours. The
 * quantizer is injected (`LinearQuantizer`), so the f64 reference and the GPU quantizer run the same pipeline.
 */
import { type Gpu, type MatrixBuffer, rowsPerPartFor } from "../../kernels/core/mod.ts";
import {
  createHessian,
  type LinearQuantizer,
  type QuantizedLinear,
  type QuantizedLinearWithQ,
  type QuantizeOptions,
} from "../../quant/mod.ts";
import {
  DEFAULT_GPU_HIDDEN_BYTES,
  type HiddenWindow,
  isResident,
  residentWindows,
} from "./hidden_windows.ts";
import { createLayerRunner, type HiddenStorage, type LayerRunner, type LayerStage } from "./layer_runner.ts";
import { quantizeLmHead } from "./lm_head.ts";
import {
  destroyGpuLayer,
  type GpuLayer,
  layerVectorBuffers,
  type LayerWeights,
  linearBuffers,
  linearBytes,
  type LinearField,
  LINEARS,
  type LlamaWeightSource,
  modulePrefix,
  type QuantizedLayer,
  replaceLinear,
  uploadHostLayer,
} from "../model/mod.ts";
import {
  createPassTimer,
  embedWindows,
  type HessianSink,
  type LayerPhases,
  MemoryTracker,
  type PassTimer,
  runWindows,
} from "./quantize_passes.ts";

export type { HessianSink, LayerPhases } from "./quantize_passes.ts";

/** Makes the Hessian of one group's input. */
export type HessianFactory = (gpu: Gpu, cols: number) => HessianSink;

/**
 * The true-sequential groups: the stage that captures their shared input, their linears, and the GPU weights
 * no later step reads once the capture is done (the group's dense weights, which Q replaces; after "gateUp"
 * also the attention block's Q, whose output is stored in the hidden states).
 */
export const SEQUENTIAL_GROUPS: readonly {
  stage: LayerStage;
  fields: readonly LinearField[];
  freed: readonly LinearField[];
}[] = [
  { stage: "qkv", fields: ["wq", "wk", "wv"], freed: ["wq", "wk", "wv"] },
  { stage: "o", fields: ["wo"], freed: ["wo"] },
  { stage: "gateUp", fields: ["wGate", "wUp"], freed: ["wGate", "wUp", "wq", "wk", "wv", "wo"] },
  { stage: "down", fields: ["wDown"], freed: ["wDown"] },
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
  /** Bytes of the GPU buffers the pipeline holds now, and the most so far (QuantizeModelResult.peakGpuBytes). */
  gpuBytes: number;
  peakGpuBytes: number;
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
  /** Wall time of the quantizer call (without `profile` it may include waiting for the group's capture). */
  seconds: number;
}

/** The run's summary. */
export interface QuantizeModelResult {
  linears: LinearReport[];
  /** Σ loss per layer */
  layerLoss: number[];
  seconds: number;
  /**
   * Peak bytes of the GPU buffers the pipeline allocated itself: hidden states, the runner's scratch, the
   * layer's weights (and each Q once the quantizer hands it over), the Hessian, the profiler's queries. The
   * quantizer's internal buffers during a call are not included.
   */
  peakGpuBytes: number;
  /** Per layer, with `profile` only (empty otherwise). */
  phases: LayerPhases[];
  /** How the calibration hidden states were stored. */
  hiddenStorage: HiddenStorage;
  /** Windows whose hidden states stayed on the GPU (the rest streamed from host memory). */
  gpuWindows: number;
  /** The quantized LM head (options.quantize.lmHeadBits > 0), else null. */
  lmHead: QuantizedLinear | null;
}

/** How hidden states are stored, or "auto" to let {@link chooseHiddenStorage} decide. */
export type HiddenStorageChoice = HiddenStorage | "auto";

/**
 * "auto" keeps f32 hidden states up to this many bytes: 4 GiB, which holds Llama-3-8B's 128 × 2048 × 4096
 * calibration states exactly (and every smaller model's at the paper's protocol).
 */
export const AUTO_F32_HIDDEN_LIMIT = 2 ** 32;

/**
 * Picks the storage of the calibration hidden states. f16 storage rounds every layer's input and output
 * (relative error 2⁻¹¹ per value, compounding over layers) and is NOT lossless: on stories260K at 2 bits it
 * moved leanquant-nu's perplexity by +5 % (issue 12, H100), so "auto" keeps f32 unless the f32 states would
 * exceed `limit` bytes.
 * @param choice "f16", "f32" or "auto"
 * @param shape windows, rows per window and the model width
 * @param limit most bytes "auto" spends on f32 states (default {@link AUTO_F32_HIDDEN_LIMIT})
 * @returns the storage to use
 */
export function chooseHiddenStorage(
  choice: HiddenStorageChoice,
  { windows, rows, dim }: { windows: number; rows: number; dim: number },
  limit = AUTO_F32_HIDDEN_LIMIT,
): HiddenStorage {
  if (choice !== "auto") return choice;
  // f16 pairs need an even width; an odd one stays f32 whatever it costs.
  return windows * rows * dim * 4 <= limit || dim % 2 !== 0 ? "f32" : "f16";
}

/** Options of {@link quantizeModel}. */
export interface QuantizeModelOptions {
  quantize: QuantizeOptions;
  quantizer: LinearQuantizer;
  /** Calibration windows, all of one length ≤ the context. */
  windows: readonly Uint32Array[];
  /** Hessian accumulation (default quant/hessian.ts `createHessian`). */
  hessian?: HessianFactory;
  /**
   * Storage of the windows' hidden states between stages (default "auto": f32 when it fits
   * {@link AUTO_F32_HIDDEN_LIMIT}; see {@link chooseHiddenStorage}).
   */
  hiddenStorage?: HiddenStorageChoice;
  /**
   * Most bytes of hidden states kept on the GPU (default {@link DEFAULT_GPU_HIDDEN_BYTES}): windows past it
   * keep their exact bytes in host memory and stream through the GPU per stage (hidden_windows.ts), trading
   * PCIe transfers for GPU memory; results are the same. `Infinity` keeps every window on the GPU.
   */
  gpuHiddenBytes?: number;
  /**
   * Measure where the time goes (benchmarks; default false): wait for the GPU at the end of every capture
   * so quantizer times are its own, and time each forward and Hessian pass with timestamp queries when the
   * device has them. Costs one extra wait per group.
   */
  profile?: boolean;
  onProgress?: (p: QuantizeProgress) => void;
  /** Receives each linear's report as soon as it is quantized (per-layer losses while the run goes on). */
  onLinear?: (r: LinearReport) => void;
  /**
   * Awaited after every GPU slice the pipeline submits (one window's pass, one linear's quantization), so a
   * server can let its decode steps take the queue between slices (inference/jobs); default: none.
   */
  yieldToServing?: () => Promise<void>;
  /** Cancels the run: checked between slices; the run throws the signal's reason. */
  signal?: AbortSignal;
  /** Receives each layer's results as soon as it is done (e.g. to write its shard). */
  onLayer?: (layer: number, results: QuantizedLayer) => Promise<void> | void;
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
  options: QuantizeModelOptions,
): Promise<QuantizeModelResult> {
  const { windows, hessian = createHessian, profile = false } = options;
  const c = source.config;
  const rows = windows[0]?.length ?? 0;
  if (windows.length === 0 || windows.some((w) => w.length !== rows)) {
    throw new Error("Cannot quantize: expected at least one calibration window, all of the same length");
  }
  const hiddenStorage = chooseHiddenStorage(options.hiddenStorage ?? "auto", {
    windows: windows.length,
    rows,
    dim: c.dim,
  });
  if (!options.hessian) checkHessianSize(gpu, c);
  const started = performance.now();
  const mem = new MemoryTracker();
  const runner = createLayerRunner(gpu, c, { rows, storage: hiddenStorage });
  const gpuWindows = residentWindows(
    windows.length,
    runner.hiddenBytes,
    options.gpuHiddenBytes ?? DEFAULT_GPU_HIDDEN_BYTES,
  );
  const hidden: HiddenWindow[] = [];
  const timer = profile && gpu.hasTimestamps ? createPassTimer(gpu) : null;
  mem.set("timer", timer?.bytes ?? 0);
  // 5 window runs + 7 quantizations (each weighted like N runs) per layer; the head's capture and quantization
  const total = 12 * windows.length * c.nLayers + (options.quantize.lmHeadBits > 0 ? 2 * windows.length : 0);
  let units = 0;
  const run: Run = {
    gpu,
    c,
    runner,
    hidden,
    mem,
    timer,
    profile,
    options,
    hessian,
    linears: [],
    phases: [],
    report(layer, step, add) {
      units += add;
      options.onProgress?.({
        layer,
        nLayers: c.nLayers,
        step,
        fraction: units / total,
        gpuBytes: mem.live,
        peakGpuBytes: mem.peak,
      });
    },
    async slice() {
      options.signal?.throwIfAborted();
      await options.yieldToServing?.();
      options.signal?.throwIfAborted();
    },
  };
  const layerLoss: number[] = [];
  let lmHead: QuantizedLinear | null = null;
  try {
    const embedding = await source.loadTokenEmbedding();
    await embedWindows(gpu, runner, {
      table: embedding.data,
      dim: c.dim,
      scale: c.embedScale,
      windows,
      place: (w) => isResident(w, windows.length, gpuWindows) ? "gpu" : "host",
      slice: run.slice,
      onStored(h) {
        hidden.push(h);
        if (h instanceof Uint8Array) return;
        mem.set("hidden", mem.bytes("hidden") + h.size);
        mem.set("scratch", runner.bytes);
      },
    });
    // Layer l + 1 is read (and converted to f32) on the host while layer l runs on the GPU: two layers of
    // host memory for one layer's load time per layer.
    const prefetch = (l: number) => {
      const p = source.loadLayer(l);
      p.catch(() => {}); // a failure surfaces when awaited; if an earlier layer fails first, it is dropped
      return p;
    };
    let next = prefetch(0);
    for (let l = 0; l < c.nLayers; l++) {
      await run.slice();
      const host = await next;
      if (l + 1 < c.nLayers) next = prefetch(l + 1);
      const results = await quantizeLayer(run, host, l);
      layerLoss.push(run.linears.filter((r) => r.layer === l).reduce((s, r) => s + r.loss, 0));
      await options.onLayer?.(l, results);
    }
    if (options.quantize.lmHeadBits > 0) {
      lmHead = await quantizeLmHead(gpu, {
        runner,
        hidden,
        finalNorm: (await source.loadFinalNorm()).data,
        head: (await source.loadLmHead(embedding)).data,
        vocabSize: c.vocabSize,
        dim: c.dim,
        opts: options.quantize,
        quantizer: options.quantizer,
        hessian,
        onWindow: () => run.report(c.nLayers - 1, "capture lm_head", 1),
        onTransitBytes: (b) => mem.set("transit", b),
      });
      run.report(c.nLayers - 1, "quantize lm_head", windows.length);
    }
  } finally {
    hidden.forEach((b) => b instanceof Uint8Array || b.destroy());
    runner.destroy();
    timer?.destroy();
  }
  return {
    linears: run.linears,
    layerLoss,
    seconds: (performance.now() - started) / 1000,
    peakGpuBytes: mem.peak,
    phases: run.phases,
    hiddenStorage,
    gpuWindows,
    lmHead,
  };
}

/** State shared by the steps of one run. */
interface Run {
  gpu: Gpu;
  c: LlamaWeightSource["config"];
  runner: LayerRunner;
  /**
   * per window (rows, dim) in the runner's storage, on the GPU or the host: the current layer's inputs,
   * replaced by its outputs
   */
  hidden: HiddenWindow[];
  mem: MemoryTracker;
  timer: PassTimer | null;
  profile: boolean;
  options: QuantizeModelOptions;
  hessian: HessianFactory;
  linears: LinearReport[];
  phases: LayerPhases[];
  report(layer: number, step: string, add: number): void;
  /** Between GPU slices: cancellation, then the server's turn. */
  slice(): Promise<void>;
}

/** One decoder layer: upload, the four sequential groups, then propagate the windows through it. */
async function quantizeLayer(run: Run, host: LayerWeights, l: number): Promise<QuantizedLayer> {
  const { gpu, runner, mem } = run;
  const p: LayerPhases = {
    layer: l,
    captureSeconds: 0,
    quantizeSeconds: 0,
    propagateSeconds: 0,
    totalSeconds: 0,
    gpu: null,
  };
  const since = (t: number) => (performance.now() - t) / 1000;
  const started = performance.now();
  const layer = uploadHostLayer(gpu, host, l);
  mem.set("norms", layerVectorBuffers(layer).reduce((s, b) => s + b.size, 0));
  for (const f of LINEARS) mem.set(f, linearBytes(layer[f]));
  try {
    const results: Partial<QuantizedLayer> = {};
    for (const group of SEQUENTIAL_GROUPS) {
      let t = performance.now();
      const sink = await captureGroup(run, layer, l, group);
      p.captureSeconds += since(t);
      try {
        // Until the next capture neither these weights nor the scratch is needed: free them so the
        // quantizer has the memory.
        for (const f of group.freed) {
          linearBuffers(layer[f]).forEach((b) => b.destroy());
          mem.set(f, 0);
        }
        runner.release();
        mem.set("scratch", 0);
        t = performance.now();
        for (const field of group.fields) {
          results[field] = await quantizeOne(run, { host, layer, l, field, H: sink.H });
          await run.slice();
        }
        p.quantizeSeconds += since(t);
      } finally {
        sink.destroy();
        mem.set("hessian", 0);
      }
    }
    const t = performance.now();
    const bound = runner.bind(layer, "out");
    mem.set("scratch", runner.bytes);
    const onWindow = () => run.report(l, "propagate", 1);
    await runWindows(gpu, run.hidden, {
      bound,
      sink: null,
      rows: runner.rows,
      timer: run.timer,
      onWindow,
      slice: run.slice,
      onTransitBytes: (b) => run.mem.set("transit", b),
    });
    await gpu.device.queue.onSubmittedWorkDone();
    p.propagateSeconds = since(t);
    if (run.profile) {
      await run.timer?.flush();
      p.gpu = run.timer?.take() ?? null;
      p.totalSeconds = since(started);
      run.phases.push(p);
    }
    return results as QuantizedLayer;
  } finally {
    destroyGpuLayer(layer);
    for (const f of LINEARS) mem.set(f, 0);
    mem.set("norms", 0);
  }
}

/** Runs one group's stage over every window into a new Hessian; returns it finalized. */
async function captureGroup(
  run: Run,
  layer: GpuLayer,
  l: number,
  group: (typeof SEQUENTIAL_GROUPS)[number],
): Promise<HessianSink> {
  const { gpu, c, mem, runner } = run;
  const bound = runner.bind(layer, group.stage);
  mem.set("scratch", runner.bytes);
  const sink = run.hessian(gpu, bound.captureCols);
  mem.set("hessian", bound.captureCols ** 2 * 4);
  try {
    const step = `capture ${group.fields.map((f) => shortName(modulePrefix(c, l, f))).join(" ")}`;
    const onWindow = () => run.report(l, step, 1);
    await runWindows(gpu, run.hidden, {
      bound,
      sink,
      rows: runner.rows,
      timer: run.timer,
      onWindow,
      slice: run.slice,
      onTransitBytes: (b) => run.mem.set("transit", b),
    });
    await sink.finalize();
    if (run.profile) await gpu.device.queue.onSubmittedWorkDone();
    return sink;
  } catch (err) {
    sink.destroy();
    throw err;
  }
}

/**
 * Fails before any work when a Hessian of the model cannot be held in two GPU bindings (quant/hessian.ts
 * splits one past a binding into two row ranges): at 2 GiB that is past 32,768 columns. Llama-3-70B's
 * down_proj (28,672) fits.
 */
function checkHessianSize(gpu: Gpu, c: LlamaWeightSource["config"]): void {
  const inputs: [string, number][] = [
    ["self_attn.q_proj", c.dim],
    ["self_attn.o_proj", c.nHeads * c.headDim],
    ["mlp.down_proj", c.hiddenDim],
  ];
  for (const [name, cols] of inputs) {
    try {
      rowsPerPartFor(gpu, cols, cols);
    } catch (err) {
      throw new Error(
        `Cannot quantize this model on this GPU: the Hessian of ${name} (${cols} columns, ` +
          `${(cols * cols * 4 / 1e9).toFixed(2)} GB in f32) does not fit two storage bindings: ` +
          (err as Error).message,
      );
    }
  }
}

/** Quantizes one linear with its group's H and swaps its weight for Q. */
async function quantizeOne(
  run: Run,
  { host, layer, l, field, H }: {
    host: LayerWeights;
    layer: GpuLayer;
    l: number;
    field: LinearField;
    H: MatrixBuffer;
  },
) {
  const { gpu, c, mem } = run;
  const name = shortName(modulePrefix(c, l, field));
  run.report(l, `quantize ${name}`, 0);
  const t0 = performance.now();
  const [rows, cols] = host[field].shape;
  const q = await run.options.quantizer({ W: host[field].data, H, rows, cols }, run.options.quantize);
  checkResult(q, rows, cols, modulePrefix(c, l, field));
  const { Q, ...ql } = q;
  layer[field] = replaceLinear(gpu, layer[field], Q, `layers.${l}.${field} Q`);
  mem.set(field, linearBytes(layer[field]));
  const seconds = (performance.now() - t0) / 1000;
  const report = { layer: l, field, name, rows, cols, loss: q.loss, dampUsed: q.dampUsed, seconds };
  run.linears.push(report);
  run.options.onLinear?.(report);
  run.report(l, `quantize ${name}`, run.hidden.length);
  return ql;
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
