/**
 * The quantized model folder: what each quantized linear becomes on disk and how it is read back.
 *
 * Affine results (rtn, gptq, leanquant-aff) use the AutoGPTQ v1 layout (see quant_pack.ts) under the module
 * name, e.g. `model.layers.0.self_attn.q_proj.{qweight,qzeros,scales,g_idx}`, and config.json gets a
 * transformers-style `quantization_config` with quant_method "gptq". Row-wise grids are group_size −1 (one
 * group, g_idx all 0).
 *
 * LeanQuant nu uses our own LUT layout, format "leanserve-lut" version 1:
 *   `<module>.lut`    f16   [R, 2^b]                  w[r, c] = lut[r, code[r, c]]
 *   `<module>.qcodes` int32 [R, ceil(C·b/32)]         row r = LSB-first stream of b-bit codes[r, 0..C)
 * (dense at 2 and 3 bits, unlike the reference's one-nibble-per-code file), in original column order.
 *
 * Embeddings and norms are copied byte for byte; so is lm_head unless it was quantized (`--quantize-lm-head`):
 * then `lm_head.{qweight,qzeros,scales,g_idx}` hold it in the AutoGPTQ layout whatever the decoder's format,
 * with its own bits (4, 6 or 8) and group size recorded as `quantization_config.leanserve.lm_head` (tools
 * that only know AutoGPTQ's `lm_head: true` with the decoder's bits cannot read a head of other bits). A
 * tied model keeps its full-precision embedding for the lookup. Per-linear losses ride in each shard's
 * `__metadata__` ("leanserve.losses") so a reader can report them.
 */
import type { QuantizedLinear, QuantMethod } from "../../quant/mod.ts";
import {
  type Dtype,
  fromFloat32,
  packedWords,
  packQweight,
  packRowCodes,
  packZeros,
  type SafetensorsModel,
  type TensorToWrite,
  toFloat32,
  unpackQweight,
  unpackRowCodes,
  unpackZeros,
} from "../formats/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import { layerTensorName } from "./weights.ts";

/** The seven quantized linears of a decoder layer, by their weights.ts field names. */
export type LinearField = "wq" | "wk" | "wv" | "wo" | "wGate" | "wUp" | "wDown";

/** All linear fields in module order. */
export const LINEAR_FIELDS: readonly LinearField[] = ["wq", "wk", "wv", "wo", "wGate", "wUp", "wDown"];

/** One layer's quantized linears. */
export type QuantizedLayer = Record<LinearField, QuantizedLinear>;

/** Our LUT format's name and version, as written in quantization_config. */
export const LUT_FORMAT = "leanserve-lut";
export const LUT_FORMAT_VERSION = 1;

/** The on-disk formats. */
export type QuantFormat = "autogptq" | typeof LUT_FORMAT;

/** What a quantized folder records about how it was made. */
export interface QuantizationInfo {
  method: QuantMethod;
  bits: number;
  /** 0 for one grid per row */
  groupSize: number;
  actOrder: boolean;
  percdamp: number;
  /** Anything else worth recording (calibration file, nsamples, seqLen, seed, exponent, ...). */
  extra?: Record<string, unknown>;
  /** The quantized LM head, when there is one (the writer then expects `writeLmHead`). */
  lmHead?: LmHeadQuantization;
}

/** A folder's parsed `quantization_config`. */
export interface ParsedQuantization {
  format: QuantFormat;
  bits: number;
  method: QuantMethod;
  /** AutoGPTQ v1 stores zeros minus 1; GPTQModel's "gptq_v2" does not. */
  zerosMinusOne: boolean;
  /** The quantized LM head (AutoGPTQ v1 layout under "lm_head"), or null when it is full precision. */
  lmHead: LmHeadQuantization | null;
}

/** How a quantized LM head is stored. */
export interface LmHeadQuantization {
  bits: number;
  /** columns per group; 0 for one group per row */
  groupSize: number;
  method: QuantMethod;
}

/** The module prefix of a quantized LM head. */
export const LM_HEAD_PREFIX = "lm_head";

/**
 * How a folder's LM head is read: the AutoGPTQ v1 layout with the head's own bits.
 * @param head the parsed `leanserve.lm_head`
 * @returns the quantization to read "lm_head" with
 */
export function lmHeadFormat(head: LmHeadQuantization): ParsedQuantization {
  return { format: "autogptq", bits: head.bits, method: head.method, zerosMinusOne: true, lmHead: null };
}

/** The file format a method's results are written in. */
export function formatOf(method: QuantMethod): QuantFormat {
  return method === "leanquant-nu" ? LUT_FORMAT : "autogptq";
}

/**
 * The `quantization_config` object for config.json (also written alone as quantize_config.json for affine).
 * @param info how the folder was made
 * @returns a JSON-able object
 */
