/**
 * Quantization of one linear layer on the GPU (Hessian, factor, grid, GPTQ loop) and packing its codes.
 * Sees matrices and activations, never a model.
 */
export { createExactQuantizer, exactOptions } from "./exact_quantizer.ts";
export { createGpuQuantizer } from "./gpu_quantizer.ts";
export { createHessian } from "./hessian.ts";
export { packAffine } from "./pack_affine.ts";
export { packLut } from "./pack_lut.ts";
export {
  type LinearQuantizer,
  LM_HEAD_GROUP_SIZE,
  type LmHeadBits,
  QUANTIZE_DEFAULTS,
  type QuantizedLinear,
  type QuantizedLinearWithQ,
  type QuantizeOptions,
  type QuantMethod,
  REFERENCE_GRID,
} from "./types.ts";
