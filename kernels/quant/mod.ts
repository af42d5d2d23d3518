/**
 * The quantizer's kernels: Hessian accumulation, blocked Cholesky and triangular inverse, importance,
 * k-means, affine search, GPTQ blocks and updates, and their small helpers.
 */
export { createAffSearch } from "./aff_search.ts";
export { createCholesky } from "./cholesky.ts";
export { createDiagGather } from "./diag_gather.ts";
export { createGatherCols } from "./gather_cols.ts";
export { createGptqBlock } from "./gptq_block.ts";
export { createGptqUpdate } from "./gptq_update.ts";
export { createHessianAccum, HESSIAN_TILE } from "./hessian_accum.ts";
export { createImportance } from "./importance.ts";
export { createKMeans } from "./kmeans.ts";
export { createMinMaxParams } from "./minmax_params.ts";
export { createSymPermute } from "./sym_permute.ts";
export { createTriInv } from "./tri_inv.ts";
