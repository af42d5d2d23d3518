/**
 * Model hyperparameters from a Hugging Face folder (`config.json` + optional `generation_config.json`), renamed
 * to the house dimension vocabulary (llama2.c's `Config`) and validated once at load.
 *
 * Only the Llama architecture is served: `LlamaForCausalLM`, or model_type llama/mistral without an effective
 * sliding window. RoPE follows transformers' `modeling_rope_utils.py` ("default" and "llama3" only).
 */
import { join } from "node:path";

/** Llama 3.1 style frequency-dependent RoPE scaling (`rope_type: "llama3"`). */
export interface Llama3RopeScaling {
  readonly type: "llama3";
  readonly factor: number;
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  readonly originalMaxPositionEmbeddings: number;
}

/** Validated, frozen model hyperparameters. */
export interface ModelConfig {
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
  readonly ropeTheta: number;
  /** null for plain RoPE ("default"). */
  readonly ropeScaling: Llama3RopeScaling | null;
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

type Json = Record<string, unknown>;

/** The `architectures` values of config.json this server runs; any other is refused at load, by name. */
export const SUPPORTED_ARCHITECTURES: readonly string[] = ["LlamaForCausalLM", "MistralForCausalLM"];

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
  return parseModelConfig(raw!, gen, path);
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
export function parseModelConfig(raw: Json, gen: Json | null, source = "config.json"): ModelConfig {
  const fail = (msg: string): never => {
    throw new Error(`Cannot load model config "${source}": ${msg}`);
  };
  checkArchitecture(raw, fail);
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
  const rope = parseRope(raw, fail);
  const config: ModelConfig = {
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads,
    headDim,
    kvDim: nKvHeads * headDim,
    vocabSize: int("vocab_size"),
    seqLen: int("max_position_embeddings"),
    normEps: positiveNumber(raw.rms_norm_eps ?? 1e-6, "rms_norm_eps", fail),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    tieWordEmbeddings: bool(raw, "tie_word_embeddings", false, fail),
    torchDtype: stringOrNull(raw.dtype ?? raw.torch_dtype ?? null, "dtype", fail),
    bosTokenId: tokenIds(gen?.bos_token_id ?? raw.bos_token_id ?? null, "bos_token_id", fail)[0] ?? null,
    eosTokenIds: Object.freeze(tokenIds(gen?.eos_token_id ?? raw.eos_token_id ?? null, "eos_token_id", fail)),
    quantization: raw.quantization_config ?? null,
  };
  return Object.freeze(config);
}

type Fail = (msg: string) => never;

function checkArchitecture(raw: Json, fail: Fail): void {
  const archs = raw.architectures;
  if (archs != null && (!Array.isArray(archs) || !archs.some((a) => SUPPORTED_ARCHITECTURES.includes(a)))) {
    const named = Array.isArray(archs) && archs.length > 0
      ? archs.map((a) => JSON.stringify(a)).join(", ")
      : JSON.stringify(archs);
    fail(`unsupported architecture ${named}; supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`);
  }
  if (typeof raw.model_type !== "string" || !["llama", "mistral"].includes(raw.model_type)) {
    fail(`unsupported model_type ${JSON.stringify(raw.model_type)} (expected "llama" or "mistral")`);
  }
  // A window at least as long as the context never masks anything, so only a shorter one is rejected.
  const window = raw.sliding_window;
  const maxPos = raw.max_position_embeddings;
  if (window != null && !(typeof window === "number" && typeof maxPos === "number" && window >= maxPos)) {
    fail(`sliding_window ${JSON.stringify(window)} is not supported`);
  }
  if (raw.hidden_act != null && raw.hidden_act !== "silu") {
    fail(`hidden_act ${JSON.stringify(raw.hidden_act)} is not supported (expected "silu")`);
  }
  // The weight loader reads no bias tensors.
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (raw[key] === true) fail(`${key} true is not supported`);
  }
}

/**
 * transformers 5 writes `rope_parameters: { rope_type, rope_theta, ... }`; older versions a top-level
 * `rope_theta` plus `rope_scaling: { rope_type | type, ... }` (null for plain RoPE).
 */
