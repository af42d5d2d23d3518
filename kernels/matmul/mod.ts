/** Dense, affine (scale/zero) and LUT (per-row table) matrix products and their packed layouts. */
export {
  type AffinePacked,
  affineRowWords,
  type AffineWeights,
  createMatmulAffine,
  uploadAffine,
} from "./matmul_affine.ts";
export {
  createMatmulLut,
  lutCodeWords,
  type LutPacked,
  lutPieces,
  type LutWeights,
  uploadLut,
} from "./matmul_lut.ts";
export { createMatmul, GEMV_MAX_ROWS } from "./matmul.ts";
export { gemmCoreWgsl } from "./gemm_core_wgsl.ts";
export { AFFINE_Q8_MAX_ROWS, affineHasPrologue } from "./matmul_affine_plan.ts";
export { LUT_GEMV_BATCH_MAX_ROWS, LUT_PROLOGUE_MAX_ROWS, LUT_Q8_GEMV_MAX_ROWS } from "./matmul_lut_plan.ts";
