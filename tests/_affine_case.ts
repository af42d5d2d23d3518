/**
 * One case of the affine matmul tests (test helper): a seeded random quantized weight, a bound
 * kernels/matmul/matmul_affine.ts call, and its check against the f64 reference (exact f32, f16 GEMM bound,
 * or int8 activations for the q8 paths).
 */
import assert from "node:assert/strict";
import {
  AFFINE_GEMV_MAX_ROWS,
  AFFINE_Q8_MAX_ROWS,
  type AffineTune,
  planMatmulAffine,
} from "../kernels/matmul/matmul_affine_plan.ts";
import { type AffinePacked, createMatmulAffine, uploadAffine } from "../kernels/matmul/matmul_affine.ts";
import {
  dequantAffineRef,
  matmulAffineRef,
  matmulRef,
  q8ActivationsRef,
  rmsNormRef,
  siluMulRef,
} from "../kernels/core/reference.ts";
import { gemmF16ErrorBound, type GemmMath } from "../kernels/matmul/gemm_core_wgsl.ts";
import { checkPipelines, type Gpu } from "../kernels/core/gpu.ts";
import { f16BitsToF32, f32ToF16Bits, readF32, runPass, uploadStorage } from "../kernels/core/buffers.ts";
import { type AffineParts, packAffine } from "../quant/pack_affine.ts";
import { randomF32, seededRandom } from "./_gpu.ts";
import { assertBoundedMatmul, assertStridedMatmul } from "./_assert.ts";

export interface Case {
  bits: 2 | 3 | 4;
  /** 0 = one group per row */
  group: number;
  /** act-order g_idx (groups not contiguous in the original order) */
  gIdx?: boolean;
  rows: number;
  inDim: number;
  outDim: number;
  accumulate?: boolean;
  xRowOffset?: number;
  yStride?: number;
  yColOffset?: number;
  tune?: AffineTune;
  /** decode activations (default: the kernel's default, q8 for 1–2 rows (any bit width)) */
  activations?: "q8" | "f32";
  /** fuse an RMSNorm of x (q8 GEMV only) */
  norm?: boolean;
  /** x is a gate: fuse silu(x)·up (q8 GEMV only) */
  siluMul?: boolean;
  /** the GEMM's arithmetic (default: the kernel's, f16 with shader-f16) */
  gemmMath?: GemmMath;
  /** pin the path (the batched engine's calls): "gemv" with q8 activations is the batched q8 path */
  path?: "gemv" | "gemm";
}

const f16 = (v: number) => f16BitsToF32(f32ToF16Bits(v));

/**
 * Seeded random quantized weight with f16-exact scales and zeros (so packing is lossless and the
 * reference sees exactly what the kernel sees); zeros are fractional too, as a searched grid allows.
 */
export function randomAffine(
  { bits, group, gIdx, inDim, outDim }: Pick<Case, "bits" | "group" | "gIdx" | "inDim" | "outDim">,
  seed: number,
): AffineParts {
  const rand = seededRandom(seed);
  const nGroups = group ? Math.ceil(inDim / group) : 1;
  const levels = 1 << bits;
  const parts: AffineParts = {
    rows: outDim,
    cols: inDim,
    bits,
    codes: Uint8Array.from({ length: outDim * inDim }, () => Math.floor(rand() * levels)),
    scale: Float32Array.from({ length: outDim * nGroups }, () => f16((0.2 + rand()) / levels)),
    zero: Float32Array.from({ length: outDim * nGroups }, () => f16(rand() * (levels - 1))),
  };
  if (gIdx) {
    // Act-order: column c is quantized at rank[c]; its group is rank // groupSize.
    const rank = Int32Array.from({ length: inDim }, (_, i) => i);
    for (let i = inDim - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [rank[i], rank[j]] = [rank[j], rank[i]];
    }
    parts.gIdx = rank.map((r) => group ? Math.floor(r / group) : 0);
  }
  return parts;
}

