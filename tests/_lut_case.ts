/**
 * One case of the LUT matmul tests (test helper): seeded random codes and tables, a bound
 * kernels/matmul/matmul_lut.ts call, and its check against the f64 reference (exact f32, the f16 GEMM's bound,
 * or int8 activations and tables for the int8 batched path).
 */
import assert from "node:assert/strict";
import { createMatmulLut, type LutPacked, uploadLut } from "../kernels/matmul/matmul_lut.ts";
import {
  LUT_GEMV_MAX_ROWS,
  type LutTune,
  planLutQ8mm,
  planMatmulLut,
} from "../kernels/matmul/matmul_lut_plan.ts";
import {
  dequantLutRef,
  lutQ8TablesRef,
  matmulLutRef,
  matmulRef,
  q8ActivationsRef,
  rmsNormRef,
  siluMulRef,
} from "../kernels/core/reference.ts";
import { gemmF16ErrorBound, type GemmMath } from "../kernels/matmul/gemm_core_wgsl.ts";
import { checkPipelines, type Gpu } from "../kernels/core/gpu.ts";
import { f16BitsToF32, f32ToF16Bits, readF32, runPass, uploadStorage } from "../kernels/core/buffers.ts";
import { type LutParts, packLut } from "../quant/pack_lut.ts";
import { randomF32, seededRandom } from "./_gpu.ts";
import { assertBoundedMatmul, assertStridedMatmul } from "./_assert.ts";

export interface Case {
  bits: 2 | 3 | 4;
  rows: number;
  inDim: number;
  outDim: number;
  accumulate?: boolean;
  xRowOffset?: number;
  yStride?: number;
  yColOffset?: number;
  tune?: LutTune;
  /** fuse an RMSNorm of x, or silu(x)·up, into the GEMV (rows ≤ 2) */
  prologue?: "norm" | "siluMul";
  /** the GEMM's arithmetic on the shared core: f32 (default) or f16 */
  gemmMath?: GemmMath;
  /** pin the batched engine's decode path */
  path?: "gemv";
  /** with `path: "gemv"`: the int8 batched path (int8 activations and tables) */
  activations?: "q8";
}

/** Forces the tiled GEMM for rows past 8 (by default 9–64 rows run as GEMV batches). */
export const GEMM: LutTune = { gemvMaxRows: LUT_GEMV_MAX_ROWS };

/** Seeded random codes and per-row LUTs rounded to f16, so the reference sees exactly what the kernel sees. */
export function randomLut(
  { bits, inDim, outDim }: Pick<Case, "bits" | "inDim" | "outDim">,
  seed: number,
): LutParts {
  const rand = seededRandom(seed);
  const levels = 1 << bits;
  return {
    rows: outDim,
    cols: inDim,
    bits,
    codes: Uint8Array.from({ length: outDim * inDim }, () => Math.floor(rand() * levels)),
    lut: Float32Array.from({ length: outDim * levels }, () => f16BitsToF32(f32ToF16Bits(rand() * 2 - 1))),
  };
}

/** The activation rows the kernel should multiply: x's rows after the case's prologue. */
function prologueRef(
  c: Case,
  x: Float32Array,
  up: Float32Array,
  normWeight: Float32Array,
): ArrayLike<number> {
  const from = (c.xRowOffset ?? 0) * c.inDim;
  const rows = x.subarray(from, from + c.rows * c.inDim);
  if (c.prologue === "norm") return rmsNormRef(rows, normWeight, c.rows, 1e-5);
  if (c.prologue === "siluMul") return siluMulRef(rows, up.subarray(from, from + c.rows * c.inDim));
  return rows;
}

