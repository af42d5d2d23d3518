/**
 * fasterquant's prologue on the GPU (docs/quantization.md §1.2 steps 3, 6, 7, 8): dead columns, the act-order
 * permutation, damping with retries, and the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), which gptq.py
 * keeps calling `Hinv` although it is not the inverse.
 *
 * U comes from the reversal identity U = J·inv(chol_lower(J H J))·J: one blocked Cholesky
 * (kernels/cholesky.ts) and one blocked triangular inverse (kernels/tri_inv.ts), never a full inverse.
 * The only readbacks are diag(H) once (n floats, for the host-side sort and the damping mean) and the
 * Cholesky's failure flag once per attempt. H itself is never written: each attempt rebuilds
 * J·P·(H_fixed + λI)·Pᵀ·J from it in one gather pass (kernels/sym_permute.ts).
 *
 * The f64 reference is quant/reference_hessian.ts `prepareLayer` with reference_linalg.ts `dampAndFactor`,
 * whose retry policy and messages this follows (percdamp ×10 per retry; 0 restarts at 0.01).
 */
import {
  type BoundPlan,
  createMatrixParts,
  createStorage,
  destroyMatrix,
  type Gpu,
  type MatrixBuffer,
  matrixBytes,
  type MatrixParts,
  readF32,
  readU32,
  uploadStorage,
  writeBuffer,
} from "../kernels/core/mod.ts";
import { createCholesky, createDiagGather, createSymPermute, createTriInv } from "../kernels/quant/mod.ts";
import { argsortDesc } from "./reference/mod.ts";

/** Options of {@link factorHessian} (defaults as in the LeanQuant reference code). */
export interface FactorOptions {
  /** Quantize columns in order of decreasing H_cc (default true). */
  actOrder?: boolean;
  /** λ = percdamp · mean(diag H), after the dead-column fix (default 0.01). */
  percdamp?: number;
  /** Retries after a failed Cholesky, each with percdamp ×10 (default 4). */
  maxRetries?: number;
  /** Receives one line per retry (default console.warn). */
  onRetry?: (message: string) => void;
}

/** The factor and the bookkeeping the GPTQ loop needs. */
export interface HessianFactor {
  /**
   * (cols, cols) f32 row-major, upper-triangular (exact zeros below the diagonal), positive diagonal,
   * in the PERMUTED order: U[k][j] relates the k-th and j-th quantized columns. H⁻¹ = UᵀU for the
   * damped, permuted H. One buffer, or two row ranges past one binding (kernels/core/matrix_parts.ts).
   * The caller owns it and frees it (`destroyMatrix`).
   */
  U: MatrixParts;
  /** (cols) perm[k] = original column quantized k-th (identity without act-order) */
  perm: Int32Array;
  /** (cols) invperm[c] = rank of original column c */
  invperm: Int32Array;
  /** (cols) 1 where H_cc == 0, in ORIGINAL order: the caller zeroes W[:, c] */
  dead: Uint8Array;
  /** Absolute λ added to the diagonal (the one that succeeded). */
  dampUsed: number;
  /** Relative damping that succeeded (percdamp · 10^retries). */
  percdampUsed: number;
  /** Failed attempts before the one returned. */
  retries: number;
}

/** Dead columns, act-order and the damping base from diag(H) (f32 values, summed in f64). */
function planColumns(diag: Float32Array, actOrder: boolean) {
  const n = diag.length;
  const dead = new Uint8Array(n);
  const fixed = new Float64Array(n);
  let meanDiag = 0;
  for (let c = 0; c < n; c++) {
    dead[c] = diag[c] === 0 ? 1 : 0;
    fixed[c] = dead[c] ? 1 : diag[c];
    meanDiag += fixed[c];
  }
  const perm = actOrder ? argsortDesc(fixed) : Int32Array.from({ length: n }, (_, i) => i);
  const invperm = new Int32Array(n);
  perm.forEach((c, k) => invperm[c] = k);
  return { dead, perm, invperm, meanDiag: meanDiag / n };
}