/** Runs one case and checks the written columns by NMSE and every other element of y unchanged. */
export async function runCase(
  gpu: Gpu,
  c: Case,
  given?: { parts: AffineParts; packed: AffinePacked },
): Promise<void> {
  const { rows, inDim, outDim, xRowOffset = 0, yColOffset = 0, yStride = outDim + yColOffset } = c;
  const seed = c.bits * 1_000_003 + rows * 7919 + inDim * 131 + outDim + c.group;
  const w = given?.parts ?? randomAffine(c, seed);
  const packed = given?.packed ?? packAffine(w, { groupSize: c.group });
  assert.equal(packed.perm !== undefined, c.gIdx === true, "perm iff act-order");
  const x = randomF32((xRowOffset + rows) * inDim, seed + 1);
  const y0 = randomF32(rows * yStride, seed + 2);
  const y = uploadStorage(gpu, y0, "y");
  const spec = {
    accumulate: c.accumulate ?? false,
    ...(c.tune ? { tune: c.tune } : {}),
    ...(c.activations ? { activations: c.activations } : {}),
    ...(c.gemmMath ? { gemmMath: c.gemmMath } : {}),
    ...(c.path ? { path: c.path } : {}),
  };
  const prologue = c.norm ? "norm" as const : c.siluMul ? "siluMul" as const : "none" as const;
  const shape = {
    ...c,
    groupSize: c.group,
    hasPerm: packed.perm !== undefined,
    prologue,
    hasF16: gpu.hasF16,
  };
  const up = randomF32((xRowOffset + rows) * inDim, seed + 3);
  // (a batched q8 call plans each dispatch of at most 16 rows; the first one names the path)
  const shader = planMatmulAffine(spec, { ...shape, rows: c.path === "gemv" ? 1 : rows }).shader;
  const path = shader.path;
  const eps = 1e-5;
  const normWeight = Float32Array.from({ length: inDim }, (_, i) => 0.5 + ((i * 7919) % 101) / 100);
  const bound = createMatmulAffine(gpu, spec).bind({
    x: uploadStorage(gpu, x, "x"),
    w: uploadAffine(gpu, packed, "w"),
    y,
    rows,
    xRowOffset,
    yStride,
    yColOffset,
    ...(c.norm ? { norm: { weight: uploadStorage(gpu, normWeight, "norm weight"), eps } } : {}),
    ...(c.siluMul ? { siluMulUp: uploadStorage(gpu, up, "up") } : {}),
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => bound.encode(pass));
  const got = await readF32(gpu, y, rows * yStride);

  const xRows = x.subarray(xRowOffset * inDim, (xRowOffset + rows) * inDim);
  const upRows = up.subarray(xRowOffset * inDim, (xRowOffset + rows) * inDim);
  const xs = c.norm
    ? rmsNormRef(xRows, normWeight, rows, eps)
    : c.siluMul
    ? siluMulRef(xRows, upRows)
    : xRows;
  const ref = (xr: ArrayLike<number>, accIn: Float32Array) =>
    matmulAffineRef(xr, { ...w, outDim, inDim, groupSize: c.group }, c.accumulate ? { acc: accIn } : {});
  const out = { rows, outDim, yStride, yColOffset };
  const what = `${path} ${JSON.stringify(c)}`;
  if (shader.path === "gemm" && shader.math === "f16") {
    // f16 arithmetic: every element within the worst-case bound, and a typical error near f16 rounding.
    const q = dequantAffineRef({ ...w, outDim, inDim, groupSize: c.group }).map(Math.abs);
    const abs = matmulRef(xs.map(Math.abs), q, rows, inDim, outDim);
    const bound = (i: number, v: number) => gemmF16ErrorBound(abs[i], inDim, v);
    const e = assertBoundedMatmul(got, y0, out, (accIn) => ref(xs, accIn), bound, what);
    assert.ok(e <= 2e-6, `${what}: f16 GEMM nmse ${e.toExponential(3)} > 2e-6`);
    return;
  }
  if (path !== "q8" && path !== "q8mm") {
    assertStridedMatmul(got, y0, out, (accIn) => ref(xs, accIn), { what });
    return;
  }
  // q8: exact up to the int8 activations (a rare rounding tie decided the other way moves NMSE ~1e-7),
  // and close to the unquantized product.
  assertStridedMatmul(got, y0, out, (accIn) => ref(q8ActivationsRef(xs, inDim, packed.perm), accIn), {
    tol: 1e-6,
    what,
  });
  assertStridedMatmul(got, y0, out, (accIn) => ref(xs, accIn), { tol: 1e-3, what: `${what} vs f32` });
}

export function caseName(c: Case): string {
  const q8 = (c.activations ?? "q8") === "q8" && (c.rows <= AFFINE_Q8_MAX_ROWS || c.path === "gemv");
  const path = q8
    ? c.path === "gemv" ? "q8mm" : "q8"
    : c.path ?? (c.rows <= AFFINE_GEMV_MAX_ROWS ? "gemv" : "gemm");
  return `${path} ${c.bits}-bit ${c.group ? `g${c.group}` : "per-row"}${c.gIdx ? " g_idx" : ""}` +
    `${c.accumulate ? " +=" : ""}${c.norm ? " rmsnorm" : ""}${
      c.siluMul ? " silu·mul" : ""
    } rows ${c.rows}, ${c.outDim}×${c.inDim}` +
    (c.xRowOffset || c.yColOffset
      ? `, xRowOffset ${c.xRowOffset ?? 0}, yColOffset ${c.yColOffset ?? 0}`
      : "");
}
