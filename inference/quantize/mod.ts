/**
 * Quantizing a whole model: calibration text, the true-sequential layer pipeline, and perplexity.
 */
export {
  BUILTIN_CALIBRATION,
  builtinCalibrationPath,
  DEFAULT_NSAMPLES,
  defaultSeqLen,
  loadCalibration,
} from "./calibration.ts";
export { type HiddenStorage, LAYER_STAGES, type LayerStage } from "./layer_runner.ts";
export { lmHeadOptions } from "./lm_head.ts";
export { sampleCalibration, SELF_CALIBRATION, selfStartToken } from "./self_calibration.ts";
export { evaluatePerplexity, loadEvalModel, type PerplexityResult } from "./perplexity.ts";
export {
  AUTO_F32_HIDDEN_LIMIT,
  chooseHiddenStorage,
  type HiddenStorageChoice,
  type LayerPhases,
  quantizeModel,
  type QuantizeModelResult,
} from "./quantize_model.ts";
