/**
 * The engine: a FIFO over the single GPU queue. It owns the tokenizer, the chat template and one
 * sequence runner, and turns a GenerateRequest into start/delta/end events.
 *
 * Requests run strictly one after another (a promise chain), so two streams never interleave on
 * the GPU. A client abort is checked between decode chunks.
 */
import type { Gpu } from "../kernels/gpu.ts";
import { createStreamDecoder, type Tokenizer } from "./tokenizer.ts";
import type { ChatTemplate } from "./chat_template.ts";
import type { ModelConfig } from "./model_config.ts";
import type { SequenceRunner } from "./generate.ts";
import type { GpuWeights } from "./model.ts";
import { createStopMatcher } from "./stop_text.ts";
import {
  type Engine,
  type EngineCounters,
  EngineInputError,
  type EngineStatus,
  type GenerateInput,
  type GenerateRequest,
  type SamplingParams,
  type TokenEvent,
  type TokenizeOptions,
  type TokenizeResult,
} from "./types.ts";

/** Tokens per KV-cache "block" in the counters; the cache itself is one contiguous buffer per layer. */
const KV_BLOCK_TOKENS = 16;

/** Everything the engine serves with, produced by load_model.ts. */
export interface LoadedModel {
  gpu: Gpu;
  modelId: string;
  config: ModelConfig;
  weights: GpuWeights;
  tokenizer: Tokenizer;
  chatTemplate: ChatTemplate | null;
  runner: SequenceRunner;
}

/** An engine whose model is loaded in the background; `status()` reports progress until ready. */
export interface EngineHandle extends Engine {
  /** Installs the loaded model (state becomes "ready"). */
  setModel(model: LoadedModel): void;
  /** Reports loading progress, or a fatal error. */
  setStatus(state: EngineStatus["state"], detail: string): void;
}

/**
 * Creates an engine in the "loading" state.
 * @param modelId the name /v1/models reports
 * @param log where seeds and warnings go
 */
