/**
 * Random-weight models at real shapes, built directly on the GPU, for speed runs only (every figure
 * made with them says "random weights"). The numbers they produce are meaningless; the bytes moved
 * and the kernels run are the real ones.
 */
import { createStorage, type Gpu, uploadStorage } from "../kernels/core/mod.ts";
import { createFillRandom } from "../kernels/ops/mod.ts";
import {
  type DenseLinear,
  type GpuLayer,
  type GpuLinear,
  type GpuWeights,
  type ModelConfig,
  parseModelConfig,
  weightBytes,
  type WeightType,
} from "../inference/model/mod.ts";
import { affineRowWords, lutCodeWords } from "../kernels/matmul/mod.ts";

/** config.json fields of the shapes we benchmark. */
export const PRESETS: Record<string, Record<string, unknown>> = {
  "llama3-8b": {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 128256,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
  },
  // For checking that the benchmarks run at all (lavapipe); its figures mean nothing.
  "tiny": {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 256,
    intermediate_size: 512,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 512,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
  },
  "lq-49m": {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 512,
    intermediate_size: 1408,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    vocab_size: 49152,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
  },
};

/** The ModelConfig of a preset. */
export function presetConfig(name: string): ModelConfig {
  const raw = PRESETS[name];
  if (!raw) throw new Error(`Cannot build random model "${name}": known shapes are ${Object.keys(PRESETS)}`);
  return parseModelConfig(raw, null, `preset ${name}`);
}

/** How the decoder layers' linears are stored: dense, or quantized (random codes, `bits` wide, group 128). */
export type RandomFormat =
  | { kind: "dense" }
  | { kind: "affine" | "lut"; bits: 2 | 3 | 4; activations?: "q8" | "f32" };

/**
 * Allocates and fills every weight on the GPU (norm weights are 1, matrices uniform ±0.02; quantized
 * linears get random codes and random f16 scale/zero or LUT entries). Embedding and LM head stay dense.
 */
export async function randomWeights(
  gpu: Gpu,
  c: ModelConfig,
  weightType: WeightType,
  format: RandomFormat = { kind: "dense" },
): Promise<GpuWeights> {
  const f16 = weightType === "f16";
  const fill = createFillRandom(gpu, { f16 });
  const fillWords = createFillRandom(gpu, { f16: false }); // random f32 bit patterns = random code words
  const fillHalves = createFillRandom(gpu, { f16: true });
  let seed = 1;
  const encoder = gpu.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  const matrix = (rows: number, cols: number, label: string): GPUBuffer => {
    const buffer = createStorage(gpu, rows * cols * weightBytes(weightType), label);
    fill.bind({ out: buffer, count: rows * cols, seed: seed++, scale: 0.02 }).encode(pass);
    return buffer;
  };
  const words = (count: number, label: string, halves = false): GPUBuffer => {
    const buffer = createStorage(gpu, count * 4, label);
    (halves ? fillHalves : fillWords).bind({
      out: buffer,
      count: halves ? 2 * count : count,
      seed: seed++,
      scale: 0.02,
    })
      .encode(pass);
    return buffer;
  };
  const layerLinear = (outDim: number, inDim: number, label: string): GpuLinear => {
    if (format.kind === "dense") return linear(outDim, inDim, label);
    const bits = format.bits;
    if (format.kind === "affine") {
      const nGroups = Math.ceil(inDim / 128);
      const weights = {
        bits,
        outDim,
        inDim,
        groupSize: 128,
        nGroups,
        codes: words(outDim * affineRowWords(bits, inDim), `${label}.codes`),
        scaleZero: words(outDim * nGroups, `${label}.scaleZero`, true),
        perm: null,
      };
      return { format: "affine", outDim, inDim, weights, activations: format.activations ?? "q8" };
    }
    const weights = {
      bits,
      outDim,
      inDim,
      codes: words(lutCodeWords(bits, outDim, inDim), `${label}.codes`),
      lut: words(outDim * 2 ** bits / 2, `${label}.lut`, true),
    };
    return {
      format: "lut",
      outDim,
      inDim,
      weights,
      activations: format.activations ?? "q8",
    };
  };
  const linear = (outDim: number, inDim: number, label: string): DenseLinear => {
    if (outDim * inDim * weightBytes(weightType) > gpu.maxBindingBytes) {
      throw new Error(`Cannot build "${label}" in one panel; use f16`);
    }
    return {
      format: "dense",
      weightType,
      outDim,
      inDim,
      panels: [{ buffer: matrix(outDim, inDim, label), rowStart: 0, rows: outDim }],
    };
  };
  const ones = uploadStorage(gpu, new Float32Array(c.dim).fill(1), "norm weight");
  const q = c.nHeads * c.headDim;
  const layers: GpuLayer[] = Array.from({ length: c.nLayers }, (_, i) => ({
    index: i,
    attnNorm: ones,
    wq: layerLinear(q, c.dim, `layers.${i}.wq`),
    wk: layerLinear(c.kvDim, c.dim, `layers.${i}.wk`),
    wv: layerLinear(c.kvDim, c.dim, `layers.${i}.wv`),
    wo: layerLinear(c.dim, q, `layers.${i}.wo`),
    mlpNorm: ones,
    wGate: layerLinear(c.hiddenDim, c.dim, `layers.${i}.wGate`),
    wUp: layerLinear(c.hiddenDim, c.dim, `layers.${i}.wUp`),
    wDown: layerLinear(c.dim, c.hiddenDim, `layers.${i}.wDown`),
  }));
  const lmHead = linear(c.vocabSize, c.dim, "lmHead");
  const tokenEmbedding = c.tieWordEmbeddings
    ? lmHead.panels[0].buffer
    : matrix(c.vocabSize, c.dim, "embedding");
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
  return { tokenEmbedding, embeddingType: weightType, layers, finalNorm: ones, lmHead };
}

/**
 * "dense", "affine4" (group 128), "lut3", ...; a suffix sets the engine's activations, q8 by default as for
 * loaded folders (`--decode-activations`): "affine4f32" and "lut4f32" keep them exact f32.
 */
export function parseFormat(text: string): RandomFormat {
  const m = /^(affine|lut)([234])(q8|f32)?$/.exec(text);
  if (m) {
    const activations = m[3] ? { activations: m[3] as "q8" | "f32" } : {};
    return { kind: m[1] as "affine" | "lut", bits: Number(m[2]) as 2 | 3 | 4, ...activations };
  }
  if (text !== "dense") {
    throw new Error(`Invalid --format "${text}": expected dense, affineN or lutN (N = 2, 3, 4)`);
  }
  return { kind: "dense" };
}