export function quantizationConfig(info: QuantizationInfo): Record<string, unknown> {
  const common = {
    bits: info.bits,
    desc_act: info.actOrder,
    damp_percent: info.percdamp,
    true_sequential: true,
    leanserve: {
      method: info.method,
      ...info.extra,
      ...(info.lmHead
        ? {
          lm_head: {
            bits: info.lmHead.bits,
            group_size: info.lmHead.groupSize > 0 ? info.lmHead.groupSize : -1,
            method: info.lmHead.method,
            format: "autogptq",
          },
        }
        : {}),
    },
  };
  if (formatOf(info.method) === LUT_FORMAT) {
    return {
      quant_method: LUT_FORMAT,
      format: LUT_FORMAT,
      format_version: LUT_FORMAT_VERSION,
      lut_dtype: "float16",
      codes_layout: "qcodes int32 [out_features, ceil(in_features*bits/32)], each row an LSB-first bitstream",
      ...common,
    };
  }
  return {
    quant_method: "gptq",
    checkpoint_format: "gptq",
    group_size: info.groupSize > 0 ? info.groupSize : -1,
    sym: false,
    static_groups: false,
    ...common,
  };
}

/**
 * Reads a folder's `quantization_config` (from ModelConfig.quantization).
 * @param raw the parsed object, or null
 * @returns the format and bits, or null for a full-precision folder
 */
export function parseQuantization(raw: unknown): ParsedQuantization | null {
  if (raw === null || raw === undefined) return null;
  const q = raw as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new Error(`Cannot read quantization_config: ${msg}`);
  };
  const bits = q.bits;
  if (bits !== 2 && bits !== 3 && bits !== 4 && bits !== 8) {
    fail(`bits ${JSON.stringify(bits)} is not 2, 3, 4 or 8`);
  }
  const ours = (q.leanserve ?? {}) as { method?: QuantMethod; lm_head?: Record<string, unknown> };
  const lmHead = parseLmHead(ours.lm_head, fail);
  if (q.quant_method === LUT_FORMAT) {
    if (q.format_version !== LUT_FORMAT_VERSION) {
      fail(`${LUT_FORMAT} version ${q.format_version} is not supported`);
    }
    return { format: LUT_FORMAT, bits: bits as number, method: "leanquant-nu", zerosMinusOne: false, lmHead };
  }
  if (q.quant_method !== "gptq") fail(`quant_method ${JSON.stringify(q.quant_method)} is not supported`);
  const cf = q.checkpoint_format ?? "gptq";
  if (cf !== "gptq" && cf !== "gptq_v2") fail(`checkpoint_format ${JSON.stringify(cf)} is not supported`);
  return {
    format: "autogptq",
    bits: bits as number,
    method: ours.method ?? "gptq",
    zerosMinusOne: cf === "gptq",
    lmHead,
  };
}

function parseLmHead(raw: Record<string, unknown> | undefined, fail: (msg: string) => never) {
  if (raw === undefined || raw === null) return null;
  const { bits, group_size: g, method } = raw;
  if (bits !== 4 && bits !== 6 && bits !== 8) {
    fail(`leanserve.lm_head.bits ${JSON.stringify(bits)} is not 4, 6 or 8`);
  }
  if (typeof g !== "number" || !Number.isInteger(g) || g < -1) {
    fail(`leanserve.lm_head.group_size ${JSON.stringify(g)} is not an integer ≥ −1`);
  }
  return {
    bits: bits as number,
    groupSize: Math.max(0, g as number),
    method: (method ?? "gptq") as QuantMethod,
  };
}

/** The module prefix of a layer's linear, e.g. `model.layers.3.mlp.up_proj`. */
export function modulePrefix(config: ModelConfig, layer: number, field: LinearField): string {
  return layerTensorName(config, layer, field).replace(/\.weight$/, "");
}

/**
 * The tensors one quantized linear is stored as.
 * @param prefix the module name
 * @param q the quantized linear (codes in original column order)
 * @returns tensors and the count of zero-points stored wrapped (AutoGPTQ v1 cannot store 0, see quant_pack.ts)
 */
export function linearTensors(
  prefix: string,
  q: QuantizedLinear,
): { tensors: TensorToWrite[]; wrapped: number } {
  const { rows, cols, bits } = q;
  const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const words = packedWords(cols, bits);
  if (formatOf(q.method) === LUT_FORMAT) {
    if (!q.lut) throw new Error(`Cannot write "${prefix}": a ${q.method} result has no LUT`);
    return {
      tensors: [
        { name: `${prefix}.lut`, dtype: "F16", shape: [rows, 2 ** bits], data: fromFloat32(q.lut, "F16") },
        {
          name: `${prefix}.qcodes`,
          dtype: "I32",
          shape: [rows, words],
          data: bytes(packRowCodes(q.codes, rows, cols, bits)),
        },
      ],
      wrapped: 0,
    };
  }
  if (!q.scale || !q.zero || !q.gIdx) {
    throw new Error(`Cannot write "${prefix}": a ${q.method} result has no scale/zero/gIdx`);
  }
  const groups = q.scale.length / rows;
  const scalesT = new Float32Array(groups * rows); // (rows, groups) → [G, R]
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) scalesT[g * rows + r] = q.scale[r * groups + g];
  }
  const { qzeros, wrapped } = packZeros(q.zero, rows, groups, bits);
  const tensors: TensorToWrite[] = [
    {
      name: `${prefix}.qweight`,
      dtype: "I32",
      shape: [words, rows],
      data: bytes(packQweight(q.codes, rows, cols, bits)),
    },
    { name: `${prefix}.qzeros`, dtype: "I32", shape: [groups, packedWords(rows, bits)], data: bytes(qzeros) },
    { name: `${prefix}.scales`, dtype: "F16", shape: [groups, rows], data: fromFloat32(scalesT, "F16") },
    { name: `${prefix}.g_idx`, dtype: "I32", shape: [cols], data: bytes(q.gIdx) },
  ];
  return { tensors, wrapped };
}

