/**
 * Decoder weights on the host: Hugging Face tensor names mapped onto a llama2.c-style struct, every tensor
 * checked for presence, dtype and exact shape before any data is read. Which tensors a layer has follows the
 * architecture (model_arch.ts): Qwen2's q/k/v biases, Qwen3's and Gemma's q/k norms, Gemma's four norms. Gemma's
 * (1 + w) norm weights are returned with the 1 added ({@link foldNormOffset}), so the kernels apply x̂·w alike.
 *
 * Layers load one at a time (`loadLayer`) because the quantizer streams them and a large model does not fit in
 * host memory as f32; `readTensorRaw` keeps the checkpoint dtype for a future f16 upload path.
 */
import type { ModelConfig } from "./model_config.ts";
import { type Dtype, openSafetensorsModel, type SafetensorsModel, toFloat32 } from "../formats/mod.ts";

/** One tensor as f32 with its row-major shape. */
export interface HostTensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

/** One tensor's bytes as stored in the checkpoint. */
export interface RawTensor {
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

/** A transformer block's norm weights and biases: what stays full precision when it is quantized. */
export interface LayerVectors<T> {
  attnNorm: T; // (dim): before attention
  mlpNorm: T; // (dim): before the MLP (Gemma's pre_feedforward_layernorm)
  postAttnNorm?: T; // (dim): Gemma's post_attention_layernorm, on the attention output
  postMlpNorm?: T; // (dim): Gemma's post_feedforward_layernorm, on the MLP output
  qNorm?: T; // (headDim): per-head norm of q (Qwen3, Gemma 3)
  kNorm?: T; // (headDim)
  bq?: T; // (nHeads·headDim): q_proj bias (Qwen2)
  bk?: T; // (kvDim)
  bv?: T; // (kvDim)
}

/** The vector fields of a layer in file order. */
export const LAYER_VECTORS = [
  "attnNorm",
  "mlpNorm",
  "postAttnNorm",
  "postMlpNorm",
  "qNorm",
  "kNorm",
  "bq",
  "bk",
  "bv",
] as const satisfies readonly (keyof LayerVectors<unknown>)[];

/** A vector field. */
export type VectorField = (typeof LAYER_VECTORS)[number];

/** One transformer block's weights. */
export interface LayerWeights extends LayerVectors<HostTensor> {
  wq: HostTensor; // (nHeads·headDim, dim)
  wk: HostTensor; // (kvDim, dim)
  wv: HostTensor; // (kvDim, dim)
  wo: HostTensor; // (dim, nHeads·headDim)
  wGate: HostTensor; // (hiddenDim, dim)
  wUp: HostTensor; // (hiddenDim, dim)
  wDown: HostTensor; // (dim, hiddenDim)
}

/** The whole model's weights. */
export interface LlamaWeights {
  tokenEmbedding: HostTensor; // (vocabSize, dim)
  layers: LayerWeights[]; // nLayers
  finalNorm: HostTensor; // (dim)
  lmHead: HostTensor; // (vocabSize, dim); the same object as tokenEmbedding when tied
}

/** The dtypes a weight may be stored in; all widen exactly to f32. */
const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16"];

/** Field → (Hugging Face suffix under `<prefix>layers.{i}.`, expected shape), for the fields this model has. */
function layerSpec(c: ModelConfig): Partial<Record<keyof LayerWeights, [string, number[]]>> {
  const q = c.nHeads * c.headDim;
  return {
    attnNorm: ["input_layernorm.weight", [c.dim]],
    wq: ["self_attn.q_proj.weight", [q, c.dim]],
    wk: ["self_attn.k_proj.weight", [c.kvDim, c.dim]],
    wv: ["self_attn.v_proj.weight", [c.kvDim, c.dim]],
    wo: ["self_attn.o_proj.weight", [c.dim, q]],
    // Gemma names its pre-MLP norm pre_feedforward_layernorm; its post_attention_layernorm is postAttnNorm.
    mlpNorm: [c.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight", [
      c.dim,
    ]],
    wGate: ["mlp.gate_proj.weight", [c.hiddenDim, c.dim]],
    wUp: ["mlp.up_proj.weight", [c.hiddenDim, c.dim]],
    wDown: ["mlp.down_proj.weight", [c.dim, c.hiddenDim]],
    ...(c.sandwichNorms
      ? {
        postAttnNorm: ["post_attention_layernorm.weight", [c.dim]],
        postMlpNorm: ["post_feedforward_layernorm.weight", [c.dim]],
      }
      : {}),
    ...(c.qkNorm
      ? { qNorm: ["self_attn.q_norm.weight", [c.headDim]], kNorm: ["self_attn.k_norm.weight", [c.headDim]] }
      : {}),
    ...(c.qkvBias
      ? {
        bq: ["self_attn.q_proj.bias", [q]],
        bk: ["self_attn.k_proj.bias", [c.kvDim]],
        bv: ["self_attn.v_proj.bias", [c.kvDim]],
      }
      : {}),
  };
}

