/**
 * Runs ONE decoder layer over a window of calibration hidden states with the model's own kernels, stopping
 * where the quantizer needs an input captured (docs/quantization.md §5, gptq's `llama_sequential`). The layer runs
 * in two halves, so that no stage recomputes what an earlier stage already stored:
 *   attention half, from the layer input h:
 *     stage "qkv"    → xn = rmsnorm(h)·attnNorm                                      (the input of q, k, v)
 *     stage "o"      → attn = attention(rope(xn·Wqᵀ), rope(xn·Wkᵀ), xn·Wvᵀ)            (the input of o)
 *     stage "gateUp" → h ← h + attn·Woᵀ, STORED BACK in place; xn = rmsnorm(h)·mlpNorm  (the input of gate, up)
 *   MLP half, from the post-attention residual h that "gateUp" stored:
 *     stage "down"   → xn = rmsnorm(h)·mlpNorm; act = silu(xn·Wgateᵀ)·(xn·Wupᵀ)       (the input of down)
 *     stage "out"    → h ← h + act·Wdownᵀ, STORED BACK in place: the layer output
 * Running "gateUp" then "out" over a window is one whole layer.
 *
 * Hidden states are stored as f32 (default) or as f16 pairs (two halves per u32, kernels/f16_convert.ts, as
 * GPTQ keeps its fp16 `inps`: half the memory, but lossy, see quantize_model.ts `chooseHiddenStorage`), and
 * every stage computes in f32 from a scratch copy. "gateUp" continues from the
 * value it stored (rounded to f16 when stored as f16), so its capture, "down" and "out" all see the same
 * post-attention residual. Each window is one sequence at positions 0..rows−1 with a one-layer KV cache of
 * `rows` positions (overwritten by the next window); its attention is the tiled kernel
 * (kernels/ops/flash_attention.ts), the same function as the serving forward's, summed in another order.
 *
 * The scratch (activations, KV cache, conversion buffer) is allocated by the first `bind` and freed by
 * `release()`, so the quantizer can have the memory between captures. The layer's steps come from
 * inference/model/decoder_layer.ts, the definition the forward loops over too; tests check the two agree.
 * One layer's weights are uploaded, swapped and freed by inference/model/gpu_layer.ts.
 */
