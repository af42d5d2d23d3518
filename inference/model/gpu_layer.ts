/**
 * One decoder layer's weights on the GPU for the quantizer (quantize_model.ts) and the loader: upload from
 * the host as dense weights, swap a linear for its dequantized Q, size and free them.
 */
import { type Gpu, uploadStorage } from "../../kernels/core/mod.ts";
import { type GpuLinear, linearBuffers, uploadLinear, type WeightType } from "./linear.ts";
import type { GpuLayer } from "./decoder_layer.ts";
import type { GpuWeights } from "./model.ts";
import { LAYER_VECTORS, type LayerVectors, type LayerWeights } from "./weights.ts";

/** The seven linear fields of a GpuLayer. */
export const LINEARS = ["wq", "wk", "wv", "wo", "wGate", "wUp", "wDown"] as const;

/**
 * Uploads a layer's norm weights and biases (those it has) as f32.
 * @param gpu the device
 * @param host the layer's vectors
 * @param i its index (for labels)
 * @returns the GPU buffers by field
 */
export function uploadLayerVectors(
  gpu: Gpu,
  host: LayerVectors<{ data: Float32Array }>,
  i: number,
): LayerVectors<GPUBuffer> {
  const out: Partial<LayerVectors<GPUBuffer>> = {};
  for (const f of LAYER_VECTORS) {
    const t = host[f];
    if (t) out[f] = uploadStorage(gpu, t.data, `layers.${i}.${f}`);
  }
  return out as LayerVectors<GPUBuffer>;
}

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
    ...uploadLayerVectors(gpu, L, i),
    index: i,
    wq: linear("wq"),
    wk: linear("wk"),
    wv: linear("wv"),
    wo: linear("wo"),
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

/** Bytes of GPU memory a weight holds. */
export function linearBytes(l: GpuLinear): number {
  return linearBuffers(l).reduce((s, b) => s + b.size, 0);
}

/** The norm weights and biases a layer holds. */
export function layerVectorBuffers(L: GpuLayer): GPUBuffer[] {
  return LAYER_VECTORS.flatMap((f) => L[f] ? [L[f]] : []);
}

/** Bytes of GPU memory a layer holds. */
export function gpuLayerBytes(L: GpuLayer): number {
  const vectors = layerVectorBuffers(L).reduce((s, b) => s + b.size, 0);
  return vectors + LINEARS.reduce((s, f) => s + linearBytes(L[f]), 0);
}

/** Destroys every buffer of a layer. */
export function destroyGpuLayer(L: GpuLayer): void {
  layerVectorBuffers(L).forEach((b) => b.destroy());
  for (const f of LINEARS) linearBuffers(L[f]).forEach((b) => b.destroy());
}

/** Every GPU buffer of a model's weights, each once (quantized folders share act-order permutations). */
export function gpuWeightsBuffers(w: GpuWeights): GPUBuffer[] {
  const all = new Set<GPUBuffer>([w.tokenEmbedding, w.finalNorm, ...linearBuffers(w.lmHead)]);
  for (const L of w.layers) {
    layerVectorBuffers(L).forEach((b) => all.add(b));
    for (const f of LINEARS) linearBuffers(L[f]).forEach((b) => all.add(b));
  }
  return [...all];
}