/** The vector fields this model's layers have (attnNorm and mlpNorm always). */
export function layerVectorFields(config: ModelConfig): VectorField[] {
  const spec = layerSpec(config);
  return LAYER_VECTORS.filter((f) => spec[f] !== undefined);
}

/** Hugging Face name of layer `i`'s tensor for `field`, e.g. `model.layers.3.mlp.up_proj.weight`. */
export function layerTensorName(config: ModelConfig, i: number, field: keyof LayerWeights): string {
  const spec = layerSpec(config)[field];
  if (!spec) throw new Error(`Cannot name tensor "${field}" of layer ${i}: ${config.architecture} has none`);
  return `${config.tensorPrefix}layers.${i}.${spec[0]}`;
}

/** Hugging Face names of the non-layer tensors. */
export function modelTensorNames(
  config: ModelConfig,
): { embedding: string; finalNorm: string; lmHead: string } {
  const p = config.tensorPrefix;
  // The older multimodal layout keeps lm_head beside the text model ("language_model.lm_head.weight").
  const head = p === "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight";
  return { embedding: `${p}embed_tokens.weight`, finalNorm: `${p}norm.weight`, lmHead: head };
}

/**
 * A norm weight as the kernels apply it: Gemma's RMSNorm computes x̂·(1 + w) in f32, so w + 1 (rounded to
 * f32, as `1.0 + weight.float()` is) replaces w; other models' weights are returned as they are.
 */
export function foldNormOffset(config: ModelConfig, t: HostTensor): HostTensor {
  if (!config.normWeightOffset) return t;
  return Object.freeze({ data: t.data.map((w) => Math.fround(1 + w)), shape: t.shape });
}

/** Whether a layer field is a norm weight (what {@link foldNormOffset} applies to). */
export function isNormField(field: keyof LayerWeights): boolean {
  return field.endsWith("Norm");
}

/** Every tensor the model needs with its expected shape; lm_head only when untied. */
function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const names = modelTensorNames(c);
  const out = new Map<string, number[]>([[names.embedding, [c.vocabSize, c.dim]]]);
  for (let i = 0; i < c.nLayers; i++) {
    for (const [suffix, shape] of Object.values(layerSpec(c))) {
      out.set(`${c.tensorPrefix}layers.${i}.${suffix}`, shape);
    }
  }
  out.set(names.finalNorm, [c.dim]);
  if (!c.tieWordEmbeddings) out.set(names.lmHead, [c.vocabSize, c.dim]);
  return out;
}

/** Options for loading weights. */
export interface LoadOptions {
  /** Called after each tensor is read (progress reporting). */
  onTensor?: (name: string, loaded: number, total: number) => void;
}

/** Open, validated weights whose tensors are read on demand. */
export interface LlamaWeightSource {
  readonly config: ModelConfig;
  /** Number of tensors `loadAll` reads (lm_head only when untied). */
  readonly tensorCount: number;
  loadTokenEmbedding(): Promise<HostTensor>;
  loadLayer(i: number): Promise<LayerWeights>;
  loadFinalNorm(): Promise<HostTensor>;
  /** The output projection: the token embedding itself when tied (pass it to avoid a second read). */
  loadLmHead(tokenEmbedding?: HostTensor): Promise<HostTensor>;
  /** Reads any tensor of the checkpoint in its stored dtype, without conversion. */
  readTensorRaw(name: string): Promise<RawTensor>;
  /** Reads every tensor as f32. */
  loadAll(): Promise<LlamaWeights>;
  close(): void;
}

/**
 * Opens a model folder's safetensors and checks every expected tensor's presence, dtype and shape against
 * `config` (headers only; no tensor data is read yet).
 *
 * @param dir the model folder
 * @param config its validated config
 * @param options progress callback
 * @returns a source of layers and tensors; call `close()` when done
 */