import {
  type BoundPlan,
  createStorage,
  type Encodable,
  type Gpu,
  readBuffer,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import { createF16Convert, createFlashAttention } from "../../kernels/ops/mod.ts";
import {
  bindDecoderLayer,
  createForwardState,
  createLayerKernels,
  type ForwardState,
  forwardStateBuffers,
  type GpuLayer,
  type LayerKernels,
  type LayerStage,
  type ModelConfig,
} from "../model/mod.ts";

export { LAYER_STAGES, type LayerStage } from "../model/mod.ts";

/** How hidden states are stored between stages and layers (computation is f32 either way). */
export type HiddenStorage = "f16" | "f32";

/** A layer bound up to one stage: reusable for every window until the layer's weights or scratch change. */
export interface BoundLayer {
  /** "final": the model's final RMSNorm after the last layer (the LM head's input). */
  readonly stage: LayerStage | "final";
  /** The captured activation, (rows, captureCols) f32, valid after the window ran (null for "out"). */
  readonly capture: GPUBuffer | null;
  readonly captureCols: number;
  /** True for "gateUp" and "out", which store their result back into the hidden buffer. */
  readonly writesHidden: boolean;
  /**
   * Records one window: the hidden state → scratch, the stage's kernels in one compute pass (with
   * `timestampWrites` when given), and for "gateUp"/"out" the result → the same hidden buffer.
   * @param hidden (rows, dim) in the runner's storage
   */
  encode(
    encoder: GPUCommandEncoder,
    hidden: GPUBuffer,
    timestampWrites?: GPUComputePassTimestampWrites,
  ): void;
  /** Encodes and submits one window. */
  run(hidden: GPUBuffer): void;
}

/** Scratch activations and the one-layer KV cache for windows of `rows` tokens. */
export interface LayerRunner {
  readonly rows: number;
  readonly storage: HiddenStorage;
  /** Bytes of one window's hidden state: rows·dim·(2 for f16, 4 for f32). */
  readonly hiddenBytes: number;
  /** Bytes of GPU memory the scratch holds now (0 while released). */
  readonly bytes: number;
  /** Allocates one window's hidden-state buffer (the caller owns it). */
  createHidden(label: string): GPUBuffer;
  /** Stores (rows, dim) f32 host values into a hidden buffer, converting through the scratch (submits). */
  store(x: Float32Array, hidden: GPUBuffer): void;
  /** Reads a hidden buffer back as (rows, dim) f32 (one readback). */
  read(hidden: GPUBuffer): Promise<Float32Array>;
  /** Binds `layer`'s kernels up to `stage` (rebind after replacing a weight or releasing the scratch). */
  bind(layer: GpuLayer, stage: LayerStage): BoundLayer;
  /** Binds the final RMSNorm (weight (dim) f32): captures the LM head's input, stores nothing. */
  bindFinal(finalNorm: GPUBuffer): BoundLayer;
  /** Frees the scratch; the next `bind` or `store` allocates it again. */
  release(): void;
  destroy(): void;
}

/** The scratch: the forward state of one layer plus, for f16 storage, a packed copy of the window. */
interface Scratch {
  s: ForwardState;
  /** (rows, dim/2) u32 f16 pairs: the window in transit (f16 storage only) */
  h16: GPUBuffer | null;
  /** f16: h16 → s.x and s.x → h16 */
  unpack: BoundPlan | null;
  pack: BoundPlan | null;
  /** every buffer it holds (to size or free it) */
  buffers: GPUBuffer[];
}

/**
 * Creates the runner; its scratch is allocated on first use.
 * @param gpu the device
 * @param config the model
 * @param options rows per window (≤ config.seqLen) and the hidden-state storage (default "f32")
 * @returns the runner
 * @example
 * ```ts ignore
 * const runner = createLayerRunner(gpu, config, { rows: 2048 });
 * const hidden = runner.createHidden("window 0");
 * runner.store(embeddings, hidden);
 * const qkv = runner.bind(layer, "qkv");
 * qkv.run(hidden);       // qkv.capture now holds rmsnorm(hidden)·attnNorm
 * ```
 */
export function createLayerRunner(
  gpu: Gpu,
  config: ModelConfig,
  { rows, storage = "f32" }: { rows: number; storage?: HiddenStorage },
): LayerRunner {
  if (!Number.isInteger(rows) || rows < 1 || rows > config.seqLen) {
    throw new Error(
      `Cannot run a layer over ${rows} rows: expected 1 to the context length ${config.seqLen}`,
    );
  }
  if (storage === "f16" && config.dim % 2 !== 0) {
    throw new Error(`Cannot store hidden states as f16 pairs: dim ${config.dim} is odd`);
  }
  const n = rows * config.dim;
  const hiddenBytes = n * (storage === "f16" ? 2 : 4);
  // Kernels built once: binding creates only bind groups and params. Whole windows of prompt rows take the
  // tiled attention (kernels/ops/flash_attention.ts): no per-row re-reads of K and V (issue 12).
  const kernels = { ...createLayerKernels(gpu, config), attention: createFlashAttention(gpu) };
  let scratch: Scratch | null = null;
  const ensure = () => scratch ??= createScratch(gpu, config, rows, storage);
  const release = () => {
    scratch?.buffers.forEach((b) => b.destroy());
    scratch?.pack?.destroy();
    scratch?.unpack?.destroy();
    scratch = null;
  };
  return {
    rows,
    storage,
    hiddenBytes,
    get bytes() {
      return scratch ? scratch.buffers.reduce((sum, b) => sum + b.size, 0) : 0;
    },
    createHidden: (label) => createStorage(gpu, hiddenBytes, label),
    store(x, hidden) {
      if (x.length !== n) throw new Error(`Cannot store ${x.length} values as a window of ${n}`);
      const sc = ensure();
      writeBuffer(gpu, sc.s.x, x);
      const enc = gpu.device.createCommandEncoder({ label: "store hidden" });
      if (sc.pack) {
        const pass = enc.beginComputePass();
        sc.pack.encode(pass);
        pass.end();
      }
      enc.copyBufferToBuffer(sc.h16 ?? sc.s.x, 0, hidden, 0, hiddenBytes);
      gpu.device.queue.submit([enc.finish()]);
    },
    async read(hidden) {
      const raw = await readBuffer(gpu, hidden, hiddenBytes);
      return storage === "f16" ? Float32Array.from(new Float16Array(raw)) : new Float32Array(raw);
    },
    bind: (layer, stage) => bindLayer(gpu, config, kernels, ensure(), { L: layer, stage, hiddenBytes }),
    bindFinal(finalNorm) {
      const sc = ensure();
      const { s } = sc;
      const norm = kernels.norm.bind({
        x: s.x,
        weight: finalNorm,
        y: s.xn,
        rows,
        dim: config.dim,
        eps: config.normEps,
      });
      return boundSteps(gpu, sc, {
        stage: "final",
        steps: [...(sc.unpack ? [sc.unpack] : []), norm],
        hiddenBytes,
        capture: [s.xn, config.dim],
      });
    },
    release,
    destroy: release,
  };
}

function createScratch(gpu: Gpu, c: ModelConfig, rows: number, storage: HiddenStorage): Scratch {
  // One layer's KV cache of `rows` positions is all a window needs.
  const s = createForwardState(gpu, { ...c, nLayers: 1, seqLen: rows }, { maxRows: rows });
  writeBuffer(gpu, s.state, new Uint32Array(4)); // pos 0 for every window
  const buffers = forwardStateBuffers(s);
  if (storage === "f32") return { s, h16: null, unpack: null, pack: null, buffers };
  const n = rows * c.dim;
  const h16 = createStorage(gpu, n * 2, "hidden window f16");
  return {
    s,
    h16,
    unpack: createF16Convert(gpu, { to: "f32" }).bind({ src: h16, dst: s.x, n }),
    pack: createF16Convert(gpu, { to: "f16" }).bind({ src: s.x, dst: h16, n }),
    buffers: [...buffers, h16],
  };
}

function bindLayer(
  gpu: Gpu,
  c: ModelConfig,
  kernels: LayerKernels,
  sc: Scratch,
  { L, stage, hiddenBytes }: { L: GpuLayer; stage: LayerStage; hiddenBytes: number },
): BoundLayer {
  const { s, pack, unpack } = sc;
  const rows = s.maxRows;
  const layer = bindDecoderLayer(gpu, c, kernels, L, s, {
    rows,
    kv: { kCache: s.kCache[0], vCache: s.vCache[0], seqLen: rows },
    stage,
    // Continue from the stored (rounded) residual, which is what "down" and "out" will start from.
    betweenHalves: pack && unpack ? [pack, unpack] : [],
    // A whole window is a prefill (rows × nKvHeads workgroups fill a GPU at real sizes); one split
    // also keeps the kernel from allocating split scratch that the pipeline's accounting cannot see.
    attentionSplits: 1,
  });
  const steps: Encodable[] = [
    ...(unpack ? [unpack] : []),
    ...layer.steps.map((st) => st.step),
    ...(stage === "out" && pack ? [pack] : []),
  ];
  const capture: [GPUBuffer | null, number] = [layer.capture?.buffer ?? null, layer.capture?.cols ?? 0];
  return boundSteps(gpu, sc, { stage, steps, hiddenBytes, capture });
}

/** Wraps recorded steps as a {@link BoundLayer}: copy the window in, run, and store back for "gateUp"/"out". */
function boundSteps(
  gpu: Gpu,
  sc: Scratch,
  { stage, steps, hiddenBytes, capture: [capture, captureCols] }: {
    stage: LayerStage | "final";
    steps: Encodable[];
    hiddenBytes: number;
    capture: [GPUBuffer | null, number];
  },
): BoundLayer {
  const writesHidden = stage === "gateUp" || stage === "out";
  const slot = sc.h16 ?? sc.s.x; // where the window sits in the scratch, in storage format
  const bound: BoundLayer = {
    stage,
    capture,
    captureCols,
    writesHidden,
    encode(enc, hidden, timestampWrites) {
      enc.copyBufferToBuffer(hidden, 0, slot, 0, hiddenBytes);
      const pass = enc.beginComputePass(timestampWrites ? { timestampWrites } : {});
      for (const step of steps) step.encode(pass);
      pass.end();
      if (writesHidden) enc.copyBufferToBuffer(slot, 0, hidden, 0, hiddenBytes);
    },
    run(hidden) {
      const enc = gpu.device.createCommandEncoder({ label: `layer ${stage}` });
      bound.encode(enc, hidden);
      gpu.device.queue.submit([enc.finish()]);
    },
  };
  return bound;
}
