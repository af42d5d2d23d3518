/**
 * Loads a Hugging Face model folder onto the GPU: config, tokenizer, chat template and weights,
 * streamed one decoder layer at a time so host memory holds at most one layer in f32.
 */
import { basename, resolve } from "node:path";
import type { Gpu } from "../kernels/gpu.ts";
import { uploadStorage } from "../kernels/buffers.ts";
import { loadModelConfig, type ModelConfig } from "./model_config.ts";
import { openLlamaWeights } from "./weights.ts";
import { loadTokenizer } from "./tokenizer.ts";
import { loadChatTemplate } from "./chat_template.ts";
import { uploadDense, uploadLinear, type WeightType } from "./linear.ts";
import type { GpuLayer, GpuWeights } from "./model.ts";
import { createSequenceRunner } from "./generate.ts";
import type { LoadedModel } from "./engine.ts";
import { uploadHostLayer } from "./layer_runner.ts";
import { parseQuantization } from "./quant_format.ts";
import { uploadQuantizedWeights } from "./quant_folder.ts";

export interface LoadModelOptions {
  /** Dense weight storage on the GPU; "auto" keeps f32 checkpoints in f32 and stores 16-bit ones as f16. */
  weightType?: WeightType | "auto";
  /** Name reported by /v1/models (default: the folder name). */
  modelId?: string;
  /** Prompt rows per prefill forward (bounds activation memory). */
  maxPrefillRows?: number;
  /** Progress callback: "layer 3/32" etc. */
  onProgress?: (detail: string) => void;
  /** Quantized folders: run the fused kernels (default) or dequantize to dense weights at load. */
  fused?: boolean;
  /** Quantized folders: activations of the affine decode GEMVs (default "q8", see linear.ts). */
  decodeActivations?: "q8" | "f32";
}

/** Loads everything the engine needs from `dir`. */
export async function loadModel(gpu: Gpu, dir: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const config = await loadModelConfig(dir);
  const tokenizer = await loadTokenizer(dir);
  const chatTemplate = await loadChatTemplate(dir);
  const weightType = resolveWeightType(config, options.weightType ?? "auto");
  const weights = await uploadModelWeights(gpu, dir, config, {
    weightType,
    onProgress: options.onProgress,
    fused: options.fused ?? true,
    decodeActivations: options.decodeActivations ?? "q8",
  });
  const runner = createSequenceRunner(gpu, config, weights, {
    maxPrefillRows: options.maxPrefillRows ?? 256,
  });
  return {
    gpu,
    modelId: options.modelId ?? basename(resolve(dir)),
    config,
    weights,
    tokenizer,
    chatTemplate,
    runner,
  };
}

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