/** Records `plans` into one pass and submits. */
function submit(gpu: Gpu, plans: readonly BoundPlan[]): void {
  const encoder = gpu.device.createCommandEncoder({ label: "factorHessian" });
  const pass = encoder.beginComputePass();
  for (const plan of plans) plan.encode(pass);
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
}

/** Reads diag(H) back: one small dispatch and one readback of n floats. */
async function readDiagonal(gpu: Gpu, H: MatrixBuffer, n: number): Promise<Float32Array> {
  const d = createStorage(gpu, n * 4, "factorHessian diag");
  const plan = createDiagGather(gpu).bind({ A: H, d, n });
  try {
    submit(gpu, [plan]);
    return await readF32(gpu, d, n);
  } finally {
    plan.destroy();
    d.destroy();
  }
}

/**
 * Factors a Hessian for the GPTQ loop: fixes dead columns, orders columns by act-order, damps, and
 * returns U with H⁻¹ = UᵀU, all in f32 on the GPU; retries with 10× the damping when the Cholesky fails.
 * @param gpu the device
 * @param H (cols, cols) f32 row-major, symmetric (e.g. {@link createHessian}'s after finalize), one buffer or
 *   two parts; not modified
 * @param cols order of H
 * @returns U, the permutation, dead columns and the damping used
 * @throws Error when every attempt fails (H non-finite, or still indefinite after maxRetries)
 * @example
 * ```ts ignore
 * const { U, perm, dead, dampUsed } = await factorHessian(gpu, hessian.H, cols, { percdamp: 0.1 });
 * ```
 */
export async function factorHessian(
  gpu: Gpu,
  H: MatrixBuffer,
  cols: number,
  { actOrder = true, percdamp = 0.01, maxRetries = 4, onRetry = console.warn }: FactorOptions = {},
): Promise<HessianFactor> {
  const bytes = cols * cols * 4;
  if (!Number.isInteger(cols) || cols < 1 || matrixBytes(H) < bytes) {
    throw new Error(
      `Cannot factor the Hessian: expected (${cols}, ${cols}) f32, got ${matrixBytes(H)} bytes`,
    );
  }
  const { dead, perm, invperm, meanDiag } = planColumns(await readDiagonal(gpu, H, cols), actOrder);
  const permBuf = actOrder ? uploadStorage(gpu, perm, "factorHessian perm") : undefined;
  // Past one binding, A and X are two parts each (kernels/core/matrix_parts.ts), like H.
  const A = createMatrixParts(gpu, cols, cols, "factorHessian U"); // J·P·H·Pᵀ·J, then L, then U
  const X = createMatrixParts(gpu, cols, cols, "factorHessian L⁻¹");
  const flag = createStorage(gpu, 4, "factorHessian flag");
  const permute = createSymPermute(gpu);
  const fixed = [
    createCholesky(gpu).bind({ A, n: cols, flag }),
    createTriInv(gpu).bind({ L: A, X, n: cols }),
    permute.bind({ src: X, dst: A, n: cols, reverse: true, upperOnly: true }),
  ];
  let U: MatrixParts | null = null;
  try {
    let pd = percdamp;
    for (let retries = 0; retries <= maxRetries; retries++) {
      const damp = pd * meanDiag;
      const build = permute.bind({
        src: H,
        dst: A,
        n: cols,
        perm: permBuf,
        reverse: true,
        fixDead: true,
        damp,
      });
      writeBuffer(gpu, flag, new Uint32Array(1));
      submit(gpu, [build, ...fixed]);
      build.destroy();
      if ((await readU32(gpu, flag, 1))[0] === 0) {
        U = A;
        return { U, perm, invperm, dead, dampUsed: damp, percdampUsed: pd, retries };
      }
      const next = pd > 0 ? pd * 10 : 0.01;
      if (retries < maxRetries) {
        onRetry(`Cholesky failed with percdamp ${pd}: retrying with percdamp ${next}`);
      }
      pd = next;
    }
    throw new Error(`Cannot factor the Hessian: Cholesky failed up to percdamp ${pd / 10}`);
  } finally {
    for (const plan of fixed) plan.destroy();
    destroyMatrix(X);
    for (const buffer of [flag, permBuf]) buffer?.destroy();
    if (!U) destroyMatrix(A);
  }
}
