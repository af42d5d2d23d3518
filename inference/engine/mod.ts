/**
 * The engine: requests in, token events out. The contract server/ sees (types.ts), the engine, the
 * sequence runner and loading a model folder for it. server/ imports only this face.
 */
export { createEngine, type EngineHandle, type LoadedModel, type ModelLease } from "./engine.ts";
export { createSequenceRunner } from "./generate.ts";
export { loadModel, type LoadModelOptions } from "./load_model.ts";
export {
  type ChatMessage,
  type Engine,
  EngineInputError,
  type GenerateRequest,
  type ModelQuantization,
  type SamplingParams,
  type TokenEvent,
} from "./types.ts";
