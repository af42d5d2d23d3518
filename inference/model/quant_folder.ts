/**
 * Writing and opening a quantized model folder (formats in quant_format.ts).
 *
 * The writer streams: one safetensors shard per decoder layer (its norms and biases copied byte for byte, its
 * quantized linears), written as soon as the layer is quantized, so host memory holds one layer's results;
 * then a last shard with the embedding, the final norm and lm_head (copied byte for byte), `model.safetensors.index.json`, config.json with `quantization_config`,
 * quantize_config.json (affine formats, for AutoGPTQ tooling) and the tokenizer files. Everything goes to a
 * temporary sibling folder that is renamed onto the destination at the end, so a crash never leaves a
 * half-written model behind.
 */
import { basename, dirname, join, resolve } from "node:path";
import { type Gpu, uploadStorage } from "../../kernels/core/mod.ts";
import { openSafetensorsModel, type TensorToWrite, toFloat32, writeSafetensors } from "../formats/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import {
  foldNormOffset,
  type HostTensor,
  isNormField,
  layerTensorName,
  layerVectorFields,
  type LayerVectors,
  type LlamaWeightSource,
  modelTensorNames,
} from "./weights.ts";
import { uploadLayerVectors } from "./gpu_layer.ts";
import { type GpuLinear, uploadDense, uploadLinear, type WeightType } from "./linear.ts";
import { uploadAffine, uploadLut } from "../../kernels/matmul/mod.ts";
import { packAffine, packLut, type QuantizedLinear } from "../../quant/mod.ts";
import type { GpuWeights } from "./model.ts";
import {
  dequantizeLinear,
  formatOf,
  LINEAR_FIELDS,
  linearTensors,
  LM_HEAD_PREFIX,
  lmHeadFormat,
  modulePrefix,
  type ParsedQuantization,
  parseQuantization,
  quantizationConfig,
  type QuantizationInfo,
  type QuantizedLayer,
  readQuantizedLinear,
} from "./quant_format.ts";

/** Non-weight files a served model needs, copied when present. */
const AUX_FILES = [
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "chat_template.jinja",
  "chat_template.json",
  "tokenizer.model",
];

/** A folder being written; call `finish()` to publish it or `abort()` to drop it. */
export interface QuantizedWriter {
  /** Writes layer i's shard: its norms and biases (copied) and its quantized linears. Layers come in order. */
  writeLayer(i: number, layer: QuantizedLayer): Promise<void>;
  /** Keeps the quantized LM head for the last shard (required when `info.lmHead` is set). */
  writeLmHead(q: QuantizedLinear): void;
  /** Writes the rest and renames the folder into place; returns how many zero-points were stored wrapped. */
  finish(): Promise<{ wrappedZeros: number; bytes: number }>;
  abort(): Promise<void>;
}

/**
 * Starts writing a quantized copy of the model read by `source` (from folder `srcDir`) to `outDir`.
 * @param source the open full-precision weights (for the tensors that are copied)
 * @param options srcDir, outDir (must not exist yet) and what to record in quantization_config
 * @returns the writer
 */
