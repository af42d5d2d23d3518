/**
 * Quantizing the LM head (issue 12, `--quantize-lm-head`): after the last decoder layer the calibration
 * hidden states have gone through every quantized layer, so the head's input — the final RMSNorm of them —
 * is captured like any group's input into a Hessian H = (2/N)·Σ x xᵀ (dim × dim), and the head is quantized
 * by the same per-linear quantizer: GPTQ with the affine min-max grid, groups of LM_HEAD_GROUP_SIZE columns
 * (RTN when the model's method is rtn), act-order and damping as the decoder layers. Affine, not LUT: every
 * decode step reads the whole head, and the affine format runs the fastest fused kernels (q8 GEMV).
 * The head's rows are independent given H, so a head larger than one binding is quantized in row chunks
 * that share H (and hence the act-order permutation and g_idx).
 */
import { type Gpu, uploadStorage } from "../../kernels/core/mod.ts";
import {
  type LinearQuantizer,
  LM_HEAD_GROUP_SIZE,
  type QuantizedLinear,
  type QuantizeOptions,
  type QuantMethod,
} from "../../quant/mod.ts";
import type { LayerRunner } from "./layer_runner.ts";
import type { HiddenWindow } from "./hidden_windows.ts";
import { type HessianSink, runWindows } from "./quantize_passes.ts";

/** Most bytes of head weights handed to the quantizer at once (well inside every adapter's binding limit). */
const CHUNK_BYTES = 2 ** 27;

/** What {@link quantizeLmHead} needs from the pipeline. */
export interface LmHeadInput {
  runner: LayerRunner;
  /** every window's hidden state after the last layer */
  hidden: readonly HiddenWindow[];
  /** (dim) f32 final RMSNorm weight */
  finalNorm: Float32Array;
  /** (vocabSize, dim) f32 head weights (the embedding when tied) */
  head: Float32Array;
  vocabSize: number;
  dim: number;
  opts: QuantizeOptions;
  quantizer: LinearQuantizer;
  hessian: (gpu: Gpu, cols: number) => HessianSink;
  onWindow?: () => void;
  /** Bytes of the transit buffers host windows stream through (memory accounting). */
  onTransitBytes?: (bytes: number) => void;
}

/**
 * The options the head is quantized with: affine groups of 128, `lmHeadBits` bits, GPTQ (RTN for rtn).
 * @param opts the model's options (lmHeadBits > 0)
 * @returns options for the per-linear quantizer
 */
export function lmHeadOptions(opts: QuantizeOptions): QuantizeOptions {
  const method: QuantMethod = opts.method === "rtn" ? "rtn" : "gptq";
  // The GPU loop's affine grid takes 1..8 bits; QuantizeOptions.bits names the decoder's 2..4.
  return { ...opts, method, bits: opts.lmHeadBits as QuantizeOptions["bits"], groupSize: LM_HEAD_GROUP_SIZE };
}

/**
 * Captures the head's Hessian over every window and quantizes the head.
 * @param gpu the device
 * @param input hidden states, weights, options and the quantizer
 * @returns the quantized head (codes in original column order, one g_idx for all rows)
 */
export async function quantizeLmHead(gpu: Gpu, input: LmHeadInput): Promise<QuantizedLinear> {
  const { runner, vocabSize: rows, dim: cols, quantizer } = input;
  const opts = lmHeadOptions(input.opts);
  const normBuf = uploadStorage(gpu, input.finalNorm, "final norm");
  const sink = input.hessian(gpu, cols);
  try {
    const bound = runner.bindFinal(normBuf);
    await runWindows(gpu, input.hidden, {
      bound,
      sink,
      rows: runner.rows,
      timer: null,
      onWindow: input.onWindow ?? (() => {}),
      ...(input.onTransitBytes ? { onTransitBytes: input.onTransitBytes } : {}),
    });
    await sink.finalize();
    runner.release();
    const chunkRows = Math.max(1, Math.floor(Math.min(CHUNK_BYTES, gpu.maxBindingBytes) / (cols * 4)));
    const parts: QuantizedLinear[] = [];
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const n = Math.min(chunkRows, rows - r0);
      const W = input.head.subarray(r0 * cols, (r0 + n) * cols);
      const { Q, ...q } = await quantizer({ W, H: sink.H, rows: n, cols }, opts);
      if (!(Q instanceof Float32Array)) Q.destroy();
      parts.push(q);
    }
    return joinRows(parts, rows, cols);
  } finally {
    sink.destroy();
    normBuf.destroy();
  }
}

/** Stacks row chunks quantized with one H into one linear. */
function joinRows(parts: QuantizedLinear[], rows: number, cols: number): QuantizedLinear {
  const first = parts[0];
  if (parts.length === 1) return first;
  const cat = (get: (q: QuantizedLinear) => Float32Array) => {
    const out = new Float32Array(parts.reduce((s, q) => s + get(q).length, 0));
    let at = 0;
    for (const q of parts) [out.set(get(q), at), at += get(q).length];
    return out;
  };
  const codes = new Uint8Array(rows * cols);
  let at = 0;
  for (const q of parts) [codes.set(q.codes, at), at += q.codes.length];
  return {
    ...first,
    rows,
    codes,
    scale: cat((q) => q.scale!),
    zero: cat((q) => q.zero!),
    loss: parts.reduce((s, q) => s + q.loss, 0),
  };
}
