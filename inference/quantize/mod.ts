/**
 * Quantizing a whole model: calibration text, the true-sequential layer pipeline, perplexity, and the one
 * definition of a quantization request (options.ts) that the CLI, the server's flags and the HTTP API share.
 */
export {
  BUILTIN_CALIBRATION,
  BUILTIN_CALIBRATION_VERSION,
  builtinCalibration,
  type BuiltinCalibrationContext,
  builtinCalibrationPath,
  calibrationFromText,
  type CalibrationSet,
  DEFAULT_NSAMPLES,
  defaultSeqLen,
  loadCalibration,
} from "./calibration.ts";
export { type HiddenStorage, LAYER_STAGES, type LayerStage } from "./layer_runner.ts";
export { lmHeadOptions } from "./lm_head.ts";
export { sampleCalibration, SELF_CALIBRATION, selfStartToken } from "./self_calibration.ts";
export {
  BUILTIN_DATASET,
  type CalibrationBudget,
  calibrationBudgetFor,
  type CalibrationSpec,
  CPU_CALIBRATION_BUDGET,
  DEFAULT_GROUP_SIZE,
  type EvalSpec,
  FLAG_LABELS,
  GPU_CALIBRATION_BUDGET,
  LM_HEAD_BITS,
  MAX_INLINE_TEXT_BYTES,
  parseCalibGpuMemory,
  parseQuantizeRequest,
  parseSize,
  type ParseStyle,
  QUANT_METHODS,
  QuantizeOptionsError,
  type QuantizeRequest,
  rawFromFlags,
  requestToJson,
  SELF_DATASET,
  sourceToJson,
  type TextSource,
  withAdapterBudget,
} from "./options.ts";
export { evaluatePerplexity, loadEvalModel, type PerplexityResult } from "./perplexity.ts";
export {
  AUTO_F32_HIDDEN_LIMIT,
  chooseHiddenStorage,
  type HiddenStorageChoice,
  type LayerPhases,
  type LinearReport,
  quantizeModel,
  type QuantizeModelResult,
  type QuantizeProgress,
} from "./quantize_model.ts";
export { DEFAULT_GPU_HIDDEN_BYTES } from "./hidden_windows.ts";
