/**
 * Runs ONE decoder layer over a window of hidden states with the model's own kernels, stopping where the
 * quantizer needs an input captured (leanquant.md §5, gptq's `llama_sequential`):
 *   stage "qkv"    → xn = rmsnorm(x)·attnNorm                   (the input of q, k, v)
 *   stage "o"      → attn = attention(rope(xn·Wqᵀ), rope(xn·Wkᵀ), xn·Wvᵀ)  (the input of o)
 *   stage "gateUp" → x += attn·Woᵀ; xn = rmsnorm(x)·mlpNorm     (the input of gate, up)
 *   stage "down"   → act = silu(xn·Wgateᵀ)·(xn·Wupᵀ)             (the input of down)
 *   stage "out"    → x += act·Wdownᵀ, the layer output
 * Each window is one sequence at positions 0..rows−1 with its own KV cache (the layer's cache is simply
 * overwritten by the next window). The window is copied into a scratch residual, so inputs stay intact.
 * The steps mirror inference/model.ts `bindForward`; tests check the two agree. Helpers at the end upload,
 * swap and free one layer's f32 weights for the quantizer.
 */
import type { Encodable, Gpu } from "../kernels/gpu.ts";
import { uploadStorage, writeBuffer } from "../kernels/buffers.ts";
import { createRmsNorm } from "../kernels/rms_norm.ts";
import { createRope } from "../kernels/rope.ts";
import { createKvAppend } from "../kernels/kv_append.ts";
import { createAttention } from "../kernels/attention.ts";
import { createSiluMul } from "../kernels/silu_mul.ts";
import { bindLinear, type GpuLinear, linearBuffers, uploadLinear, type WeightType } from "./linear.ts";
import { createForwardState, type ForwardState, forwardStateBuffers, type GpuLayer } from "./model.ts";
import type { ModelConfig } from "./model_config.ts";
import type { LayerWeights } from "./weights.ts";

/** Where a layer run stops; every stage but "out" captures the input of a group of linears. */
export type LayerStage = "qkv" | "o" | "gateUp" | "down" | "out";

/** The stages in forward order. */
export const LAYER_STAGES: readonly LayerStage[] = ["qkv", "o", "gateUp", "down", "out"];

/** A layer bound up to one stage: reusable for every window until the layer's weights change. */
export interface BoundLayer {
  readonly stage: LayerStage;
  /** The captured activation, (rows, captureCols) f32, valid after `run` (null for "out"). */
  readonly capture: GPUBuffer | null;
  readonly captureCols: number;
  /**
   * Submits one window: input (rows, dim) f32 → scratch, the layer up to the stage, and for "out" the
   * result → output (rows, dim) f32 (may be the input buffer itself).
   */
  run(input: GPUBuffer, output?: GPUBuffer): void;
}

/** Scratch activations and the one-layer KV cache for windows of `rows` tokens. */
export interface LayerRunner {
  readonly rows: number;
  /** Bytes of GPU memory the scratch holds. */
  readonly bytes: number;
  /** Binds `layer`'s kernels up to `stage` (rebind after replacing a weight). */
  bind(layer: GpuLayer, stage: LayerStage): BoundLayer;
  destroy(): void;
}

/**
 * Allocates the scratch for one decoder layer.
 * @param gpu the device
 * @param config the model
 * @param options rows per window (≤ config.seqLen)
 * @returns the runner
 * @example
 * ```ts ignore
 * const runner = createLayerRunner(gpu, config, { rows: 2048 });
 * const qkv = runner.bind(layer, "qkv");
 * qkv.run(hidden[w]);       // qkv.capture now holds rmsnorm(hidden[w])·attnNorm
 * ```
 */
export function createLayerRunner(gpu: Gpu, config: ModelConfig, { rows }: { rows: number }): LayerRunner {
  if (!Number.isInteger(rows) || rows < 1 || rows > config.seqLen) {
    throw new Error(
      `Cannot run a layer over ${rows} rows: expected 1 to the context length ${config.seqLen}`,
    );
  }
  // One layer's KV cache is all a window needs.
  const s = createForwardState(gpu, { ...config, nLayers: 1 }, { maxRows: rows });
  writeBuffer(gpu, s.state, new Uint32Array(4)); // pos 0 for every window
  const buffers = forwardStateBuffers(s);
  return {
    rows,
    bytes: buffers.reduce((sum, b) => sum + b.size, 0),
    bind: (layer, stage) => bindLayer(gpu, config, s, layer, stage, rows),
    destroy: () => buffers.forEach((b) => b.destroy()),
  };
}

