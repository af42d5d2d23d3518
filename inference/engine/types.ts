/**
 * The contract between the HTTP layer (server/) and the engine (engine.ts), exported through mod.ts,
 * the only file of inference/ that server/ imports.
 */

import type { JsonGrammar } from "../structured/mod.ts";
import type { ChatMessage, ChatToolCall, ToolCallFormat } from "../text/mod.ts";

export type { ChatMessage, ChatToolCall, JsonGrammar, ToolCallFormat };

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
  /**
   * `tools`: function definitions the chat template renders (OpenAI's `tools`, as given); `templateVars`:
   * extra variables for the template (vLLM's `chat_template_kwargs`, e.g. Qwen3's `enable_thinking`)
   */
  | {
    kind: "chat";
    messages: ChatMessage[];
    tools?: readonly unknown[];
    templateVars?: Record<string, unknown>;
    /** Append the assistant header (vLLM's `add_generation_prompt`); default true, false when continuing. */
    addGenerationPrompt?: boolean;
    /**
     * The answer continues the final (assistant) message, whose content ends the prompt (vLLM's
     * `continue_final_message`: a prefix the client puts in the model's mouth).
     */
    continueFinalMessage?: boolean;
  }
  | { kind: "text"; prompt: string }
  /** Prompt token ids as they are (benchmarks; the HTTP API does not take ids). */
  | { kind: "tokens"; ids: number[] };

export interface GenerateRequest {
  input: GenerateInput;
  /**
   * Upper bound on generated tokens; null means up to the context length. 0 (with `echo` only): nothing is
   * generated, the prompt comes back alone.
   */
  maxTokens: number | null;
  /**
   * True when the client gave maxTokens itself: prompt + maxTokens beyond the context is then refused
   * before queuing (a default maxTokens is capped instead).
   */
  maxTokensStrict?: boolean;
  /** Stop strings; the text returned ends before the first match. */
  stop: string[];
  sampling: SamplingParams;
  /** Choices to generate from the one prompt (they share its KV blocks); default 1. */
  n?: number;
  /** Return each token's logprob and this many top alternatives (0..20); absent or null: none. */
  logprobs?: number | null;
  /** OpenAI presence/frequency penalties (subtracted from logits) and vLLM's repetition penalty. */
  penalties?: { presence: number; frequency: number; repetition: number };
  /** Added to the logits of these token ids before sampling. */
  logitBias?: [id: number, bias: number][];
  /** EOS and `stopTokenIds` cannot end the output before this many tokens (vLLM min_tokens). */
  minTokens?: number;
  /** Keep generating past EOS (vLLM ignore_eos). */
  ignoreEos?: boolean;
  /** Token ids that end a choice like EOS (not returned; vLLM stop_token_ids). */
  stopTokenIds?: number[];
  /**
   * Waiting requests are admitted lowest priority value first (vLLM's `priority`; --scheduling-policy
   * priority), then in arrival order; absent: 0.
   */
  priority?: number;
  /**
   * Prefix-cache blocks are shared only among requests with the same salt (vLLM cache_salt): a tenant's
   * secret salt keeps others from timing whether its prompts are cached.
   */
  cacheSalt?: string;
  /**
   * Send the prompt back first (the completions API's `echo`): each choice's first delta is the prompt's text
   * and, with `logprobs`, its tokens' logprobs (the first one null), before the generated ones.
   */
  echo?: boolean;
  /**
   * The output must be JSON of this grammar (structured output: response_format): each step samples only
   * ids that keep it so, and the choice ends (finish reason "stop") once the value is complete.
   */
  grammar?: JsonGrammar;
  /**
   * Special tokens (by their text) that the choices' text keeps; the others are left out as always. The
   * server asks for the marks its tool-call parser reads (Mistral's `[TOOL_CALLS]`, `[ARGS]`, `[CALL_ID]`).
   */
  keepSpecialTokens?: readonly string[];
  /** false: every special token's text stays in the choices' text (vLLM's skip_special_tokens); default true */
  skipSpecialTokens?: boolean;
  /** the stop string that ends a choice stays at the end of its text (vLLM's include_stop_str_in_output) */
  includeStopStr?: boolean;
  /**
   * Score the prompt: a "prompt" event with each prompt token's logprob, rank and this many alternatives
   * (0..20; vLLM's prompt_logprobs), before the first delta.
   */
  promptLogprobs?: number;
  /**
   * Report ids (vLLM's return_token_ids): the prompt's in a "prompt" event, each delta's own, the stop id
   * that ends a choice included.
   */
  returnTokenIds?: boolean;
  /**
   * The tokenizer's own special tokens (BOS) around the prompt (vLLM's add_special_tokens); default true for
   * text, false for chat, whose template writes them
   */
  addSpecialTokens?: boolean;
  /** only the last this many prompt ids are used (vLLM's truncate_prompt_tokens; left truncation) */
  truncatePromptTokens?: number;
  /**
   * Words the output must not contain (vLLM's bad_words): each word's tokens, at the start of the text or
   * after a space, are never sampled in full (bad_words.ts)
   */
  badWords?: readonly string[];
  /** sampling picks only among these ids, EOS included only if listed (vLLM's allowed_token_ids) */
  allowedTokenIds?: readonly number[];
}

