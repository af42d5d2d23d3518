/**
 * Which Hugging Face architectures are served and what each changes in the decoder layer, read from config.json
 * (transformers' modeling_{llama,mistral,qwen2,qwen3,gemma3}.py):
 *   Llama, Mistral   the base layer; Mistral (and a Llama config with one) may set a sliding window
 *   Qwen2            biases on q, k and v
 *   Qwen3            RMSNorm of q and k per head before RoPE; head_dim independent of hidden/heads
 *   Gemma 3 (text)   (1 + w) RMSNorm weights; norms of the attention and MLP outputs before their residual adds;
 *                    embeddings × √hidden; GeGLU with the tanh GELU; q/k norms; interleaved sliding (local) and
 *                    full (global) layers with their own RoPE bases; query_pre_attn_scalar; soft caps if set
 */
import {
  type Fail,
  isObject,
  type Json,
  positiveInt,
  positiveNumber,
  positiveOrNull,
} from "./config_fields.ts";

/** Hugging Face `architectures` names that load (the text model only, for Gemma3ForConditionalGeneration). */
export const SUPPORTED_ARCHITECTURES: readonly string[] = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "Qwen2ForCausalLM",
  "Qwen3ForCausalLM",
  "Gemma3ForCausalLM",
  "Gemma3ForConditionalGeneration",
];

/** A family of decoder layers. */
export type ModelFamily = "llama" | "mistral" | "qwen2" | "qwen3" | "gemma3";

/** A layer's attention: over every earlier position, or a sliding window of them. */
export type LayerType = "full" | "sliding";

const FAMILY_OF_ARCH: Record<string, ModelFamily> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "mistral",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
  Gemma3ForCausalLM: "gemma3",
  Gemma3ForConditionalGeneration: "gemma3",
};

/** model_type → family; Llama and Mistral configs name each other's type. */
const FAMILY_OF_TYPE: Record<string, ModelFamily> = {
  llama: "llama",
  mistral: "mistral",
  qwen2: "qwen2",
  qwen3: "qwen3",
  gemma3_text: "gemma3",
  gemma3: "gemma3",
};

/** What the architecture changes in the layer; part of ModelConfig. */
export interface ArchFeatures {
  /** The Hugging Face architecture served, e.g. "Qwen3ForCausalLM". */
  readonly architecture: string;
  readonly family: ModelFamily;
  /** q/k/v projections carry biases (Qwen2). */
  readonly qkvBias: boolean;
  /** RMSNorm of every q and k head before RoPE (Qwen3, Gemma 3). */
  readonly qkNorm: boolean;
  /** Norms of the attention and MLP outputs before their residual adds (Gemma 3). */
  readonly sandwichNorms: boolean;
  /** 1 when norms compute x̂·(1 + w) (Gemma); the loaders fold it into the weights. */
  readonly normWeightOffset: 0 | 1;
  /** The MLP gate's activation. */
  readonly activation: "silu" | "gelu_tanh";
  /** Embeddings are multiplied by this (Gemma: √hidden in the checkpoint's dtype), else 1. */
  readonly embedScale: number;
  /** Attention scores are q·k times this: 1/√headDim, or query_pre_attn_scalar^−½ (Gemma). */
  readonly attnScale: number;
  /** Attention scores s → c·tanh(s/c) with this c, or null. */
  readonly attnSoftcap: number | null;
  /** Logits l → c·tanh(l/c) with this c, or null. */
  readonly finalSoftcap: number | null;
  /** Positions a sliding layer attends to (itself included), or null when no layer slides. */
  readonly slidingWindow: number | null;
  /** Per layer. */
  readonly layerTypes: readonly LayerType[];
}

/**
 * The architecture of a config.json, and the object holding the text model's fields (Gemma3ForConditionalGeneration
 * nests them in `text_config`).
 * @throws `Cannot load model: unsupported architecture "X" (supported: ...)`
 */
export function resolveArchitecture(raw: Json): { architecture: string; family: ModelFamily; text: Json } {
  const archs = Array.isArray(raw.architectures) ? raw.architectures : [];
  const type = typeof raw.model_type === "string" ? raw.model_type : null;
  const architecture = archs.length > 0
    ? archs.find((a) => SUPPORTED_ARCHITECTURES.includes(a))
    : Object.keys(FAMILY_OF_ARCH).find((a) => type !== null && FAMILY_OF_ARCH[a] === FAMILY_OF_TYPE[type]);
  if (architecture === undefined) {
    const name = archs.length > 0 ? String(archs[0]) : type ?? "(none)";
    throw new Error(
      `Cannot load model: unsupported architecture "${name}" (supported: ${
        SUPPORTED_ARCHITECTURES.join(", ")
      })`,
    );
  }
  if (architecture !== "Gemma3ForConditionalGeneration") {
    return { architecture, family: FAMILY_OF_ARCH[architecture], text: raw };
  }
  // The text model's fields with the outer file's quantization and dtype (written at the top level).
  const inner = isObject(raw.text_config) ? raw.text_config : {};
  const text = { model_type: "gemma3_text", dtype: raw.dtype ?? raw.torch_dtype, ...inner };
  return { architecture, family: "gemma3", text: { ...text, quantization_config: raw.quantization_config } };
}

