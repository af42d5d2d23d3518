/**
 * Uploads a model's weights to the GPU: a full-precision checkpoint streamed one decoder layer at a time (host
 * memory holds at most one layer in f32), or a quantized folder through the fused kernels.
 */
import { type Gpu, uploadStorage } from "../../kernels/core/mod.ts";
import { uploadHostLayer } from "./gpu_layer.ts";
import { uploadDense, uploadLinear, type WeightType } from "./linear.ts";
import type { GpuLayer, GpuWeights } from "./model.ts";
import type { ModelConfig } from "./model_config.ts";
import { uploadQuantizedWeights } from "./quant_folder.ts";
import { parseQuantization } from "./quant_format.ts";
import { openLlamaWeights } from "./weights.ts";

/** The storage type "auto" picks for a checkpoint. */
export function resolveWeightType(config: ModelConfig, wanted: WeightType | "auto"): WeightType {
  if (wanted !== "auto") return wanted;
  return config.torchDtype === "float32" || config.torchDtype === null ? "f32" : "f16";
}

/**
 * Uploads a full-precision checkpoint, or a quantized folder (ours or AutoGPTQ) whose linears run through
 * the fused kernels (or, with `fused: false`, dequantized to dense weights).
 */
export function uploadModelWeights(
  gpu: Gpu,
  dir: string,
  config: ModelConfig,
  options: {
    weightType: WeightType;
    fused?: boolean;
    decodeActivations?: "q8" | "f32";
    onProgress?: ((detail: string) => void) | undefined;
  },
): Promise<GpuWeights> {
  return parseQuantization(config.quantization)
    ? uploadQuantizedWeights(gpu, dir, config, options)
    : uploadWeights(gpu, dir, config, options);
}

/**
 * Uploads every weight of a Llama checkpoint.
 * @returns the GPU weights; the host copies are dropped layer by layer
 */
export async function uploadWeights(
  gpu: Gpu,
  dir: string,
  config: ModelConfig,
  { weightType, onProgress }: { weightType: WeightType; onProgress?: ((detail: string) => void) | undefined },
): Promise<GpuWeights> {
  const source = await openLlamaWeights(dir, config);
  try {
    const embedding = await source.loadTokenEmbedding();
    const tokenEmbedding = uploadDense(gpu, embedding.data, weightType, "tokenEmbedding");
    const layers: GpuLayer[] = [];
    for (let i = 0; i < config.nLayers; i++) {
      onProgress?.(`loading layer ${i + 1}/${config.nLayers}`);
      layers.push(uploadHostLayer(gpu, await source.loadLayer(i), i, { weightType }));
    }
    const finalNorm = uploadStorage(gpu, (await source.loadFinalNorm()).data, "finalNorm");
    const head = config.tieWordEmbeddings ? embedding : await source.loadLmHead(embedding);
    const lmHead = uploadLinear(gpu, head.data, config.vocabSize, config.dim, {
      weightType,
      label: "lmHead",
    });
    return { tokenEmbedding, embeddingType: weightType, layers, finalNorm, lmHead };
  } finally {
    source.close();
  }
}