export async function createQuantizedWriter(
  source: LlamaWeightSource,
  { srcDir, outDir, info }: { srcDir: string; outDir: string; info: QuantizationInfo },
): Promise<QuantizedWriter> {
  const out = resolve(outDir);
  if (await exists(out)) throw new Error(`Cannot write the quantized model to "${out}": it already exists`);
  const tmp = await Deno.makeTempDir({ dir: dirname(out), prefix: `.${basename(out)}.partial-` });
  await Deno.chmod(tmp, 0o755); // makeTempDir creates 0700; the published folder is an ordinary one
  const config = source.config;
  const total = config.nLayers + 1;
  const shard = (k: number) =>
    `model-${String(k + 1).padStart(5, "0")}-of-${String(total).padStart(5, "0")}.safetensors`;
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  let wrappedZeros = 0;
  let next = 0;
  let head: QuantizedLinear | null = null;
  const write = async (k: number, tensors: TensorToWrite[], metadata: Record<string, string>) => {
    for (const t of tensors) weightMap[t.name] = shard(k);
    bytes += tensors.reduce((s, t) => s + t.data.byteLength, 0);
    await writeSafetensors(join(tmp, shard(k)), tensors, { format: "pt", ...metadata });
  };
  const raw = async (name: string): Promise<TensorToWrite> => {
    const t = await source.readTensorRaw(name);
    return { name, dtype: t.dtype, shape: t.shape, data: t.bytes };
  };
  return {
    async writeLayer(i, layer) {
      if (i !== next) throw new Error(`Cannot write layer ${i}: expected layer ${next} next`);
      next++;
      const tensors: TensorToWrite[] = [];
      for (const f of layerVectorFields(config)) tensors.push(await raw(layerTensorName(config, i, f)));
      const losses: Record<string, { loss: number; dampUsed: number }> = {};
      for (const field of LINEAR_FIELDS) {
        const q = layer[field];
        const prefix = modulePrefix(config, i, field);
        const got = linearTensors(prefix, q);
        tensors.push(...got.tensors);
        wrappedZeros += got.wrapped;
        losses[prefix] = { loss: q.loss, dampUsed: q.dampUsed };
      }
      await write(i, tensors, { "leanserve.losses": JSON.stringify(losses) });
    },
    writeLmHead(q) {
      if (!info.lmHead) throw new Error("Cannot write a quantized LM head: the folder's info has no lmHead");
      if (q.rows !== config.vocabSize || q.cols !== config.dim) {
        throw new Error(
          `Cannot write the LM head: shape (${q.rows}, ${q.cols}), expected (${config.vocabSize}, ${config.dim})`,
        );
      }
      head = q;
    },
    async finish() {
      if (next !== config.nLayers) {
        throw new Error(`Cannot finish: ${next} of ${config.nLayers} layers written`);
      }
      if (info.lmHead && !head) throw new Error("Cannot finish: the quantized LM head was not written");
      const names = modelTensorNames(config);
      const rest = [await raw(names.embedding), await raw(names.finalNorm)];
      const metadata: Record<string, string> = {};
      if (head) {
        const got = linearTensors(LM_HEAD_PREFIX, head);
        rest.push(...got.tensors);
        wrappedZeros += got.wrapped;
        metadata["leanserve.losses"] = JSON.stringify({
          [LM_HEAD_PREFIX]: { loss: head.loss, dampUsed: head.dampUsed },
        });
      } else if (!config.tieWordEmbeddings) rest.push(await raw(names.lmHead));
      await write(config.nLayers, rest, metadata);
      const index = { metadata: { total_size: bytes }, weight_map: weightMap };
      await Deno.writeTextFile(
        join(tmp, "model.safetensors.index.json"),
        JSON.stringify(index, null, 2) + "\n",
      );
      const qc = quantizationConfig(info);
      const srcConfig = JSON.parse(await Deno.readTextFile(join(srcDir, "config.json")));
      const cfg = { ...srcConfig, quantization_config: qc };
      await Deno.writeTextFile(join(tmp, "config.json"), JSON.stringify(cfg, null, 2) + "\n");
      if (formatOf(info.method) === "autogptq") {
        const { leanserve: _, ...plain } = qc;
        const qfile = { ...plain, model_name_or_path: null, model_file_base_name: null };
        await Deno.writeTextFile(join(tmp, "quantize_config.json"), JSON.stringify(qfile, null, 2) + "\n");
      }
      for (const f of AUX_FILES) {
        if (await exists(join(srcDir, f))) await Deno.copyFile(join(srcDir, f), join(tmp, f));
      }
      if (await exists(out)) {
        throw new Error(`Cannot write the quantized model to "${out}": it appeared meanwhile`);
      }
      await Deno.rename(tmp, out);
      return { wrappedZeros, bytes };
    },
    async abort() {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** A quantized folder opened for reading, one layer at a time. */
export interface QuantizedModelSource {
  readonly config: ModelConfig;
  readonly quantization: ParsedQuantization;
  /**
   * Layer i's norms and biases (norms as the kernels apply them, see weights.ts foldNormOffset) and its
   * quantized linears (loss/dampUsed from the shard metadata, NaN when absent).
   */
  loadLayer(i: number): Promise<LayerVectors<HostTensor> & { linears: QuantizedLayer }>;
  loadTensor(name: string): Promise<HostTensor>;
  /** The quantized LM head; throws unless `quantization.lmHead` is set. */
  loadLmHead(): Promise<QuantizedLinear>;
  close(): void;
}

/**
 * Opens a quantized folder (ours, or an AutoGPTQ v1/v2 checkpoint of a Llama model).
 * @param dir the folder
 * @param config its config (must carry quantization_config)
 * @returns the reader; call `close()` when done
 * @example
 * ```ts ignore
 * const q = await openQuantizedModel(dir, await loadModelConfig(dir));
 * const { linears } = await q.loadLayer(0);
 * const W = dequantizeLinear(linears.wq);
 * ```
 */
export async function openQuantizedModel(dir: string, config: ModelConfig): Promise<QuantizedModelSource> {
  const quantization = parseQuantization(config.quantization);
  if (!quantization) {
    throw new Error(`Cannot open "${dir}" as a quantized model: config.json has no quantization_config`);
  }
  const st = await openSafetensorsModel(dir);
  const loadTensor = async (name: string): Promise<HostTensor> => {
    const hit = st.tensors.get(name);
    if (!hit) throw new Error(`Cannot load tensor "${name}" from "${dir}": missing from the checkpoint`);
    return { data: toFloat32(await st.readTensor(name), hit.entry.dtype), shape: hit.entry.shape };
  };
  const q = config.nHeads * config.headDim;
  const shapes: Record<string, { rows: number; cols: number }> = {
    wq: { rows: q, cols: config.dim },
    wk: { rows: config.kvDim, cols: config.dim },
    wv: { rows: config.kvDim, cols: config.dim },
    wo: { rows: config.dim, cols: q },
    wGate: { rows: config.hiddenDim, cols: config.dim },
    wUp: { rows: config.hiddenDim, cols: config.dim },
    wDown: { rows: config.dim, cols: config.hiddenDim },
  };
  return {
    config,
    quantization,
    async loadLayer(i) {
      const linears = {} as QuantizedLayer;
      for (const field of LINEAR_FIELDS) {
        linears[field] = await readQuantizedLinear(
          st,
          modulePrefix(config, i, field),
          quantization,
          shapes[field],
        );
      }
      const vectors: Partial<LayerVectors<HostTensor>> = {};
      for (const f of layerVectorFields(config)) {
        const t = await loadTensor(layerTensorName(config, i, f));
        vectors[f] = isNormField(f) ? foldNormOffset(config, t) : t;
      }
      return { ...vectors as LayerVectors<HostTensor>, linears };
    },
    loadTensor,
    async loadLmHead() {
      if (!quantization.lmHead) throw new Error(`Cannot load a quantized LM head from "${dir}": it has none`);
      const shape = { rows: config.vocabSize, cols: config.dim };
      return await readQuantizedLinear(st, LM_HEAD_PREFIX, lmHeadFormat(quantization.lmHead), shape);
    },
    close: () => st.close(),
  };
}

/**
 * Uploads a quantized folder: each linear in the fused kernels' layout (affine → kernels/matmul_affine.ts,
 * LUT → kernels/matmul_lut.ts), or dequantized on the host into dense weights (`fused: false`, the
 * reference path that checks the fused kernels). Embeddings, norms and the LM head stay dense.
 * TODO(#4): repack on the GPU for large models; the host repack holds one layer's codes at a time.
 * @param gpu the device
 * @param dir the folder
 * @param config its config
 * @param options dense storage type of the unquantized tensors; fused or dequantized linears
 * @returns weights that `bindForward` runs
 */
export async function uploadQuantizedWeights(
  gpu: Gpu,
  dir: string,
  config: ModelConfig,
  { weightType = "f32", fused = true, decodeActivations = "q8", onProgress }: {
    weightType?: WeightType;
    fused?: boolean;
    decodeActivations?: "q8" | "f32";
    onProgress?: ((detail: string) => void) | undefined;
  } = {},
): Promise<GpuWeights> {
  const source = await openQuantizedModel(dir, config);
  try {
    const names = modelTensorNames(config);
    const embedding = await source.loadTensor(names.embedding);
    const layers = [];
    for (let i = 0; i < config.nLayers; i++) {
      onProgress?.(`loading layer ${i + 1}/${config.nLayers}`);
      const { linears, ...vectors } = await source.loadLayer(i);
      const perms = new SharedPerms(gpu);
      const up = (field: keyof QuantizedLayer): GpuLinear => {
        const q = linears[field];
        const label = `layers.${i}.${field}`;
        if (fused) return uploadFusedLinear(gpu, q, label, decodeActivations, perms);
        return uploadLinear(gpu, dequantizeLinear(q), q.rows, q.cols, { weightType, label });
      };
      layers.push({
        ...uploadLayerVectors(gpu, vectors, i),
        index: i,
        wq: up("wq"),
        wk: up("wk"),
        wv: up("wv"),
        wo: up("wo"),
        wGate: up("wGate"),
        wUp: up("wUp"),
        wDown: up("wDown"),
      });
    }
    return {
      tokenEmbedding: uploadDense(gpu, embedding.data, weightType, "tokenEmbedding"),
      embeddingType: weightType,
      layers,
      finalNorm: uploadStorage(
        gpu,
        foldNormOffset(config, await source.loadTensor(names.finalNorm)).data,
        "finalNorm",
      ),
      lmHead: await uploadHead(gpu, source, embedding, { weightType, fused, decodeActivations }),
    };
  } finally {
    source.close();
  }
}

/**
 * The LM head: dense (copied or tied), or quantized. A quantized head of ≤ 4 bits runs the fused affine
 * kernels; 6- and 8-bit heads (which those kernels do not take) are dequantized at load into the dense
 * weight type: their perplexity is the quantized head's, but they save no GPU memory and no time.
 */
async function uploadHead(
  gpu: Gpu,
  source: QuantizedModelSource,
  embedding: HostTensor,
  { weightType, fused, decodeActivations }: {
    weightType: WeightType;
    fused: boolean;
    decodeActivations: "q8" | "f32";
  },
): Promise<GpuLinear> {
  const { config } = source;
  const head = source.quantization.lmHead;
  if (head) {
    const q = await source.loadLmHead();
    if (fused && head.bits <= 4) {
      return uploadFusedLinear(gpu, q, "lmHead", decodeActivations, new SharedPerms(gpu));
    }
    return uploadLinear(gpu, dequantizeLinear(q), q.rows, q.cols, { weightType, label: "lmHead" });
  }
  const dense = config.tieWordEmbeddings
    ? embedding
    : await source.loadTensor(modelTensorNames(config).lmHead);
  return uploadLinear(gpu, dense.data, config.vocabSize, config.dim, { weightType, label: "lmHead" });
}

/** A quantized linear in its fused kernel's layout. */
function uploadFusedLinear(
  gpu: Gpu,
  q: QuantizedLinear,
  label: string,
  activations: "q8" | "f32",
  perms: SharedPerms,
): GpuLinear {
  const { rows: outDim, cols: inDim } = q;
  if (q.lut) return { format: "lut", outDim, inDim, weights: uploadLut(gpu, packLut(q), label), activations };
  if (!q.scale || !q.zero) throw new Error(`Cannot upload "${label}": neither a LUT nor scale/zero`);
  // Groups are groupSize columns wide in act-order rank; group 0 holds exactly groupSize of them.
  const nGroups = q.scale.length / q.rows;
  const groupSize = nGroups === 1
    ? 0
    : q.gIdx
    ? q.gIdx.filter((g) => g === 0).length
    : Math.ceil(inDim / nGroups);
  const packed = packAffine({ ...q, scale: q.scale, zero: q.zero }, { groupSize });
  const { perm, ...rest } = packed;
  const weights = uploadAffine(gpu, rest, label);
  weights.perm = perm ? perms.upload(perm, `${label}.perm`) : null;
  return { format: "affine", outDim, inDim, weights, activations };
}

/**
 * One GPU buffer per distinct act-order permutation of a layer: q/k/v (and gate/up) share a Hessian, hence
 * a permutation, and sharing the buffer lets them run as one dispatch (linear.ts mergesLinears).
 */
class SharedPerms {
  #seen: { perm: Uint32Array; buffer: GPUBuffer }[] = [];
  constructor(private readonly gpu: Gpu) {}

  upload(perm: Uint32Array, label: string): GPUBuffer {
    const same = this.#seen.find((s) =>
      s.perm.length === perm.length && s.perm.every((v, i) => v === perm[i])
    );
    if (same) return same.buffer;
    const buffer = uploadStorage(this.gpu, perm, label);
    this.#seen.push({ perm, buffer });
    return buffer;
  }
}