/** Runs one case and checks the written columns by NMSE and every other element of y unchanged. */
export async function runCase(
  gpu: Gpu,
  c: Case,
  given?: { parts: LutParts; packed: LutPacked },
): Promise<void> {
  const { rows, inDim, outDim, xRowOffset = 0, yColOffset = 0, yStride = outDim + yColOffset } = c;
  const seed = c.bits * 1_000_003 + rows * 7919 + inDim * 131 + outDim;
  const w = given?.parts ?? randomLut(c, seed);
  const packed = given?.packed ?? packLut(w);
  const x = randomF32((xRowOffset + rows) * inDim, seed + 1);
  const y0 = randomF32(rows * yStride, seed + 2);
  const y = uploadStorage(gpu, y0, "y");
  const spec = {
    accumulate: c.accumulate ?? false,
    ...(c.tune ? { tune: c.tune } : {}),
    ...(c.gemmMath ? { gemmMath: c.gemmMath } : {}),
    ...(c.path ? { path: c.path } : {}),
    ...(c.activations ? { activations: c.activations } : {}),
  };
  const normWeight = Float32Array.from({ length: inDim }, (_, i) => 0.5 + ((i * 7919) % 101) / 100);
  const up = randomF32((xRowOffset + rows) * inDim, seed + 3);
  const bound = createMatmulLut(gpu, spec).bind({
    x: uploadStorage(gpu, x, "x"),
    w: uploadLut(gpu, packed, "w"),
    y,
    rows,
    xRowOffset,
    yStride,
    yColOffset,
    ...(c.prologue === "norm" ? { norm: { weight: uploadStorage(gpu, normWeight, "nw"), eps: 1e-5 } } : {}),
    ...(c.prologue === "siluMul" ? { siluMulUp: uploadStorage(gpu, up, "up") } : {}),
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  const got = await readF32(gpu, y, rows * yStride);

  const xs = prologueRef(c, x, up, normWeight);
  const out = { rows, outDim, yStride, yColOffset };
  const want = (accIn: Float32Array) =>
    matmulLutRef(xs, { ...w, outDim, inDim }, c.accumulate ? { acc: accIn } : {});
  const what = JSON.stringify(c);
  if (c.activations === "q8") {
    // int8 activations and tables: what the kernel multiplies, in f64 (its sums are f32); and near the
    // exact product (the error the two roundings add, ~1e-4 relative for random tables and activations)
    const q8 = { ...w, lut: lutQ8TablesRef(w.lut, 1 << c.bits), outDim, inDim };
    assertStridedMatmul(
      got,
      y0,
      out,
      (accIn) => matmulLutRef(q8ActivationsRef(xs, inDim), q8, c.accumulate ? { acc: accIn } : {}),
      { what },
    );
    assertStridedMatmul(got, y0, out, want, { what: `${what} against the exact product`, tol: 2e-4 });
    return;
  }
  const shader = planMatmulLut(spec, { ...c, hasF16: gpu.hasF16 })[0].shader;
  if (shader.path === "gemm" && shader.math === "f16") {
    // f16 arithmetic: every element within the worst-case bound, and a typical error near f16 rounding.
    const q = dequantLutRef({ ...w, outDim, inDim }).map(Math.abs);
    const abs = matmulRef(Array.from(xs, Math.abs), q, rows, inDim, outDim);
    const e = assertBoundedMatmul(got, y0, out, want, (i, v) => gemmF16ErrorBound(abs[i], inDim, v), what);
    assert.ok(e <= 2e-6, `${what}: f16 GEMM nmse ${e.toExponential(3)} > 2e-6`);
    return;
  }
  assertStridedMatmul(got, y0, out, want, { what });
}

export function caseName(c: Case): string {
  const spec = {
    accumulate: false,
    ...(c.tune ? { tune: c.tune } : {}),
    ...(c.path ? { path: c.path } : {}),
  };
  const steps = c.activations === "q8"
    ? planLutQ8mm(spec, c)
    : planMatmulLut(spec, { ...c, prologue: c.path ? "none" : c.prologue ?? "none" });
  const path = steps[0].shader.path === "gemv" ? `gemv×${steps.length}` : steps[0].shader.path;
  return `${path} ${c.bits}-bit${c.accumulate ? " +=" : ""} rows ${c.rows}, ${c.outDim}×${c.inDim}` +
    (c.xRowOffset || c.yColOffset
      ? `, xRowOffset ${c.xRowOffset ?? 0}, yColOffset ${c.yColOffset ?? 0}`
      : "") +
    (c.tune ? ` ${JSON.stringify(c.tune)}` : "");
}
