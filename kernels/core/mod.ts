/**
 * The WebGPU device, buffers, the pipeline and params helpers, the step state and WGSL snippets.
 */
export {
  align4,
  createStorage,
  f16BitsToF32,
  f32ToF16Bits,
  type ParamField,
  readBuffer,
  readF32,
  readU32,
  runPass,
  sharedScratch,
  uniformParams,
  uploadStorage,
  writeBuffer,
} from "./buffers.ts";
export {
  bindBuffers,
  type BindingKind,
  ceilDiv,
  checkPipelines,
  describeGpu,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  type PipelineSpec,
  requestGpu,
  sequence,
  singleDispatch,
} from "./gpu.ts";
export { type BoundPlan, type BoundSteps, packParamSlots } from "./param_slots.ts";
export { createAdvance, STATE_STRUCT } from "./step_state.ts";
export { unroll } from "./wgsl.ts";
export {
  asParts,
  createMatrixParts,
  destroyMatrix,
  isSplit,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  matrixBytes,
  type MatrixParts,
  partHolding,
  readMatrix,
  rowsPerPartFor,
  splitElement,
  uploadMatrix,
} from "./matrix_parts.ts";