/**
 * Reads the architecture's layer features.
 * @param raw the text model's config
 * @param family from {@link resolveArchitecture}
 * @param shape sizes already validated, and the checkpoint dtype
 * @param fail the caller's error
 */
export function parseArchFeatures(
  raw: Json,
  { architecture, family }: { architecture: string; family: ModelFamily },
  shape: { dim: number; headDim: number; nLayers: number; seqLen: number; torchDtype: string | null },
  fail: Fail,
): ArchFeatures {
  const gemma = family === "gemma3";
  const type = raw.model_type;
  if (typeof type !== "string" || !(type in FAMILY_OF_TYPE)) {
    fail(
      `unsupported model_type ${JSON.stringify(type)} (expected ${Object.keys(FAMILY_OF_TYPE).join(", ")})`,
    );
  }
  const llamaLike = (f: ModelFamily) => f === "llama" || f === "mistral";
  const typeFamily = FAMILY_OF_TYPE[type as string];
  if (typeFamily !== family && !(llamaLike(typeFamily) && llamaLike(family))) {
    fail(`model_type ${JSON.stringify(type)} does not match architecture ${architecture}`);
  }
  // Qwen2 hard-codes q/k/v biases; elsewhere a bias (also on o or the MLP) is not read.
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (raw[key] === true && !(family === "qwen2" && key === "attention_bias")) {
      fail(`${key} true is not supported`);
    }
  }
  const act = gemma
    ? raw.hidden_activation ?? raw.hidden_act ?? "gelu_pytorch_tanh"
    : raw.hidden_act ?? "silu";
  const wantAct = gemma ? "gelu_pytorch_tanh" : "silu";
  if (act !== wantAct) fail(`hidden_act ${JSON.stringify(act)} is not supported (expected "${wantAct}")`);
  const windows = parseLayerTypes(raw, family, shape, fail);
  return {
    architecture,
    family,
    qkvBias: family === "qwen2",
    qkNorm: family === "qwen3" || gemma,
    sandwichNorms: gemma,
    normWeightOffset: gemma ? 1 : 0,
    activation: gemma ? "gelu_tanh" : "silu",
    // transformers casts the f32 scale to the weights' dtype (√3072 = 55.43 becomes 55.5 in bf16).
    embedScale: gemma ? roundToDtype(Math.sqrt(shape.dim), shape.torchDtype) : 1,
    attnScale:
      (gemma
        ? positiveNumber(raw.query_pre_attn_scalar ?? 256, "query_pre_attn_scalar", fail)
        : shape.headDim) **
        -0.5,
    attnSoftcap: gemma ? positiveOrNull(raw.attn_logit_softcapping, "attn_logit_softcapping", fail) : null,
    finalSoftcap: gemma ? positiveOrNull(raw.final_logit_softcapping, "final_logit_softcapping", fail) : null,
    ...windows,
  };
}

/** The sliding window and which layers use it, as each family's configuration class derives them. */
function parseLayerTypes(
  raw: Json,
  family: ModelFamily,
  { nLayers, seqLen }: { nLayers: number; seqLen: number },
  fail: Fail,
): { slidingWindow: number | null; layerTypes: LayerType[] } {
  const qwen = family === "qwen2" || family === "qwen3";
  const rawWindow = qwen
    ? (raw.use_sliding_window === true ? raw.sliding_window : null)
    : family === "gemma3"
    ? raw.sliding_window ?? 4096
    : raw.sliding_window;
  let window = rawWindow == null ? null : positiveInt({ sliding_window: rawWindow }, "sliding_window", fail);
  // A window as long as the context never masks anything.
  if (window !== null && window >= seqLen) window = null;
  if (window === null) return { slidingWindow: null, layerTypes: Array(nLayers).fill("full") };
  const listed = raw.layer_types;
  if (Array.isArray(listed)) {
    if (listed.length !== nLayers) fail(`layer_types has ${listed.length} entries for ${nLayers} layers`);
    const types = listed.map((t) =>
      t === "full_attention"
        ? "full"
        : t === "sliding_attention"
        ? "sliding"
        : fail(`layer_types entry ${JSON.stringify(t)} is not supported`)
    );
    return { slidingWindow: window, layerTypes: types as LayerType[] };
  }
  const pattern = positiveInt(
    { sliding_window_pattern: raw.sliding_window_pattern ?? raw._sliding_window_pattern ?? 6 },
    "sliding_window_pattern",
    fail,
  );
  const firstSliding = qwen ? positiveInt(raw, "max_window_layers", fail, 28) : 0;
  const types = Array.from(
    { length: nLayers },
    (_, i): LayerType =>
      family === "gemma3"
        ? ((i + 1) % pattern === 0 ? "full" : "sliding")
        : i >= firstSliding
        ? "sliding"
        : "full",
  );
  return { slidingWindow: window, layerTypes: types };
}

/** x rounded to the checkpoint's float dtype (bfloat16, float16), else to f32. */
function roundToDtype(x: number, dtype: string | null): number {
  const f32 = new Float32Array([x]);
  if (dtype === "float16") return new Float16Array([x])[0];
  if (dtype !== "bfloat16") return f32[0];
  const bits = new Uint32Array(f32.buffer);
  // Round to nearest even on the upper 16 bits (x is finite and positive here).
  bits[0] = (bits[0] + 0x7fff + ((bits[0] >>> 16) & 1)) & 0xffff0000;
  return f32[0];
}