function parseRope(raw: Json, fail: Fail): { theta: number; scaling: Llama3RopeScaling | null } {
  const params = (raw.rope_parameters ?? raw.rope_scaling ?? null) as Json | null;
  const key = raw.rope_parameters != null ? "rope_parameters" : "rope_scaling";
  if (params !== null && (typeof params !== "object" || Array.isArray(params))) {
    fail(`${key} is not an object`);
  }
  const theta = positiveNumber(raw.rope_theta ?? params?.rope_theta ?? 10000, "rope_theta", fail);
  const type = params?.rope_type ?? params?.type ?? "default";
  if (type === "default") return { theta, scaling: null };
  if (type !== "llama3") {
    fail(`unsupported ${key}.rope_type ${JSON.stringify(type)} (expected "default" or "llama3")`);
  }
  const num = (k: string) => positiveNumber(params![k], `${key}.${k}`, fail);
  const scaling: Llama3RopeScaling = Object.freeze({
    type: "llama3",
    factor: num("factor"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    originalMaxPositionEmbeddings: num("original_max_position_embeddings"),
  });
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    fail(`${key}.high_freq_factor must exceed low_freq_factor`);
  }
  return { theta, scaling };
}

function positiveInt(raw: Json, key: string, fail: Fail, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) fail(`${key} is missing`);
  if (!Number.isSafeInteger(v) || (v as number) <= 0) {
    fail(`${key} ${JSON.stringify(v)} is not a positive integer`);
  }
  return v as number;
}

function positiveNumber(v: unknown, key: string, fail: Fail): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    fail(`${key} ${JSON.stringify(v)} is not a positive number`);
  }
  return v as number;
}

function bool(raw: Json, key: string, fallback: boolean, fail: Fail): boolean {
  const v = raw[key] ?? fallback;
  if (typeof v !== "boolean") fail(`${key} ${JSON.stringify(v)} is not a boolean`);
  return v as boolean;
}

function stringOrNull(v: unknown, key: string, fail: Fail): string | null {
  if (v !== null && typeof v !== "string") fail(`${key} ${JSON.stringify(v)} is not a string`);
  return v as string | null;
}

/** A token id field may be null, one id, or a list of ids. */
function tokenIds(v: unknown, key: string, fail: Fail): number[] {
  const ids = v === null ? [] : Array.isArray(v) ? v : [v];
  if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    fail(`${key} ${JSON.stringify(v)} is not a token id or list of token ids`);
  }
  return ids as number[];
}

/**
 * RoPE inverse frequencies, computed step by step in f32 as transformers does:
 * `1 / (theta ** (arange(0, headDim, 2) / headDim))`, then the llama3 rule of `_compute_llama3_parameters`.
 * Every step here is correctly rounded to f32; torch's CPU `pow` (SLEEF, ≤ 1 ulp) and numpy's differ from that
 * by one ulp on some entries (13 of 64 for headDim 128, theta 5e5), so bit equality with torch is not promised.
 *
 * @param config the model config (headDim, ropeTheta, ropeScaling)
 * @returns inverse frequencies, length headDim / 2
 */
export function ropeInvFreq(
  config: Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">,
): Float32Array {
  const f = Math.fround;
  const { headDim, ropeTheta, ropeScaling: s } = config;
  const inv = new Float32Array(headDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(f(ropeTheta) ** f((2 * i) / headDim)));
  if (!s) return inv;
  // Python scalars meet f32 tensors, so each is rounded to f32 before the f32 op.
  const oldLen = f(s.originalMaxPositionEmbeddings);
  const lowWavelen = f(s.originalMaxPositionEmbeddings / s.lowFreqFactor);
  const highWavelen = f(s.originalMaxPositionEmbeddings / s.highFreqFactor);
  const span = f(s.highFreqFactor - s.lowFreqFactor);
  const factor = f(s.factor);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = f(f(2 * Math.PI) / inv[i]);
    // Long wavelengths (low frequencies) are divided by factor, short ones kept, the middle band blended.
    const scaled = wavelen > lowWavelen ? f(inv[i] / factor) : inv[i];
    if (wavelen < highWavelen || wavelen > lowWavelen) {
      inv[i] = scaled;
      continue;
    }
    const smooth = f(f(f(oldLen / wavelen) - f(s.lowFreqFactor)) / span);
    inv[i] = f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
  }
  return inv;
}