export function createEngine(
  modelId: string,
  { log = console.log }: { log?: (msg: string) => void } = {},
): EngineHandle {
  let model: LoadedModel | null = null;
  let state: EngineStatus["state"] = "loading";
  let detail = "loading model";
  let queue: Promise<void> = Promise.resolve();
  let waiting = 0;
  let running = 0;
  let kvTokens = 0; // tokens in the KV cache of the running sequence
  let gpuBytes: EngineCounters["gpuBytes"] = { weights: 0, kvCache: 0, scratch: 0 };

  function status(): EngineStatus {
    const lost = model?.gpu.lostReason;
    return {
      state: lost ? "error" : state,
      detail: lost ?? detail,
      modelId: model?.modelId ?? modelId,
      contextLength: model?.config.seqLen ?? 0,
      hasChatTemplate: model?.chatTemplate != null,
    };
  }

  async function* generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent> {
    const m = model;
    if (!m || status().state !== "ready") throw new Error(`Cannot generate: engine is ${status().state}`);
    const ids = promptIds(m, request.input);
    if (ids.length >= m.config.seqLen) {
      throw new EngineInputError(
        `Prompt has ${ids.length} tokens but the model's context length is ${m.config.seqLen}`,
        request.input.kind === "chat" ? "messages" : "prompt",
        "context_length_exceeded",
      );
    }
    // Wait for our turn on the GPU; release it in finally whatever happens.
    let release!: () => void;
    const turn = queue;
    queue = new Promise((resolve) => (release = resolve));
    let started = false;
    waiting++;
    try {
      await turn;
      waiting--;
      started = true;
      running++;
      yield* runOne(m, ids, request, signal);
    } finally {
      if (started) {
        running--;
        kvTokens = 0;
      } else waiting--;
      release();
    }
  }

  async function* runOne(
    m: LoadedModel,
    ids: number[],
    request: GenerateRequest,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<TokenEvent> {
    yield { type: "start", promptTokens: ids.length };
    const seed = request.sampling.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (request.sampling.seed === null && request.sampling.temperature > 0) {
      log(`[engine] sampling seed ${seed}`);
    }
    const eos = new Set(m.config.eosTokenIds);
    const decoder = createStreamDecoder(m.tokenizer, { context: ids });
    const stops = createStopMatcher(request.stop);
    const maxNewTokens = Math.min(request.maxTokens ?? Infinity, m.config.seqLen - ids.length);
    let completion = 0;
    let stopped = false;
    const sampling: SamplingParams & { seed: number } = { ...request.sampling, seed };
    kvTokens = ids.length;
    for await (const chunk of m.runner.run(ids, { maxNewTokens, sampling })) {
      let text = "";
      kvTokens = ids.length + completion + chunk.length;
      for (const id of chunk) {
        completion++;
        if (eos.has(id)) {
          stopped = true;
          break;
        }
        const r = stops.push(decoder.push(id));
        text += r.emit;
        if (r.stopped) {
          stopped = true;
          break;
        }
      }
      if (text) yield { type: "delta", text };
      if (stopped || signal?.aborted) break; // leaving the loop drains the runner's readbacks
    }
    if (!stopped) {
      const tail = stops.push(decoder.flush()).emit + stops.flush();
      if (tail) yield { type: "delta", text: tail };
    }
    yield {
      type: "end",
      finishReason: !stopped && completion >= maxNewTokens ? "length" : "stop",
      promptTokens: ids.length,
      completionTokens: completion,
    };
  }

  function counters(): EngineCounters {
    const total = model ? Math.ceil(model.config.seqLen / KV_BLOCK_TOKENS) : 0;
    return {
      running,
      waiting,
      kvBlocksUsed: Math.min(total, Math.ceil(kvTokens / KV_BLOCK_TOKENS)),
      kvBlocksTotal: total,
      gpuBytes,
    };
  }

  function ready(): LoadedModel {
    if (!model || status().state !== "ready") throw new Error(`Cannot tokenize: engine is ${status().state}`);
    return model;
  }

  return {
    status,
    generate,
    counters,
    tokenize(input: GenerateInput, options: TokenizeOptions = {}): Promise<TokenizeResult> {
      const m = ready();
      const ids = promptIds(m, input, options);
      if (!options.returnTokenStrs) return Promise.resolve({ ids });
      return Promise.resolve({ ids, tokenStrs: ids.map((id) => m.tokenizer.idToToken(id) ?? "") });
    },
    detokenize(ids: readonly number[]): Promise<string> {
      const m = ready();
      const bad = ids.findIndex((id) => m.tokenizer.idToToken(id) === null);
      if (bad >= 0) {
        throw new EngineInputError(
          `Cannot detokenize id ${ids[bad]}: the vocabulary has ${m.tokenizer.vocabSize} tokens`,
          `tokens[${bad}]`,
        );
      }
      return Promise.resolve(m.tokenizer.decode(ids));
    },
    setModel(loaded) {
      model = loaded;
      gpuBytes = measureGpuBytes(loaded);
      state = "ready";
      detail = "ready";
    },
    setStatus(s, d) {
      state = s;
      detail = d;
    },
  };
}

/** Renders and tokenizes the prompt of a request (the defaults are what generation uses). */
function promptIds(
  m: LoadedModel,
  input: GenerateInput,
  { addSpecialTokens = input.kind === "text", addGenerationPrompt = true }: TokenizeOptions = {},
): number[] {
  if (input.kind === "text") return m.tokenizer.encode(input.prompt, { addSpecialTokens });
  if (!m.chatTemplate) {
    throw new EngineInputError(
      `Cannot use /v1/chat/completions: model "${m.modelId}" has no chat template; use /v1/completions`,
      "messages",
      "no_chat_template",
    );
  }
  let text: string;
  try {
    text = m.chatTemplate.render(input.messages, { addGenerationPrompt });
  } catch (err) {
    // A template may reject a conversation (raise_exception): that is the client's input, not a server fault.
    throw new EngineInputError((err as Error).message, "messages", "chat_template_error");
  }
  return m.tokenizer.encode(text, { addSpecialTokens });
}

/** Sums the GPU buffers of the weights, the KV cache and the other activations, each buffer once. */
function measureGpuBytes(m: LoadedModel): EngineCounters["gpuBytes"] {
  const seen = new Set<GPUBuffer>();
  const { kCache, vCache, ...scratch } = m.runner.forwardState;
  return {
    weights: bufferBytes(m.weights, seen),
    kvCache: bufferBytes([kCache, vCache], seen),
    scratch: bufferBytes(scratch, seen),
  };
}

function bufferBytes(value: unknown, seen: Set<GPUBuffer>): number {
  if (typeof GPUBuffer !== "undefined" && value instanceof GPUBuffer) {
    if (seen.has(value)) return 0;
    seen.add(value);
    return value.size;
  }
  if (Array.isArray(value)) return value.reduce((sum: number, v) => sum + bufferBytes(v, seen), 0);
  // Weights and activations are plain records; class instances (devices, pipelines) hold no buffers of ours.
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.values(value).reduce((sum: number, v) => sum + bufferBytes(v, seen), 0);
  }
  return 0;
}