/** One generated (or, with `echo`, prompt) token's logprob, as the engine reports it with `GenerateRequest.logprobs`. */
export interface TokenLogprob {
  id: number;
  /** The token decoded on its own (a partial UTF-8 character shows as U+FFFD). */
  token: string;
  /** null only for the first token of an echoed prompt, which nothing predicts (its `top` is empty) */
  logprob: number | null;
  /**
   * How many ids were at least as likely here (1: the likeliest; ties count against it), as vLLM ranks
   * prompt tokens; absent where `logprob` is null.
   */
  rank?: number;
  /** The most likely tokens at this position, best first. */
  top: { id: number; token: string; logprob: number }[];
}

/** Events streamed by Engine.generate(). */
export type TokenEvent =
  | { type: "start"; promptTokens: number }
  /**
   * `text` is the new, safe-to-emit piece (never a partial UTF-8 sequence or a partial stop string) of
   * choice `index` (absent: 0); `logprobs` holds the tokens consumed since the last delta when asked, and
   * `tokens` counts them.
   */
  | {
    type: "delta";
    text: string;
    index?: number;
    logprobs?: TokenLogprob[];
    tokens?: number;
    /** the ids consumed since the last delta, with GenerateRequest.returnTokenIds (a stop id too) */
    ids?: number[];
  }
  /**
   * The prompt as the model read it, once per prompt before its first delta, when asked: its ids
   * (GenerateRequest.returnTokenIds) and its tokens' logprobs (GenerateRequest.promptLogprobs; the first
   * token's logprob is null). `index`: the prompt's first choice (absent: 0).
   */
  | { type: "prompt"; ids?: number[]; logprobs?: TokenLogprob[]; index?: number }
  /** One per choice; the iterator ends after the last choice's. */
  | {
    type: "end";
    finishReason: "stop" | "length";
    promptTokens: number;
    completionTokens: number;
    /** prompt ids whose keys and values came from the prefix cache (OpenAI's `cached_tokens`) */
    cachedTokens?: number;
    index?: number;
    /** the stop string or stop_token_ids id that ended the choice (vLLM's stop_reason); absent: none (EOS) */
    stopReason?: string | number;
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
  /**
   * How the model writes function calls, when its chat template renders `tools` in a form the server reads
   * back (`tool_calls`); null: requests with tools get a 400. Absent: null.
   */
  toolCallFormat?: ToolCallFormat | null;
  /**
   * The chat template knows `<think>` blocks: the server may split answers into reasoning and content
   * (`opensInPrompt`: the generation prompt opens the block). Absent: null.
   */
  thinking?: { opensInPrompt: boolean } | null;
  /** The served weights' quantization; null for full precision (and while loading). */
  quantization?: ModelQuantization | null;
}

