/**
 * Loads a Hugging Face model folder for the engine: config, tokenizer, chat template, the weights on the GPU
 * (inference/model/upload.ts).
 */
import { basename, resolve } from "node:path";
import type { Gpu } from "../../kernels/core/mod.ts";
import { loadModelConfig, resolveWeightType, uploadModelWeights, type WeightType } from "../model/mod.ts";
import { loadChatTemplate, loadTokenizer } from "../text/mod.ts";
import type { LoadedModel } from "./engine.ts";

export interface LoadModelOptions {
  /** Dense weight storage on the GPU; "auto" keeps f32 checkpoints in f32 and stores 16-bit ones as f16. */
  weightType?: WeightType | "auto";
  /** Name reported by /v1/models (default: the folder name). */
  modelId?: string;
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
  return {
    gpu,
    modelId: options.modelId ?? basename(resolve(dir)),
    config,
    weights,
    tokenizer,
    chatTemplate,
  };
}
