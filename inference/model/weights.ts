/**
 * Llama weights on the host: Hugging Face tensor names mapped onto a llama2.c-style struct, every tensor checked
 * for presence, dtype and exact shape before any data is read.
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

/** One transformer block's weights. */
export interface LayerWeights {
  attnNorm: HostTensor; // (dim)
  wq: HostTensor; // (nHeads·headDim, dim)
  wk: HostTensor; // (kvDim, dim)
  wv: HostTensor; // (kvDim, dim)
  wo: HostTensor; // (dim, nHeads·headDim)
  mlpNorm: HostTensor; // (dim)
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

/** Field → (Hugging Face suffix under `model.layers.{i}.`, expected shape). */
function layerSpec(c: ModelConfig): Record<keyof LayerWeights, [string, number[]]> {
  const q = c.nHeads * c.headDim;
  return {
    attnNorm: ["input_layernorm.weight", [c.dim]],
    wq: ["self_attn.q_proj.weight", [q, c.dim]],
    wk: ["self_attn.k_proj.weight", [c.kvDim, c.dim]],
    wv: ["self_attn.v_proj.weight", [c.kvDim, c.dim]],
    wo: ["self_attn.o_proj.weight", [c.dim, q]],
    mlpNorm: ["post_attention_layernorm.weight", [c.dim]],
    wGate: ["mlp.gate_proj.weight", [c.hiddenDim, c.dim]],
    wUp: ["mlp.up_proj.weight", [c.hiddenDim, c.dim]],
    wDown: ["mlp.down_proj.weight", [c.dim, c.hiddenDim]],
  };
}

/** Hugging Face name of layer `i`'s tensor for `field`, e.g. `model.layers.3.mlp.up_proj.weight`. */
export function layerTensorName(config: ModelConfig, i: number, field: keyof LayerWeights): string {
  return `model.layers.${i}.${layerSpec(config)[field][0]}`;
}

/** Hugging Face names of the non-layer tensors. */
export const TOKEN_EMBEDDING = "model.embed_tokens.weight";
export const FINAL_NORM = "model.norm.weight";
export const LM_HEAD = "lm_head.weight";

/** Every tensor the model needs with its expected shape; lm_head only when untied. */
function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const out = new Map<string, number[]>([[TOKEN_EMBEDDING, [c.vocabSize, c.dim]]]);
  for (let i = 0; i < c.nLayers; i++) {
    for (const [suffix, shape] of Object.values(layerSpec(c))) out.set(`model.layers.${i}.${suffix}`, shape);
  }
  out.set(FINAL_NORM, [c.dim]);
  if (!c.tieWordEmbeddings) out.set(LM_HEAD, [c.vocabSize, c.dim]);
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
  const source: LlamaWeightSource = {
    config,
    tensorCount,
    loadTokenEmbedding: () => load(TOKEN_EMBEDDING),
    async loadLayer(i) {
      if (!Number.isInteger(i) || i < 0 || i >= config.nLayers) {
        throw new RangeError(`Cannot load layer ${i}: the model has layers 0 to ${config.nLayers - 1}`);
      }
      const layer: Partial<LayerWeights> = {};
      for (const [field, [suffix]] of Object.entries(layerSpec(config))) {
        layer[field as keyof LayerWeights] = await load(`model.layers.${i}.${suffix}`);
      }
      return layer as LayerWeights;
    },
    loadFinalNorm: () => load(FINAL_NORM),
    async loadLmHead(tokenEmbedding) {
      if (!config.tieWordEmbeddings) return await load(LM_HEAD);
      return tokenEmbedding ?? await load(TOKEN_EMBEDDING);
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
