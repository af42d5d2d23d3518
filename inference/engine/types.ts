/**
 * The contract between the HTTP layer (server/) and the engine (inference/engine.ts).
 * server/ imports only this file and engine.ts from inference/.
 */

import type { ChatMessage } from "../text/mod.ts";

export type { ChatMessage };

/** Sampling settings resolved once per request (request → server defaults → generation_config.json). */
export interface SamplingParams {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables. */
  topP: number;
  /** Keep the k most likely tokens; 0 disables. */
  topK: number;
  /** Drop tokens below minP · p(max); 0 disables. */
  minP: number;
  /** RNG seed; the engine draws and logs one when the request gave none. */
  seed: number | null;
}

/** One generation request, already tokenized-free: the engine tokenizes. */
export type GenerateInput =
  | { kind: "chat"; messages: ChatMessage[] }
  | { kind: "text"; prompt: string };

export interface GenerateRequest {
  input: GenerateInput;
  /** Upper bound on generated tokens; null means up to the context length. */
  maxTokens: number | null;
  /** Stop strings; the text returned ends before the first match. */
  stop: string[];
  sampling: SamplingParams;
}

/** Events streamed by Engine.generate(). */
export type TokenEvent =
  | { type: "start"; promptTokens: number }
  /** `text` is the new, safe-to-emit piece (never a partial UTF-8 sequence or a partial stop string). */
  | { type: "delta"; text: string }
  | {
    type: "end";
    finishReason: "stop" | "length";
    promptTokens: number;
    completionTokens: number;
  };

/** How the served weights were quantized, as /v1/models reports it. */
export interface ModelQuantization {
  method: string;
  bits: number;
  /** Columns per group; 0 means one grid per row. */
  groupSize: number;
  /** Perplexity measured when it was made (its manifest's eval), or null. */
  ppl: number | null;
}

/** What /health and /v1/models report. */
export interface EngineStatus {
  /** "loading" until the model is ready; "error" after a fatal failure (device lost). */
  state: "loading" | "ready" | "error";
  /** Human-readable detail: load progress or the failure reason. */
  detail: string;
  /** The served model's id (its folder name). */
  modelId: string;
  /** Context length of the model. */
  contextLength: number;
  /** True when the model has a chat template. */
  hasChatTemplate: boolean;
  /** The served weights' quantization; null for full precision (and while loading). */
  quantization?: ModelQuantization | null;
}

/** The engine as the server sees it: one FIFO over the GPU. */
export interface Engine {
  status(): EngineStatus;
  /**
   * Generates for one request. Requests run one after another; the iterator starts when the
   * request reaches the head of the queue. Throws EngineInputError for input the model cannot take
   * (prompt too long, no chat template), which the server maps to a 400.
   */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent>;
}

/** A request the model cannot serve as asked; the message is safe to show the client. */
export class EngineInputError extends Error {
  constructor(message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
    this.name = "EngineInputError";
  }
}