/** What the engine counts, read by /metrics at scrape time. */
export interface EngineCounters {
  /** sequences decoding or prefilling */
  running: number;
  /** sequences queued for a slot */
  waiting: number;
  /** paged KV-cache blocks holding a sequence's positions, and all of them */
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  /** free blocks that still hold a cached prefix (reused by a prompt with the same start, else evicted) */
  kvBlocksCached: number;
  /** Bytes of GPU buffers by use, each buffer once; scratch = activations and other working buffers. */
  gpuBytes: { weights: number; kvCache: number; scratch: number };
  /** The served model's KV cache as configured (vLLM's cache_config_info); null before one is served. */
  cacheConfig: {
    blockSize: number;
    numBlocks: number;
    kvCacheDtype: string;
    maxModelLen: number;
    prefixCaching: boolean;
  } | null;
  promptTokensTotal: number;
  generatedTokensTotal: number;
  /** sequences preempted (KV cache full) and recomputed later */
  preemptionsTotal: number;
  /** prompt ids of admitted requests, and those of them whose KV came from the prefix cache */
  prefixCacheQueriesTotal: number;
  prefixCacheHitsTotal: number;
}

/** Options of Engine.tokenize (vLLM's /tokenize fields). */
export interface TokenizeOptions {
  /** Run the tokenizer's post-processor (e.g. prepend BOS). Default: true for text, false for chat. */
  addSpecialTokens?: boolean;
  /** Also return each id's token string. */
  returnTokenStrs?: boolean;
}

/** What Engine.tokenize returns. */
export interface TokenizeResult {
  ids: number[];
  /** The token strings, when asked for. */
  tokenStrs?: string[];
}

/** Options of Engine.embed (vLLM's /v1/embeddings extensions). */
export interface EmbedOptions {
  /** Run the tokenizer's post-processor (e.g. prepend BOS); default true. */
  addSpecialTokens?: boolean;
  /** Keep only the last k ids (-1: the model's context) before embedding. */
  truncatePromptTokens?: number;
}

/** What Engine.embed returns for one input. */
export interface EmbedResult {
  /**
   * The hidden state of the input's last token after the final norm (the LM head's input): last-token
   * pooling, as decoder embedding models (gte-Qwen2, Qwen3-Embedding, e5-mistral) are read; not normalised.
   */
  embedding: Float32Array;
  promptTokens: number;
}

/** The engine as the server sees it: continuous batching over the GPU. */
export interface Engine {
  status(): EngineStatus;
  /**
   * Generates for one request. The first event ("start") comes as soon as the request is validated and
   * queued; the others as its tokens are sampled, batched with other requests. Throws EngineInputError
   * for input the model cannot take (prompt too long, no chat template), which the server maps to a
   * 400, and EngineBusyError when the queue is full (429). Leaving the iterator early cancels the request.
   */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent>;
  /**
   * Live counts for /metrics. Optional so that test fakes need not implement it; /metrics leaves the
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
   * One input's last-token embedding, batched with other work as a prompt that samples nothing. Optional
   * (test fakes); /v1/embeddings answers 501 without it. Throws EngineInputError (400) and EngineBusyError
   * (429) as generate() does.
   */
  embed?(input: GenerateInput, options?: EmbedOptions): Promise<EmbedResult>;
}

/** A request the model cannot serve as asked; the message is safe to show the client. */
export class EngineInputError extends Error {
  constructor(message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
    this.name = "EngineInputError";
  }
}

/** The waiting queue is full; the server answers 429 with Retry-After. */
export class EngineBusyError extends Error {
  constructor(message: string, readonly retryAfterSeconds = 1) {
    super(message);
    this.name = "EngineBusyError";
  }
}
