/**
 * The GPU implementation of the pipeline's per-layer quantizer slot (`LinearQuantizer`,
 * reference_quantizer.ts): factor H on the GPU (cholesky.ts), fit the grid (grid.ts), run the GPTQ
 * loop (gptq.ts). Only the diagonal of H, the codes, the grid and the loss cross to the host.
 *
 * Where the grid is fitted (docs/quantization.md §2.2–2.3): the nu LUT and the row-wise affine grid once, before
 * the loop, on the original weights in act-order with dead columns zeroed, weighted by a_k = U_kk^(−p);
 * the group-wise affine grid at each group start inside the loop, on the error-updated columns.
 */
import {
  createStorage,
  type Gpu,
  matrixBindings,
  type MatrixBuffer,
  runPass,
  uploadMatrix,
  uploadStorage,
} from "../kernels/core/mod.ts";
import { createGatherCols } from "../kernels/quant/mod.ts";
import { factorHessian } from "./cholesky.ts";
import { createAffineGroupFitter, fitLut, importanceFromFactor, searchAffine } from "./grid.ts";
import { type GridInput, quantizeLinear } from "./gptq.ts";
import type { LinearQuantizer } from "./types.ts";
import type { QuantizeOptions } from "./types.ts";

/**
 * Builds the GPU quantizer. Its Q is a GPU buffer (rows, cols) f32 in original order that the caller owns.
 * @param gpu the device
 * @param options onRetry receives the damping-retry lines
 */
export function createGpuQuantizer(
  gpu: Gpu,
  { onRetry = console.warn }: { onRetry?: (message: string) => void } = {},
): LinearQuantizer {
  return async (input, opts) => {
    const { rows, cols } = input;
    const temps: GPUBuffer[] = [];
    const temp = (b: GPUBuffer) => (temps.push(b), b);
    const W = uploadStorage(gpu, input.W, "quantize W"); // (rows, cols) original order; returned holding Q
    try {
      // A host H goes up in one buffer, or two past one binding (kernels/core/matrix_parts.ts).
      const H = input.H instanceof Float32Array
        ? uploadMatrix(gpu, input.H, cols, cols, "quantize H")
        : input.H;
      if (H !== input.H) matrixBindings(H).forEach(temp);
      const factor = await factorHessian(gpu, H, cols, {
        actOrder: opts.actOrder,
        percdamp: opts.percdamp,
        onRetry,
      });
      factor.U.parts.forEach(temp);
      const grid = fitGrid(
        gpu,
        { W, rows, cols, U: factor.U, perm: factor.perm, dead: factor.dead },
        opts,
        temp,
      );
      return await quantizeLinear(gpu, { W, rows, cols, ...factor, grid }, opts);
    } catch (err) {
      W.destroy();
      throw err;
    } finally {
      temps.forEach((b) => b.destroy());
    }
  };
}

interface FitInput {
  W: GPUBuffer;
  rows: number;
  cols: number;
  U: MatrixBuffer;
  perm: Int32Array;
  dead: Uint8Array;
}

/** The grid input of gptq.ts for a method (fitting what is fitted before the loop). */
function fitGrid(gpu: Gpu, f: FitInput, opts: QuantizeOptions, temp: (b: GPUBuffer) => GPUBuffer): GridInput {
  const { method, bits, exponent } = opts;
  const affine = { T: opts.affT, ...(opts.affSteps !== undefined ? { t: opts.affSteps } : {}) };
  if (method === "rtn" || method === "gptq") return { kind: "minmax" };
  if (method === "leanquant-aff" && opts.groupSize > 0) {
    return { kind: "affine-group", fitGroup: createAffineGroupFitter(gpu, { bits, exponent, ...affine }) };
  }
  const { rows, cols } = f;
  // The grid is fitted on W[:, perm] with dead columns zeroed, matching the importance's column order.
  const Wp = temp(createStorage(gpu, rows * cols * 4, "grid W permuted"));
  const idx = temp(uploadStorage(gpu, Int32Array.from(f.perm, (c) => f.dead[c] ? -1 : c), "grid perm"));
  const gather = createGatherCols(gpu, { bytes: 4 }).bind({
    src: f.W,
    idx,
    dst: Wp,
    rows,
    cols,
    srcStride: cols,
  });
  runPass(gpu, (pass) => gather.encode(pass));
  const importance = temp(importanceFromFactor(gpu, { U: f.U, cols, exponent }));
  if (method === "leanquant-nu") {
    return { kind: "lut", lut: temp(fitLut(gpu, { W: Wp, rows, cols, importance, bits })) };
  }
  const params = temp(searchAffine(gpu, { W: Wp, rows, cols, importance, bits, groupSize: 0, ...affine }));
  return { kind: "affine-row", params };
}
