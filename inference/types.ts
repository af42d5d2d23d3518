/**
 * The contract between the HTTP layer (server/) and the engine (inference/engine.ts).
 * server/ imports only this file and engine.ts from inference/.
 */

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

export interface ChatMessage {
  role: string;
  content: string;
}

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
}

/** Scheduler and memory gauges, read by /metrics at scrape time. */
export interface EngineCounters {
  /** Sequences being decoded now. */
  running: number;
  /** Requests waiting for their turn. */
  waiting: number;
  /** KV-cache blocks holding tokens, and all of them (a contiguous cache counts 16-token blocks). */
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  /** Bytes of GPU buffers by use; scratch = activations and other working buffers. */
  gpuBytes: { weights: number; kvCache: number; scratch: number };
}

/** Options of Engine.tokenize (vLLM's /tokenize fields). */
export interface TokenizeOptions {
  /** Run the tokenizer's post-processor (e.g. prepend BOS). Default: true for text, false for chat. */
  addSpecialTokens?: boolean;
  /** Chat: append the assistant header, as generation does. Default true. */
  addGenerationPrompt?: boolean;
  /** Also return each id's token string. */
  returnTokenStrs?: boolean;
}

/** What Engine.tokenize returns. */
export interface TokenizeResult {
  ids: number[];
  /** The token strings, when asked for. */
  tokenStrs?: string[];
}

/** The engine as the server sees it: one FIFO over the GPU. */
export interface Engine {
  status(): EngineStatus;
  /**
   * Gauges for /metrics. Optional so that test fakes need not implement it; /metrics leaves the
   * engine's series out when it is missing.
   */
  counters?(): EngineCounters;
  /**
   * Tokenizes a prompt or renders and tokenizes a chat, exactly as generate() would by default.
   * Optional (test fakes); /tokenize answers 501 without it. Throws EngineInputError for bad input.
   */
  tokenize?(input: GenerateInput, options?: TokenizeOptions): Promise<TokenizeResult>;
  /** Decodes ids to text, special tokens included; throws EngineInputError for an id outside the vocabulary. */
  detokenize?(ids: readonly number[]): Promise<string>;
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