export async function openLlamaWeights(
  dir: string,
  config: ModelConfig,
  { onTensor }: LoadOptions = {},
): Promise<LlamaWeightSource> {
  const st = await openSafetensorsModel(dir);
  const expected = expectedTensors(config);
  try {
    for (const [name, shape] of expected) checkTensor(st, name, shape);
  } catch (err) {
    st.close();
    throw err;
  }
  let loaded = 0;
  const load = async (name: string): Promise<HostTensor> => {
    const { entry } = st.tensors.get(name)!;
    const data = toFloat32(await st.readTensor(name), entry.dtype);
    onTensor?.(name, ++loaded, expected.size);
    return Object.freeze({ data, shape: entry.shape });
  };
  return makeSource(st, config, expected.size, load);
}

function makeSource(
  st: SafetensorsModel,
  config: ModelConfig,
  tensorCount: number,
  load: (name: string) => Promise<HostTensor>,
): LlamaWeightSource {
  const names = modelTensorNames(config);
  const source: LlamaWeightSource = {
    config,
    tensorCount,
    loadTokenEmbedding: () => load(names.embedding),
    async loadLayer(i) {
      if (!Number.isInteger(i) || i < 0 || i >= config.nLayers) {
        throw new RangeError(`Cannot load layer ${i}: the model has layers 0 to ${config.nLayers - 1}`);
      }
      const layer: Partial<LayerWeights> = {};
      for (const [f, [suffix]] of Object.entries(layerSpec(config))) {
        const field = f as keyof LayerWeights;
        const t = await load(`${config.tensorPrefix}layers.${i}.${suffix}`);
        layer[field] = isNormField(field) ? foldNormOffset(config, t) : t;
      }
      return layer as LayerWeights;
    },
    loadFinalNorm: async () => foldNormOffset(config, await load(names.finalNorm)),
    async loadLmHead(tokenEmbedding) {
      if (!config.tieWordEmbeddings) return await load(names.lmHead);
      return tokenEmbedding ?? await load(names.embedding);
    },
    async readTensorRaw(name) {
      const bytes = await st.readTensor(name);
      const { dtype, shape } = st.tensors.get(name)!.entry;
      return { dtype, shape, bytes };
    },
    async loadAll() {
      const tokenEmbedding = await source.loadTokenEmbedding();
      const layers: LayerWeights[] = [];
      for (let i = 0; i < config.nLayers; i++) layers.push(await source.loadLayer(i));
      const finalNorm = await source.loadFinalNorm();
      return { tokenEmbedding, layers, finalNorm, lmHead: await source.loadLmHead(tokenEmbedding) };
    },
    close: () => st.close(),
  };
  return source;
}

function checkTensor(st: SafetensorsModel, name: string, shape: number[]): void {
  const hit = st.tensors.get(name);
  if (!hit) throw new Error(`Cannot load tensor "${name}" from "${st.dir}": missing from the checkpoint`);
  const { file, entry } = hit;
  const what = `Cannot load tensor "${name}" from "${file.path}"`;
  if (!FLOAT_DTYPES.includes(entry.dtype)) {
    throw new Error(
      `${what}: dtype ${entry.dtype} is not a float type (expected ${FLOAT_DTYPES.join(", ")})`,
    );
  }
  if (entry.shape.length !== shape.length || entry.shape.some((d, k) => d !== shape[k])) {
    throw new Error(`${what}: expected shape [${shape.join(", ")}], got [${entry.shape.join(", ")}]`);
  }
}

/**
 * Loads every weight of a Llama model folder as f32, after checking all tensors' presence, dtype and shape.
 *
 * @param dir the model folder
 * @param config its validated config (from `loadModelConfig`)
 * @param options progress callback
 * @returns the weights; `lmHead` is `tokenEmbedding` when embeddings are tied
 * @example
 * ```ts ignore
 * const config = await loadModelConfig(dir);
 * const weights = await loadLlamaWeights(dir, config);
 * console.log(weights.layers[0].wq.shape);
 * ```
 */
export async function loadLlamaWeights(
  dir: string,
  config: ModelConfig,
  options: LoadOptions = {},
): Promise<LlamaWeights> {
  const source = await openLlamaWeights(dir, config, options);
  try {
    return await source.loadAll();
  } finally {
    source.close();
  }
}
