/**
 * Model hyperparameters from a Hugging Face folder (`config.json` + optional `generation_config.json`), renamed
 * to the house dimension vocabulary (llama2.c's `Config`) and validated once at load. The architectures served
 * and what each changes in the layer are read by model_arch.ts, RoPE by rope_config.ts.
 */
import { join } from "node:path";
import { openSafetensorsModel } from "../formats/mod.ts";
import { bool, type Fail, type Json, positiveInt, positiveNumber, stringOrNull } from "./config_fields.ts";
import { type ArchFeatures, parseArchFeatures, resolveArchitecture } from "./model_arch.ts";
import { parseRopes, type RopeParams, type RopeScaling } from "./rope_config.ts";

export {
  type ArchFeatures,
  type LayerType,
  type ModelFamily,
  SUPPORTED_ARCHITECTURES,
} from "./model_arch.ts";
export {
  type LinearRopeScaling,
  type Llama3RopeScaling,
  ropeInvFreq,
  type RopeParams,
  type RopeScaling,
} from "./rope_config.ts";

/** Validated, frozen model hyperparameters. */
export interface ModelConfig extends ArchFeatures {
  /** hidden_size: residual stream width. */
  readonly dim: number;
  /** intermediate_size: MLP width. */
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  /** num_key_value_heads (GQA); equals nHeads when absent. */
  readonly nKvHeads: number;
  /** head_dim, or dim / nHeads when absent. */
  readonly headDim: number;
  /** nKvHeads · headDim: the width of one K or V row. */
  readonly kvDim: number;
  readonly vocabSize: number;
  /** max_position_embeddings: the context length. */
  readonly seqLen: number;
  /** rms_norm_eps. */
  readonly normEps: number;
  /** RoPE base of the full-attention layers (all layers but Gemma's sliding ones). */
  readonly ropeTheta: number;
  /** null for plain RoPE ("default"). */
  readonly ropeScaling: RopeScaling | null;
  /** The sliding layers' own RoPE (Gemma 3's rope_local_base_freq), or null when they share the global one. */
  readonly localRope: RopeParams | null;
  /**
   * Where the text model's tensors live: "model." (`model.layers.0....`), or for Gemma3ForConditionalGeneration
   * "model.language_model." (transformers ≥ 4.52) or "language_model.model." (older checkpoints).
   */
  readonly tensorPrefix: string;
  /** lm_head shares the token embedding. */
  readonly tieWordEmbeddings: boolean;
  /** The checkpoint's declared dtype ("float32", "bfloat16", ...), or null. */
  readonly torchDtype: string | null;
  readonly bosTokenId: number | null;
  /** Generation stops on any of these; from generation_config.json, else config.json. */
  readonly eosTokenIds: readonly number[];
  /** `quantization_config` as written, for the loader of quantized checkpoints; null when absent. */
  readonly quantization: unknown;
}

/**
 * Reads and validates `config.json` (and `generation_config.json` when present) from a model folder.
 *
 * @param dir the model folder
 * @returns the frozen config
 * @example
 * ```ts ignore
 * const config = await loadModelConfig("../shared/models/stories260K");
 * console.log(config.dim, config.nLayers);
 * ```
 */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, "config.json");
  const raw = await readJson(path, true);
  const gen = await readJson(join(dir, "generation_config.json"), false);
  const config = parseModelConfig(raw!, gen, path);
  if (config.architecture !== "Gemma3ForConditionalGeneration") return config;
  // Older multimodal checkpoints keep the text model under "language_model.model.".
  const st = await openSafetensorsModel(dir).catch(() => null);
  const older = st?.tensors.has("language_model.model.embed_tokens.weight") ?? false;
  st?.close();
  return older ? Object.freeze({ ...config, tensorPrefix: "language_model.model." }) : config;
}

async function readJson(path: string, required: boolean): Promise<Json | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!required && err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read model config "${path}": ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot read model config "${path}": invalid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`Cannot read model config "${path}": not a JSON object`);
  }
  return json as Json;
}

/**
 * Validates parsed `config.json` contents; `loadModelConfig` without the file system.
 *
 * @param raw the parsed config.json
 * @param gen the parsed generation_config.json, or null
 * @param source the name used in error messages
 * @returns the frozen config
 */
export function parseModelConfig(rawConfig: Json, gen: Json | null, source = "config.json"): ModelConfig {
  const fail = (msg: string): never => {
    throw new Error(`Cannot load model config "${source}": ${msg}`);
  };
  const arch = resolveArchitecture(rawConfig);
  const raw = arch.text;
  const int = (key: string, fallback?: number) => positiveInt(raw, key, fail, fallback);
  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  const nKvHeads = int("num_key_value_heads", nHeads);
  if (nHeads % nKvHeads !== 0) {
    fail(`num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  }
  if (raw.head_dim == null && dim % nHeads !== 0) {
    fail(`hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads} and head_dim is absent`);
  }
  const headDim = int("head_dim", dim / nHeads);
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even for RoPE`);
  const nLayers = int("num_hidden_layers");
  const seqLen = int("max_position_embeddings");
  const torchDtype = stringOrNull(raw.dtype ?? raw.torch_dtype ?? null, "dtype", fail);
  const features = parseArchFeatures(raw, arch, { dim, headDim, nLayers, seqLen, torchDtype }, fail);
  const gemma = arch.family === "gemma3";
  const rope = parseRopes(raw, gemma ? 1e6 : 10000, fail);
  const config: ModelConfig = {
    ...features,
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    kvDim: nKvHeads * headDim,
    vocabSize: int("vocab_size"),
    seqLen,
    normEps: positiveNumber(raw.rms_norm_eps ?? 1e-6, "rms_norm_eps", fail),
    ropeTheta: rope.global.theta,
    ropeScaling: rope.global.scaling,
    localRope: rope.local ?? (gemma ? { theta: 10000, scaling: null } : null),
    tensorPrefix: arch.architecture === "Gemma3ForConditionalGeneration" ? "model.language_model." : "model.",
    // Gemma ties its embeddings unless told otherwise.
    tieWordEmbeddings: bool(raw, "tie_word_embeddings", gemma, fail),
    torchDtype,
    bosTokenId: tokenIds(gen?.bos_token_id ?? raw.bos_token_id ?? null, "bos_token_id", fail)[0] ?? null,
    eosTokenIds: Object.freeze(tokenIds(gen?.eos_token_id ?? raw.eos_token_id ?? null, "eos_token_id", fail)),
    quantization: raw.quantization_config ?? null,
  };
  return Object.freeze(config);
}

/** A token id field may be null, one id, or a list of ids. */
function tokenIds(v: unknown, key: string, fail: Fail): number[] {
  const ids = v === null ? [] : Array.isArray(v) ? v : [v];
  if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    fail(`${key} ${JSON.stringify(v)} is not a token id or list of token ids`);
  }
  return ids as number[];
}
