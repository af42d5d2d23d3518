/**
 * The f64 reference of the LeanQuant/GPTQ spec (docs/quantization.md): small layers, exact, the yardstick of
 * the GPU quantizer.
 */
export { type ExactOptions, exactReference } from "./reference_exact.ts";
export { defaultAffSteps } from "./reference_grid.ts";
export { argsortDesc } from "./reference_linalg.ts";
export { createReferenceQuantizer, hostQuantizer } from "./reference_quantizer.ts";
