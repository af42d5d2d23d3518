/**
 * A {@link HostQuantizer} backed by LeanQuant-Exact (reference_exact.ts, docs/quantization.md §2.5): per-row greedy OBQ
 * in f64 on the host, O(R·C³), meant for small networks (C up to a few hundred). Its output has exactly the
 * shape of the GPTQ-loop methods, so the file writer, the reader and the inference kernels serve it unchanged:
 * method "leanquant-nu" gives a per-row f16-representable LUT, "leanquant-aff" row-wise scale/zero with gIdx 0.
 * The greedy loop picks its own column order per row, so actOrder and blockSize do not apply.
 */
import type { Gpu } from "../kernels/core/mod.ts";
import { type ExactOptions, exactReference, hostQuantizer } from "./reference/mod.ts";
import type { HostQuantizer } from "./types.ts";
import type { QuantizeOptions } from "./types.ts";

/**
 * The exact variant's options for our contract's options; only the LeanQuant grids, row-wise, apply.
 * @param opts the pipeline's per-layer options
 * @param onRetry receives the damping-retry lines
 * @returns options for `exactReference`
 */
export function exactOptions(opts: QuantizeOptions, onRetry?: (message: string) => void): ExactOptions {
  if (opts.method !== "leanquant-nu" && opts.method !== "leanquant-aff") {
    throw new Error(
      `Cannot quantize "${opts.method}" with the exact quantizer: expected leanquant-nu or leanquant-aff`,
    );
  }
  if (opts.method === "leanquant-aff" && opts.groupSize > 0) {
    throw new Error(
      `Cannot quantize leanquant-aff with groupSize ${opts.groupSize} exactly: the exact grid is row-wise (0)`,
    );
  }
  const o: ExactOptions = {
    bits: opts.bits,
    grid: opts.method === "leanquant-nu" ? "nu" : "aff",
    percdamp: opts.percdamp,
    exponent: opts.exponent,
    affT: opts.affT,
  };
  if (opts.affSteps !== undefined) o.affSteps = opts.affSteps;
  if (onRetry) o.onRetry = onRetry;
  return o;
}

/**
 * A quantizer running LeanQuant-Exact on the host. A GPU H is read back first (one readback per layer).
 * @param gpu the device holding H when it is a GPUBuffer (unused for host H)
 * @param options `onRetry` receives damping-retry lines (default console.warn)
 * @returns the quantizer
 * @example
 * ```ts ignore
 * const quantizer = createExactQuantizer(gpu);
 * const q = await quantizer({ W, H, rows, cols }, { ...QUANTIZE_DEFAULTS, method: "leanquant-nu", bits: 3 });
 * ```
 */
export function createExactQuantizer(
  gpu: Gpu | null,
  { onRetry }: { onRetry?: (message: string) => void } = {},
): HostQuantizer {
  return hostQuantizer(gpu, "exact", (W, H, opts) => exactReference(W, H, exactOptions(opts, onRetry)));
}
