/**
 * Loads a Hugging Face model folder for the engine: config, tokenizer, chat template, the weights on the GPU
 * (inference/model/upload.ts). A folder with `leanserve-manifest.json` is
 * checked against it first; a folder this project quantized must have one (a half-written one never does).
 */
import { basename, resolve } from "node:path";
import type { Gpu } from "../../kernels/core/mod.ts";
import { type Manifest, MANIFEST_FILE, verifyManifest } from "../formats/mod.ts";
import {
  loadModelConfig,
  type ModelConfig,
  parseQuantization,
  resolveWeightType,
  uploadModelWeights,
  type WeightType,
} from "../model/mod.ts";
import { loadChatTemplate, loadTokenizer } from "../text/mod.ts";
import type { LoadedModel } from "./engine.ts";
import type { ModelQuantization } from "./types.ts";

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
  /** --chat-template: a template file or the template itself, instead of the folder's (text/chat_template.ts) */
  chatTemplate?: string;
}

/** Loads everything the engine needs from `dir`. */
export async function loadModel(gpu: Gpu, dir: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  options.onProgress?.("verifying checksums");
  const manifest = await verifyManifest(dir);
  const config = await loadModelConfig(dir);
  const quantization = describeQuantization(config, manifest);
  if (quantization && !manifest && (config.quantization as Record<string, unknown>).leanserve) {
    throw new Error(
      `Cannot load "${dir}": it was quantized by leanserve but has no ${MANIFEST_FILE}, so it may be ` +
        "half-written; quantize it again",
    );
  }
  const tokenizer = await loadTokenizer(dir);
  const chatTemplate = await loadChatTemplate(dir, options.chatTemplate);
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
    dir: resolve(dir),
    quantization,
  };
}

/** Method, bits and group of a quantized folder, and the perplexity its manifest recorded. */
function describeQuantization(config: ModelConfig, manifest: Manifest | null): ModelQuantization | null {
  const q = parseQuantization(config.quantization);
  if (!q) return null;
  const raw = config.quantization as Record<string, unknown>;
  const group = typeof raw.group_size === "number" && raw.group_size > 0 ? raw.group_size : 0;
  const ppl = (manifest?.eval as { ppl_after?: unknown } | null | undefined)?.ppl_after;
  return { method: q.method, bits: q.bits, groupSize: group, ppl: typeof ppl === "number" ? ppl : null };
}