function bindLayer(
  gpu: Gpu,
  c: ModelConfig,
  s: ForwardState,
  L: GpuLayer,
  stage: LayerStage,
  rows: number,
): BoundLayer {
  const upTo = LAYER_STAGES.indexOf(stage);
  const norm = createRmsNorm(gpu);
  const eps = c.normEps;
  const steps: Encodable[] = [norm.bind({ x: s.x, weight: L.attnNorm, y: s.xn, rows, dim: c.dim, eps })];
  if (upTo >= 1) {
    const rope = createRope(gpu);
    steps.push(
      bindLinear(gpu, L.wq, { x: s.xn, y: s.q, rows }),
      bindLinear(gpu, L.wk, { x: s.xn, y: s.k, rows }),
      bindLinear(gpu, L.wv, { x: s.xn, y: s.v, rows }),
      rope.bind({ x: s.q, invFreq: s.invFreq, state: s.state, rows, nHeads: c.nHeads, headDim: c.headDim }),
      rope.bind({ x: s.k, invFreq: s.invFreq, state: s.state, rows, nHeads: c.nKvHeads, headDim: c.headDim }),
      createKvAppend(gpu).bind({
        k: s.k,
        v: s.v,
        kCache: s.kCache[0],
        vCache: s.vCache[0],
        state: s.state,
        rows,
        kvDim: c.kvDim,
        seqLen: c.seqLen,
      }),
      createAttention(gpu).bind({
        q: s.q,
        kCache: s.kCache[0],
        vCache: s.vCache[0],
        out: s.attn,
        state: s.state,
        rows,
        seqLen: c.seqLen,
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        headDim: c.headDim,
      }),
    );
  }
  if (upTo >= 2) {
    steps.push(
      bindLinear(gpu, L.wo, { x: s.attn, y: s.x, rows, accumulate: true }),
      norm.bind({ x: s.x, weight: L.mlpNorm, y: s.xn, rows, dim: c.dim, eps }),
    );
  }
  if (upTo >= 3) {
    steps.push(
      bindLinear(gpu, L.wGate, { x: s.xn, y: s.gate, rows }),
      bindLinear(gpu, L.wUp, { x: s.xn, y: s.up, rows }),
      createSiluMul(gpu).bind({ gate: s.gate, up: s.up, out: s.act, n: rows * c.hiddenDim }),
    );
  }
  if (upTo >= 4) steps.push(bindLinear(gpu, L.wDown, { x: s.act, y: s.x, rows, accumulate: true }));
  const captures: Record<LayerStage, [GPUBuffer | null, number]> = {
    qkv: [s.xn, c.dim],
    o: [s.attn, c.nHeads * c.headDim],
    gateUp: [s.xn, c.dim],
    down: [s.act, c.hiddenDim],
    out: [null, 0],
  };
  const [capture, captureCols] = captures[stage];
  const bytes = rows * c.dim * 4;
  return {
    stage,
    capture,
    captureCols,
    run(input, output) {
      const enc = gpu.device.createCommandEncoder({ label: `layer ${stage}` });
      enc.copyBufferToBuffer(input, 0, s.x, 0, bytes);
      const pass = enc.beginComputePass();
      for (const step of steps) step.encode(pass);
      pass.end();
      if (output) enc.copyBufferToBuffer(s.x, 0, output, 0, bytes);
      gpu.device.queue.submit([enc.finish()]);
    },
  };
}

/** The seven linear fields of a GpuLayer. */
const LINEARS = ["wq", "wk", "wv", "wo", "wGate", "wUp", "wDown"] as const;

/**
 * Uploads one host layer as dense weights (f32 by default: the quantizer runs layers in f32).
 * @param gpu the device
 * @param L the layer's weights
 * @param i its index (for labels)
 * @param options dense storage type
 * @returns the GPU layer; free it with {@link destroyGpuLayer}
 */
export function uploadHostLayer(
  gpu: Gpu,
  L: LayerWeights,
  i: number,
  { weightType = "f32" }: { weightType?: WeightType } = {},
): GpuLayer {
  const linear = (field: (typeof LINEARS)[number]) =>
    uploadLinear(gpu, L[field].data, L[field].shape[0], L[field].shape[1], {
      weightType,
      label: `layers.${i}.${field}`,
    });
  return {
    attnNorm: uploadStorage(gpu, L.attnNorm.data, `layers.${i}.attnNorm`),
    wq: linear("wq"),
    wk: linear("wk"),
    wv: linear("wv"),
    wo: linear("wo"),
    mlpNorm: uploadStorage(gpu, L.mlpNorm.data, `layers.${i}.mlpNorm`),
    wGate: linear("wGate"),
    wUp: linear("wUp"),
    wDown: linear("wDown"),
  };
}

/**
 * Swaps a dense weight for Q (destroying the old panels): uploaded from the host, or a GPU buffer used as one
 * panel when it fits a binding.
 * @param old the weight being replaced
 * @param Q (outDim, inDim) f32
 * @returns the new weight
 */
export function replaceLinear(
  gpu: Gpu,
  old: GpuLinear,
  Q: Float32Array | GPUBuffer,
  label: string,
): GpuLinear {
  const { outDim, inDim } = old;
  linearBuffers(old).forEach((b) => b.destroy());
  if (Q instanceof Float32Array) return uploadLinear(gpu, Q, outDim, inDim, { weightType: "f32", label });
  if (Q.size > gpu.maxBindingBytes) {
    throw new Error(`Cannot use "${label}" as one panel: exceeds the binding limit`);
  }
  return {
    format: "dense",
    weightType: "f32",
    outDim,
    inDim,
    panels: [{ buffer: Q, rowStart: 0, rows: outDim }],
  };
}

/** Bytes of GPU memory a dense weight holds. */
export function linearBytes(l: GpuLinear): number {
  return linearBuffers(l).reduce((s, b) => s + b.size, 0);
}

/** Bytes of GPU memory a layer holds. */
export function gpuLayerBytes(L: GpuLayer): number {
  return L.attnNorm.size + L.mlpNorm.size + LINEARS.reduce((s, f) => s + linearBytes(L[f]), 0);
}

/** Destroys every buffer of a layer. */
export function destroyGpuLayer(L: GpuLayer): void {
  L.attnNorm.destroy();
  L.mlpNorm.destroy();
  for (const f of LINEARS) linearBuffers(L[f]).forEach((b) => b.destroy());
}
