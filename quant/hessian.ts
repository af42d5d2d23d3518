/**
 * The Hessian of one linear layer's input on the GPU (docs/quantization.md §1.1; gptq.py `add_batch`):
 *   H = (2/N)·Σ_{all N calibration tokens} x·xᵀ,   (cols, cols) f32.
 *
 * Normalised by tokens, not sequences as add_batch does (H·n/(n+1) + (2/n)·X Xᵀ with n counting
 * sequences). The two differ only by the constant N_tokens/N_seq, which changes nothing downstream:
 * damping is relative to mean(diag H), the GPTQ update uses ratios of U's entries, and the LeanQuant
 * weights U_kk^−p are normalised by their maximum. Per-token scaling keeps H near the activations'
 * second moments, far from f32 overflow (§1.1, §6 item 4).
 *
 * Each window adds its raw Σ x·xᵀ to H's upper triangle (kernels/hessian_accum.ts: only tiles on or above
 * the diagonal run); `finalize()` scales by 2/N and mirrors the lower triangle once. Nothing is read back.
 * The f64 reference is quant/reference_hessian.ts `addBatch` with `perToken`.
 */
import {
  type BoundPlan,
  createMatrixParts,
  destroyMatrix,
  type Gpu,
  type MatrixParts,
} from "../kernels/core/mod.ts";
import { createHessianAccum } from "../kernels/quant/mod.ts";

/** A Hessian being accumulated on the GPU. */
export interface GpuHessian {
  /**
   * (cols, cols) f32 row-major, in one buffer or, past one binding (> 23,170 columns at 2 GiB), in two row
   * ranges (kernels/core/matrix_parts.ts). Before `finalize()` only the upper triangle holds the raw
   * Σ x·xᵀ; after it H = (2/tokens)·Σ x·xᵀ, exactly symmetric. Freed by `destroy()`.
   */
  readonly H: MatrixParts;
  readonly cols: number;
  /** Calibration tokens added so far. */
  readonly tokens: number;
  /**
   * Adds one window and submits it (queued after everything submitted before).
   * @param x (xRowOffset + tokens, cols) f32 row-major activations
   * @param tokens rows of x to add
   * @param xRowOffset first row of x (default 0)
   */
  addBatch(x: GPUBuffer, tokens: number, xRowOffset?: number): void;
  /** As {@link addBatch}, but records into the caller's pass (e.g. right after the forward that wrote x). */
  encodeBatch(pass: GPUComputePassEncoder, x: GPUBuffer, tokens: number, xRowOffset?: number): void;
  /** Scales by 2/tokens and mirrors, in its own submit: call once the last batch has been submitted. */
  finalize(): void;
  /** Frees H (every part) and the cached dispatch plans. */
  destroy(): void;
}

/** Throws unless rows xRowOffset..xRowOffset+n of x exist. */
function checkBatch(x: GPUBuffer, n: number, xRowOffset: number, cols: number): void {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(xRowOffset) || xRowOffset < 0) {
    throw new Error(`Cannot add a batch of ${n} tokens at row ${xRowOffset}: expected positive integers`);
  }
  if ((xRowOffset + n) * cols * 4 > x.size) {
    throw new Error(
      `Cannot add rows ${xRowOffset}..${xRowOffset + n} of "${x.label}": the buffer holds ` +
        `${Math.floor(x.size / (cols * 4))} rows of ${cols} columns`,
    );
  }
}

/** Records into one compute pass of its own and submits. */
function submit(gpu: Gpu, record: (pass: GPUComputePassEncoder) => void): void {
  const encoder = gpu.device.createCommandEncoder({ label: "hessian" });
  const pass = encoder.beginComputePass();
  record(pass);
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
}

/**
 * Creates a zero Hessian for a layer with `cols` input features.
 * @param gpu the device
 * @param cols in_features of the layer
 * @returns the accumulator; H is valid after `finalize()`
 * @example
 * ```ts ignore
 * const hessian = createHessian(gpu, dim);
 * for (const window of calibration) {
 *   runForwardCapturing(window, xBuf); // the layer input, (2048, dim) f32
 *   hessian.addBatch(xBuf, 2048);
 * }
 * hessian.finalize();
 * const factor = await factorHessian(gpu, hessian.H, dim);
 * ```
 */
export function createHessian(gpu: Gpu, cols: number): GpuHessian {
  if (!Number.isInteger(cols) || cols < 1) {
    throw new Error(`Cannot create a Hessian: cols ${cols} is invalid`);
  }
  // Past one binding H is two buffers of row ranges (up to 32,768 columns at 2 GiB; docs/webgpu.md §2).
  const H = createMatrixParts(gpu, cols, cols, `hessian ${cols}`);
  const kernel = createHessianAccum(gpu);
  // One plan per (x, tokens, offset): windows reuse a capture buffer, so a layer needs one or two.
  const plans = new Map<GPUBuffer, Map<string, BoundPlan>>();
  let tokens = 0;
  let finalized = false;

  function planFor(x: GPUBuffer, n: number, xRowOffset: number): BoundPlan {
    if (finalized) throw new Error("Cannot add to a Hessian after finalize()");
    checkBatch(x, n, xRowOffset, cols);
    const byShape = plans.get(x) ?? new Map<string, BoundPlan>();
    plans.set(x, byShape);
    const key = `${n}:${xRowOffset}`;
    let plan = byShape.get(key);
    if (!plan) {
      plan = kernel.bind({ x, H, cols, tokens: n, xRowOffset, alpha: 1, beta: 1 });
      byShape.set(key, plan);
    }
    tokens += n;
    return plan;
  }

  return {
    H,
    cols,
    get tokens() {
      return tokens;
    },
    addBatch(x, n, xRowOffset = 0) {
      const plan = planFor(x, n, xRowOffset);
      submit(gpu, (pass) => plan.encode(pass));
    },
    encodeBatch(pass, x, n, xRowOffset = 0) {
      planFor(x, n, xRowOffset).encode(pass);
    },
    finalize() {
      if (finalized) throw new Error("Cannot finalize a Hessian twice");
      if (tokens === 0) throw new Error("Cannot finalize a Hessian: no tokens were added");
      finalized = true;
      const plan = kernel.bind({ H, cols, tokens: 0, alpha: 2 / tokens, beta: 0, mirror: true });
      submit(gpu, (pass) => plan.encode(pass));
      plan.destroy();
    },
    destroy() {
      for (const byShape of plans.values()) for (const plan of byShape.values()) plan.destroy();
      plans.clear();
      destroyMatrix(H);
    },
  };
}
