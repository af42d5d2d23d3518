/**
 * The per-layer quantizer contract (quant/types.ts `LinearQuantizer`) implemented by the f64 reference
 * `gptqReference` (reference.ts): exact, single-threaded and meant for small layers (stories260K-sized; C up to a few hundred). The GPU quantizer (gptq.ts `quantizeLinear`) fills
 * the same slot; it keeps H on the GPU, which is why the input accepts a GPUBuffer.
 */
import { asParts, type Gpu, readMatrix } from "../../kernels/core/mod.ts";
import { type GptqOptions, gptqReference, type GptqResult } from "./reference.ts";
import { type HostQuantizer, type QuantizedLinear, type QuantizeOptions, REFERENCE_GRID } from "../types.ts";

/**
 * The reference's options for our contract's options.
 * @param opts the pipeline's per-layer options
 * @param onRetry receives the damping-retry lines
 * @returns options for `gptqReference`
 */
export function referenceOptions(opts: QuantizeOptions, onRetry?: (message: string) => void): GptqOptions {
  const o: GptqOptions = {
    bits: opts.bits,
    grid: REFERENCE_GRID[opts.method],
    groupSize: opts.groupSize > 0 ? opts.groupSize : -1,
    blockSize: opts.blockSize,
    exponent: opts.exponent,
    actOrder: opts.actOrder,
    percdamp: opts.percdamp,
    affT: opts.affT,
  };
  if (opts.affSteps !== undefined) o.affSteps = opts.affSteps;
  if (onRetry) o.onRetry = onRetry;
  return o;
}

/**
 * A {@link LinearQuantizer} backed by the f64 reference. A GPU H is read back first (one readback).
 * @param gpu the device holding H when it is a GPUBuffer (unused for host H)
 * @param options `onRetry` receives damping-retry lines (default console.warn)
 * @returns the quantizer
 * @example
 * ```ts ignore
 * const quantizer = createReferenceQuantizer(gpu);
 * const q = await quantizer({ W, H, rows, cols }, { ...QUANTIZE_DEFAULTS, method: "gptq", bits: 4 });
 * ```
 */
export function createReferenceQuantizer(
  gpu: Gpu | null,
  { onRetry }: { onRetry?: (message: string) => void } = {},
): HostQuantizer {
  return hostQuantizer(
    gpu,
    "reference",
    (W, H, opts) => gptqReference(W, H, referenceOptions(opts, onRetry)),
  );
}

/**
 * Wraps a host (f64) algorithm as a {@link HostQuantizer}: reads a GPU H back once, checks the shapes, and
 * converts the result to the pipeline's f32 types.
 * @param gpu the device holding H when it is a GPUBuffer
 * @param name for error messages ("reference", "exact")
 * @param run the algorithm: W (rows, cols), H (cols, cols) → the reference's result shape
 */
export function hostQuantizer(
  gpu: Gpu | null,
  name: string,
  run: (W: Float32Array, H: Float32Array, opts: QuantizeOptions) => GptqResult,
): HostQuantizer {
  return async ({ W, H, rows, cols }, opts) => {
    if (W.length !== rows * cols) {
      throw new Error(`Cannot quantize a (${rows}, ${cols}) layer: W has ${W.length} values`);
    }
    let hostH: Float32Array;
    if (H instanceof Float32Array) {
      hostH = H;
    } else {
      if (!gpu) {
        throw new Error(`Cannot read back a GPU Hessian: the ${name} quantizer was built without a GPU`);
      }
      hostH = await readMatrix(gpu, asParts(H, cols, cols), cols * cols);
    }
    if (hostH.length !== cols * cols) {
      throw new Error(`Cannot quantize a (${rows}, ${cols}) layer: H has ${hostH.length} values`);
    }
    const res = run(W, hostH, opts);
    const out: QuantizedLinear & { Q: Float32Array } = {
      rows,
      cols,
      bits: opts.bits,
      method: opts.method,
      codes: res.codes,
      loss: res.loss,
      dampUsed: res.dampUsed,
      Q: Float32Array.from(res.Q),
    };
    if (res.lut) out.lut = Float32Array.from(res.lut);
    if (res.scale && res.zero && res.gIdx) {
      out.scale = Float32Array.from(res.scale);
      out.zero = Float32Array.from(res.zero);
      out.gIdx = res.gIdx;
    }
    return out;
  };
}
