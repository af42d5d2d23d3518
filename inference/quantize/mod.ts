/**
 * Quantizing a whole model: calibration text, the true-sequential layer pipeline, perplexity, and the one
 * definition of a quantization request (options.ts) that the CLI, the server's flags and the HTTP API share.
 */
export {
  BUILTIN_CALIBRATION_VERSION,
  builtinCalibration,
  type BuiltinCalibrationContext,
  calibrationFromText,
  type CalibrationSet,
  DEFAULT_NSAMPLES,
  defaultSeqLen,
  loadCalibration,
} from "./calibration.ts";
export { type HiddenStorage, LAYER_STAGES, type LayerStage } from "./layer_runner.ts";
export {
  BUILTIN_DATASET,
  type CalibrationSpec,
  DEFAULT_GROUP_SIZE,
  type EvalSpec,
  FLAG_LABELS,
  MAX_INLINE_TEXT_BYTES,
  parseQuantizeRequest,
  type ParseStyle,
  QUANT_METHODS,
  QuantizeOptionsError,
  type QuantizeRequest,
  rawFromFlags,
  requestToJson,
  sourceToJson,
  type TextSource,
} from "./options.ts";
export { evaluatePerplexity, loadEvalModel, type PerplexityResult } from "./perplexity.ts";
export {
  type LayerPhases,
  type LinearReport,
  quantizeModel,
  type QuantizeModelResult,
  type QuantizeProgress,
} from "./quantize_model.ts";
