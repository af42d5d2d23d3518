/**
 * The model on the GPU: config, weights (full precision and quantized folders), upload, the forward pass as
 * bound kernels and the linear layers. Loads through inference/formats; never imports the engine.
 */
export {
  bindDecoderLayer,
  type BoundDecoderLayer,
  createLayerKernels,
  type DecoderLayerOptions,
  type ForwardStep,
  LAYER_STAGES,
  type LayerActivations,
  type LayerKernels,
  type LayerKv,
  type LayerStage,
  step as forwardStep,
} from "./decoder_layer.ts";
export {
  destroyGpuLayer,
  gpuWeightsBuffers,
  layerVectorBuffers,
  linearBytes,
  LINEARS,
  replaceLinear,
  uploadHostLayer,
} from "./gpu_layer.ts";
export {
  bindLinear,
  type DenseLinear,
  type GpuLinear,
  linearBuffers,
  type LinearPath,
  uploadDense,
  uploadLinear,
  weightBytes,
  type WeightType,
} from "./linear.ts";
export {
  type LayerType,
  loadModelConfig,
  type ModelConfig,
  type ModelFamily,
  parseModelConfig,
  SUPPORTED_ARCHITECTURES,
} from "./model_config.ts";
export {
  bindForward,
  bindForwardSteps,
  bindLmHead,
  createForwardState,
  type ForwardOptions,
  type ForwardState,
  forwardStateBuffers,
  type GpuLayer,
  type GpuWeights,
  type PagedKv,
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
