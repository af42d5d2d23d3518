/**
 * LeanQuant's loss-error-aware grids on the GPU (docs/quantization.md §2): host drivers for the kernels
 * kernels/importance.ts (a_k = U_kk^(−p), normalised), kernels/kmeans.ts (LeanQuant_nu's per-row LUT)
 * and kernels/aff_search.ts (LeanQuant_aff's (scale, zero) search). The f64 specs are
 * quant/reference_grid.ts `importanceWeights`, `weightedKMeans` and `affSearch`/`affSearchFast`.
 *
 * Where each grid is fitted (as quant/reference.ts does it): the nu LUT and row-wise or static-group
 * affine grids once, after the Cholesky, on the original permuted W (dead columns zeroed); dynamic
 * groups inside the GPTQ loop at each group start, on the error-updated columns, through
 * {@link encodeAffineGroupSearch}. Everything here records into a compute pass the caller gives, or,
 * without one, runs its own pass and submits it; nothing reads back except {@link readAffineParams}.
 */
import { createAffSearch, createImportance, createKMeans } from "../kernels/quant/mod.ts";
import { createStorage, type Gpu, type MatrixBuffer, readF32, runPass } from "../kernels/core/mod.ts";
import { defaultAffSteps } from "./reference/mod.ts";

/** Records `fn` into `pass`, or into a pass of its own that is submitted at once. */
function record(gpu: Gpu, pass: GPUComputePassEncoder | undefined, fn: (p: GPUComputePassEncoder) => void) {
  if (pass) fn(pass);
  else runPass(gpu, fn);
}

/** Options of {@link importanceFromFactor}. */
export interface ImportanceOptions {
  /** U: (cols, cols) f32, the upper Cholesky factor of the damped, permuted H⁻¹ (one buffer or two parts) */
  U: MatrixBuffer;
  cols: number;
  /** p in a_k = U_kk^(−p) (default 4, the paper's) */
  exponent?: number;
  /** (cols) f32 output buffer; allocated when absent */
  importance?: GPUBuffer;
  pass?: GPUComputePassEncoder;
}

/**
 * LeanQuant importance on the GPU: a_k = U_kk^(−p) / max_j U_jj^(−p), one per permuted column.
 * @param gpu the device
 * @param options U, cols, exponent
 * @returns importance: (cols) f32 in (0, 1], max exactly 1
 * @example
 * ```ts ignore
 * const a = importanceFromFactor(gpu, { U, cols: 4096 });
 * ```
 */
export function importanceFromFactor(
  gpu: Gpu,
  { U, cols, exponent = 4, importance = createStorage(gpu, cols * 4, "importance"), pass }: ImportanceOptions,
): GPUBuffer {
  const bound = createImportance(gpu).bind({ U, importance, cols, exponent });
  record(gpu, pass, (p) => bound.encode(p));
  return importance;
}

/**
 * Host twin of {@link importanceFromFactor} from U's diagonal (read once: cols floats), in f64 and the
 * same ratio form (min U / U_kk)^p, which cannot overflow where U_kk^(−p) would.
 * @param diag (cols) U_kk > 0
 * @param exponent p ≥ 0 (default 4)
 * @returns importance: (cols) f32, max 1
 */
export function importanceFromDiagonal(diag: ArrayLike<number>, exponent = 4): Float32Array {
  let min = Infinity;
  for (let k = 0; k < diag.length; k++) min = Math.min(min, diag[k]);
  return Float32Array.from({ length: diag.length }, (_, k) => (min / diag[k]) ** exponent);
}

/** Options of {@link fitLut}. */
export interface FitLutOptions {
  /** W: (rows, cols) f32, permuted columns, dead columns zeroed (not error-updated) */
  W: GPUBuffer;
  rows: number;
  cols: number;
  /** importance: (cols) f32, same column order as W */
  importance: GPUBuffer;
  /** 1..4: K = 2^bits centres per row */
  bits: number;
  /** Lloyd iterations at most (default 100) */
  maxIter?: number;
  /** sklearn's relative tolerance on Σ shift² (default 1e-6) */
  tolFactor?: number;
  /** (rows, 2^bits) f32 output buffer; allocated when absent */
  lut?: GPUBuffer;
  pass?: GPUComputePassEncoder;
}

