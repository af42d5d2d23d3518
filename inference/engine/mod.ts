/**
 * The engine: requests in, token events out. The contract server/ sees (types.ts), the engine with its
 * continuous-batching scheduler, the single-sequence runner (benchmarks, golden tests) and loading a model
 * folder for it. server/ imports only this face.
 */
export {
  BATCH_DEFAULTS,
  type BatchOptions,
  createEngine,
  destroyLoadedModel,
  type EngineHandle,
  type LoadedModel,
  type ModelLease,
} from "./engine.ts";
export { MAX_BAD_WORD_CHARS, MAX_BAD_WORDS } from "./bad_words.ts";
export { createSequenceRunner } from "./generate.ts";
export {
  afterReasoning,
  choiceGrammar,
  compileJsonSchema,
  compileSchemaNode,
  GbnfError,
  gbnfGrammar,
  grammarOf,
  type JsonNode,
  jsonObjectGrammar,
  larkGrammar,
  type ReasoningMarks,
  RegexError,
  regexGrammar,
  SchemaError,
  type ToolCallMarks,
  toolCallsGrammar,
  type ToolSpec,
} from "../structured/mod.ts";
export { loadModel, type LoadModelOptions } from "./load_model.ts";
export {
  type ChatMessage,
  type ChatToolCall,
  type EmbedOptions,
  type EmbedResult,
  type Engine,
  EngineBusyError,
  type EngineCounters,
  EngineInputError,
  type EngineStatus,
  type GenerateInput,
  type GenerateRequest,
  type JsonGrammar,
  type ModelQuantization,
  type SamplingParams,
  type TokenEvent,
  type TokenizeOptions,
  type TokenizeResult,
  type TokenLogprob,
  type ToolCallFormat,
} from "./types.ts";
