/**
 * The model on the GPU: config, weights (full precision and quantized folders), upload, the forward pass as
 * bound kernels and the linear layers. Loads through inference/formats; never imports the engine.
 */
export { destroyGpuLayer, linearBytes, LINEARS, replaceLinear, uploadHostLayer } from "./gpu_layer.ts";
export {
  bindLinear,
  type DenseLinear,
  type GpuLinear,
  linearBuffers,
  uploadDense,
  uploadLinear,
  weightBytes,
  type WeightType,
} from "./linear.ts";
export { loadModelConfig, type ModelConfig, parseModelConfig } from "./model_config.ts";
export {
  bindForward,
  bindForwardSteps,
  createForwardState,
  type ForwardState,
  forwardStateBuffers,
  type GpuLayer,
  type GpuWeights,
  gpuWeightsBuffers,
} from "./model.ts";
export { createQuantizedWriter, uploadQuantizedWeights } from "./quant_folder.ts";
export {
  type LinearField,
  modulePrefix,
  type ParsedQuantization,
  parseQuantization,
  type QuantizedLayer,
} from "./quant_format.ts";
export { resolveWeightType, uploadModelWeights } from "./upload.ts";
export { type LayerWeights, type LlamaWeightSource, openLlamaWeights } from "./weights.ts";