/**
 * LeanQuant_nu's grid: per-row weighted k-means, init linspace(min, max), rounded to f16.
 * @param gpu the device
 * @param options W, sizes, importance, bits
 * @returns lut: (rows, 2^bits) f32, ascending per row, every entry exactly representable in f16
 * @example
 * ```ts ignore
 * const lut = fitLut(gpu, { W, rows, cols, importance, bits: 4 });
 * ```
 */
export function fitLut(gpu: Gpu, options: FitLutOptions): GPUBuffer {
  const { W, rows, cols, importance, bits, maxIter = 100, tolFactor = 1e-6, pass } = options;
  const lut = options.lut ?? createStorage(gpu, rows * 2 ** bits * 4, "lut");
  const bound = createKMeans(gpu, { bits }).bind({ W, importance, lut, rows, cols, maxIter, tolFactor });
  record(gpu, pass, (p) => bound.encode(p));
  return lut;
}

/** Options of {@link searchAffine}. */
export interface SearchAffineOptions {
  /** W: (rows, cols) f32 */
  W: GPUBuffer;
  rows: number;
  cols: number;
  /** importance: (cols) f32, same column order as W (static groups: the original order) */
  importance: GPUBuffer;
  bits: number;
  /** columns per group; ≤ 0 (default) searches whole rows */
  groupSize?: number;
  /** range steps (default 2048) */
  T?: number;
  /** steps per end (default 0.2T / 0.3T / 0.4T for 4 / 3 / 2 bits) */
  t?: number;
  /** (rows, nGroups) vec2<f32> (scale, zero) output; allocated when absent */
  params?: GPUBuffer;
  /** optional (rows, nGroups) u32 output: the winning i·t + j */
  choice?: GPUBuffer;
  pass?: GPUComputePassEncoder;
}

/**
 * LeanQuant_aff's grids fitted before the loop: row-wise, or every group of every row at once (static
 * groups), in one dispatch.
 * @param gpu the device
 * @param options W, sizes, importance, bits, group size, T, t
 * @returns params: (rows, nGroups) vec2<f32> (scale, zero), nGroups = ceil(cols / groupSize) or 1
 * @example
 * ```ts ignore
 * const params = searchAffine(gpu, { W, rows, cols, importance, bits: 4 });
 * ```
 */
export function searchAffine(gpu: Gpu, options: SearchAffineOptions): GPUBuffer {
  const { W, rows, cols, importance, bits, groupSize = 0, T = 2048, t = defaultAffSteps(bits, T) } = options;
  const groupCols = groupSize > 0 ? groupSize : cols;
  const nGroups = Math.ceil(cols / groupCols);
  const params = options.params ?? createStorage(gpu, rows * nGroups * 8, "affine params");
  const bound = createAffSearch(gpu, { bits }).bind({
    W,
    importance,
    params,
    ...(options.choice ? { choice: options.choice } : {}),
    rows,
    cols,
    colStart: 0,
    groupCols,
    groupIndex: 0,
    groupCount: nGroups,
    nGroups,
    T,
    t,
  });
  record(gpu, options.pass, (p) => bound.encode(p));
  return params;
}

/** Options of {@link encodeAffineGroupSearch}: one group of every row, at a group start of the GPTQ loop. */
export interface AffineGroupSearchOptions {
  gpu: Gpu;
  /** W: (rows, cols) f32, the error-updated weights */
  W: GPUBuffer;
  rows: number;
  cols: number;
  /** first (permuted) column of the group */
  colStart: number;
  /** group width; a group running past `cols` is cut short */
  groupCols: number;
  /** which slot of each params row receives the result */
  groupIndex: number;
  /** params' row stride (default ceil(cols / groupCols)) */
  nGroups?: number;
  /** (rows, nGroups) vec2<f32> (scale, zero) output */
  params: GPUBuffer;
  /** importance: (cols) f32, same column order as W */
  importance: GPUBuffer;
  bits: number;
  /** range steps (default 2048) */
  T?: number;
  /** steps per end (default 0.2T / 0.3T / 0.4T for 4 / 3 / 2 bits) */
  t?: number;
  /** optional (rows, nGroups) u32 output: the winning i·t + j */
  choice?: GPUBuffer;
}

