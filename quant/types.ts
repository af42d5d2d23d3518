/**
 * The contract of the GPU quantizer (quant/gptq.ts `quantizeLinear`) and its callers
 * (inference/quantize_model.ts). Mirrors the f64 reference's GptqOptions/GptqResult
 * (quant/reference.ts) so results can be compared field by field.
 */
import type { MatrixBuffer } from "../kernels/core/mod.ts";

/** Grids, by their CLI names. */
export type QuantMethod = "rtn" | "gptq" | "leanquant-nu" | "leanquant-aff";

/** The reference's grid names for each method. */
export const REFERENCE_GRID: Readonly<Record<QuantMethod, "rtn" | "gptq" | "nu" | "aff">> = {
  "rtn": "rtn",
  "gptq": "gptq",
  "leanquant-nu": "nu",
  "leanquant-aff": "aff",
};

/** Knobs of one layer's quantization (defaults as in the LeanQuant reference code, docs/quantization.md App. C). */
export interface QuantizeOptions {
  method: QuantMethod;
  bits: 2 | 3 | 4;
  /** Columns per affine group; 0 means one grid per row. leanquant-nu always uses one LUT per row. */
  groupSize: number;
  /** Quantize columns in order of decreasing H_kk (default true). */
  actOrder: boolean;
  /** λ = percdamp · mean(diag H) (default 0.01); retried ×10 when the Cholesky fails. */
  percdamp: number;
  /** Lazy-batch block width B (default 128). */
  blockSize: number;
  /** p in the LeanQuant importance a_k = U_kk^(−p) (default 4). */
  exponent: number;
  /** Affine search: T range steps (default 2048); steps per end t defaults to 0.2T/0.3T/0.4T for 4/3/2 bits. */
  affT: number;
  affSteps?: number;
  /**
   * Whole-model knob, read by the pipeline (inference/quantize): bits of the LM head, 0 (default) keeps it
   * in full precision; 4, 6 or 8 quantize it affine with groups of {@link LM_HEAD_GROUP_SIZE} columns by
   * GPTQ against the Hessian of the final norm's output (RTN when the method is rtn).
   */
  lmHeadBits: LmHeadBits;
}

/** LM head bit widths: 0 keeps the head in full precision. */
export type LmHeadBits = 0 | 4 | 6 | 8;

/** Columns per affine group of a quantized LM head (llama.cpp's and AutoGPTQ's usual 128). */
export const LM_HEAD_GROUP_SIZE = 128;

/** Defaults for {@link QuantizeOptions} beyond method and bits. */
export const QUANTIZE_DEFAULTS = {
  groupSize: 0,
  actOrder: true,
  percdamp: 0.01,
  blockSize: 128,
  exponent: 4,
  affT: 2048,
  lmHeadBits: 0,
} as const;

/**
 * A quantized linear layer on the host, everything indexed by column in ORIGINAL column order
 * (codes are un-permuted after act-order), ready for packing into a kernel layout or a file format.
 */
export interface QuantizedLinear {
  rows: number;
  cols: number;
  bits: number;
  method: QuantMethod;
  /** (rows, cols) codes in [0, 2^bits) */
  codes: Uint8Array;
  /** leanquant-nu: (rows, 2^bits) LUT, every entry exactly representable in f16; q = lut[r][code] */
  lut?: Float32Array;
  /** affine methods: (rows, nGroups) scale and zero-point; q = scale · (code − zero) */
  scale?: Float32Array;
  zero?: Float32Array;
  /** affine methods: (cols) group index of each original column (rank in act-order // groupSize) */
  gIdx?: Int32Array;
  /** Σ (w − q)²/d²/2, the GPTQ loss the reference prints */
  loss: number;
  /** the damping λ actually used (after any retry) */
  dampUsed: number;
}

/** One linear layer to quantize. */
export interface LinearQuantizerInput {
  /** (rows, cols) W, y = W x, in original column order; not modified */
  W: Float32Array;
  /**
   * (cols, cols) H of the layer input, on the host or on the GPU (f32, row-major; on the GPU in one buffer or,
   * past one binding, two parts: kernels/core/matrix_parts.ts). Not modified: q/k/v and
   * gate/up share one H, so a quantizer that damps or permutes in place must work on a copy.
   */
  H: Float32Array | MatrixBuffer;
  rows: number;
  cols: number;
}

/**
 * A quantized linear plus its dequantized weights Q (rows, cols) f32 in original column order, which feed the
 * true-sequential forward: on the host, or already on the GPU (the pipeline then uses the buffer as is).
 */
export type QuantizedLinearWithQ = QuantizedLinear & { Q: Float32Array | GPUBuffer };

/** Quantizes one linear layer; the pipeline awaits each call before touching H again. */
export type LinearQuantizer = (
  input: LinearQuantizerInput,
  opts: QuantizeOptions,
) => Promise<QuantizedLinearWithQ>;

/** A {@link LinearQuantizer} whose Q always comes back on the host. */
export type HostQuantizer = (
  input: LinearQuantizerInput,
  opts: QuantizeOptions,
) => Promise<QuantizedLinear & { Q: Float32Array }>;