/**
 * Reads one quantized linear back (codes unpacked, scales and LUTs widened to f32).
 * @param st the folder's safetensors
 * @param prefix the module name
 * @param q the folder's quantization
 * @param shape out_features (rows) and in_features (cols) from the model config
 * @returns the linear; loss and dampUsed come from the shard metadata when present, else NaN
 */
export async function readQuantizedLinear(
  st: SafetensorsModel,
  prefix: string,
  q: ParsedQuantization,
  { rows, cols }: { rows: number; cols: number },
): Promise<QuantizedLinear> {
  const { bits } = q;
  const read = async (suffix: string, dtype: Dtype, shape: (number | null)[]) => {
    const name = `${prefix}.${suffix}`;
    const hit = st.tensors.get(name);
    if (!hit) throw new Error(`Cannot load tensor "${name}" from "${st.dir}": missing from the checkpoint`);
    const e = hit.entry;
    if (
      e.dtype !== dtype || e.shape.length !== shape.length ||
      shape.some((d, k) => d !== null && d !== e.shape[k])
    ) {
      throw new Error(
        `Cannot load tensor "${name}" from "${hit.file.path}": expected ${dtype} [${
          shape.map((d) => d ?? "?")
        }], ` +
          `got ${e.dtype} [${e.shape}]`,
      );
    }
    return { bytes: await st.readTensor(name), shape: e.shape };
  };
  const i32 = (b: Uint8Array) => new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const stats = lossMetadata(st, prefix);
  const base = { rows, cols, bits, method: q.method, loss: stats.loss, dampUsed: stats.dampUsed };
  if (q.format === LUT_FORMAT) {
    const lut = toFloat32((await read("lut", "F16", [rows, 2 ** bits])).bytes, "F16");
    const qcodes = i32((await read("qcodes", "I32", [rows, packedWords(cols, bits)])).bytes);
    return { ...base, codes: unpackRowCodes(qcodes, rows, cols, bits), lut };
  }
  const scales = await read("scales", "F16", [null, rows]);
  const groups = scales.shape[0];
  const scaleT = toFloat32(scales.bytes, "F16");
  const scale = new Float32Array(rows * groups);
  for (let g = 0; g < groups; g++) {
    for (let r = 0; r < rows; r++) scale[r * groups + g] = scaleT[g * rows + r];
  }
  const qzeros = i32((await read("qzeros", "I32", [groups, packedWords(rows, bits)])).bytes);
  const qweight = i32((await read("qweight", "I32", [packedWords(cols, bits), rows])).bytes);
  const gIdx = Int32Array.from(i32((await read("g_idx", "I32", [cols])).bytes));
  if (gIdx.some((g) => g < 0 || g >= groups)) {
    throw new Error(
      `Cannot load tensor "${prefix}.g_idx" from "${st.dir}": a group index is outside [0, ${groups})`,
    );
  }
  return {
    ...base,
    codes: unpackQweight(qweight, rows, cols, bits),
    scale,
    zero: unpackZeros(qzeros, rows, groups, bits, { minusOne: q.zerosMinusOne }),
    gIdx,
  };
}

function lossMetadata(st: SafetensorsModel, prefix: string): { loss: number; dampUsed: number } {
  for (const f of st.files) {
    const raw = f.metadata["leanserve.losses"];
    if (!raw) continue;
    const hit = (JSON.parse(raw) as Record<string, { loss: number; dampUsed: number }>)[prefix];
    if (hit) return hit;
  }
  return { loss: NaN, dampUsed: NaN };
}

/**
 * Dense weights of a quantized linear, as inference computes them.
 * @param q the linear
 * @returns (rows, cols) f32
 */
export function dequantizeLinear(q: QuantizedLinear): Float32Array {
  const { rows, cols, codes } = q;
  const W = new Float32Array(rows * cols);
  const K = 2 ** q.bits;
  if (q.lut) {
    for (let i = 0; i < W.length; i++) W[i] = q.lut[Math.floor(i / cols) * K + codes[i]];
    return W;
  }
  if (!q.scale || !q.zero || !q.gIdx) throw new Error("Cannot dequantize: neither a LUT nor scale/zero/gIdx");
  const groups = q.scale.length / rows;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * groups + q.gIdx[c];
      W[r * cols + c] = q.scale[g] * (codes[r * cols + c] - q.zero[g]);
    }
  }
  return W;
}