/**
 * The GPTQ-loop hook: records the search of one group (all rows, one workgroup each) into `pass`.
 * Call it at each group start, after the updates that group must see; it writes only `params`
 * (and `choice`), so later dispatches in the same pass read the new grid.
 * @param pass a compute pass the caller owns (never ended or submitted here)
 * @param options the group, buffers and search settings
 */
export function encodeAffineGroupSearch(
  pass: GPUComputePassEncoder,
  options: AffineGroupSearchOptions,
): void {
  const { gpu, W, rows, cols, colStart, groupCols, groupIndex, params, importance, bits } = options;
  const { T = 2048, t = defaultAffSteps(bits, T), nGroups = Math.ceil(cols / groupCols) } = options;
  const choice = options.choice ? { choice: options.choice } : {};
  createAffSearch(gpu, { bits })
    .bind({ W, importance, params, ...choice, rows, cols, colStart, groupCols, groupIndex, nGroups, T, t })
    .encode(pass);
}

/** What the GPTQ loop hands a group fitter (a subset of quant/gptq.ts `GroupFitArgs`). */
export interface AffineGroupFitArgs {
  /** (rows, cols) f32, the error-updated W in permuted order */
  W: GPUBuffer;
  /** (cols, cols) f32, the factor U (one buffer or two parts); the importance is derived from it when the fitter has none */
  U: MatrixBuffer;
  rows: number;
  cols: number;
  colStart: number;
  groupCols: number;
  groupIndex: number;
  nGroups: number;
  /** (rows, nGroups) vec2<f32> (scale, zero) */
  params: GPUBuffer;
}

/**
 * A group fitter for quant/gptq.ts (`grid: { kind: "affine-group", fitGroup }`): each call records one
 * {@link encodeAffineGroupSearch}. Without `importance`, the first call for a given U also records
 * {@link importanceFromFactor} into the same pass (before the search, so the search reads it).
 * @param gpu the device
 * @param options bits, T, t, and either the importance or the exponent to derive it with (default 4)
 * @returns (pass, args) => void, encode only
 * @example
 * ```ts ignore
 * const grid = { kind: "affine-group", fitGroup: createAffineGroupFitter(gpu, { bits: 4 }) } as const;
 * ```
 */
export function createAffineGroupFitter(
  gpu: Gpu,
  { bits, T = 2048, t = defaultAffSteps(bits, T), exponent = 4, importance }: {
    bits: number;
    T?: number;
    t?: number;
    exponent?: number;
    importance?: GPUBuffer;
  },
): (pass: GPUComputePassEncoder, args: AffineGroupFitArgs) => void {
  let derivedFor: MatrixBuffer | null = null;
  let derived: GPUBuffer | null = null;
  return (pass, { U, ...a }) => {
    let a32 = importance;
    if (!a32) {
      if (derivedFor !== U) {
        derived = importanceFromFactor(gpu, { U, cols: a.cols, exponent, pass });
        derivedFor = U;
      }
      a32 = derived!;
    }
    encodeAffineGroupSearch(pass, { ...a, gpu, importance: a32, bits, T, t });
  };
}

/**
 * Reads affine params back to the host (one round trip, ≥ 10 ms: once per layer, not per group).
 * @param gpu the device
 * @param params (rows, nGroups) vec2<f32> buffer
 * @param options rows and nGroups
 * @returns scale and zero, each (rows, nGroups)
 */
export async function readAffineParams(
  gpu: Gpu,
  params: GPUBuffer,
  { rows, nGroups }: { rows: number; nGroups: number },
): Promise<{ scale: Float32Array; zero: Float32Array }> {
  const pairs = await readF32(gpu, params, rows * nGroups * 2);
  const scale = new Float32Array(rows * nGroups);
  const zero = new Float32Array(rows * nGroups);
  for (let i = 0; i < scale.length; i++) [scale[i], zero[i]] = [pairs[2 * i], pairs[2 * i + 1]];
  return { scale, zero };
}
