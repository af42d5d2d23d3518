/**
 * The engine: a FIFO over the single GPU queue. It owns the tokenizer, the chat template and one
 * sequence runner, and turns a GenerateRequest into start/delta/end events.
 *
 * Requests run strictly one after another (a promise chain), so two streams never interleave on
 * the GPU. A client abort is checked between decode chunks.
 *
 * Hot swap: `setModel` replaces the served model at once. Each request holds a lease on the model it
 * started with (taken when its generator starts, released when it ends), so requests in flight finish on
 * that model, new ones get the new one, and a replaced model's GPU buffers are freed when its last lease
 * ends.
 */
import type { Gpu } from "../../kernels/core/mod.ts";
import { type ChatTemplate, createStreamDecoder, type Tokenizer } from "../text/mod.ts";
import type { GpuWeights, ModelConfig } from "../model/mod.ts";
import type { SequenceRunner } from "./generate.ts";
import { createStopMatcher } from "./stop_text.ts";
import {
  type Engine,
  EngineInputError,
  type EngineStatus,
  type GenerateRequest,
  type ModelQuantization,
  type SamplingParams,
  type TokenEvent,
} from "./types.ts";

/** Everything the engine serves with, produced by load_model.ts. */
export interface LoadedModel {
  gpu: Gpu;
  modelId: string;
  config: ModelConfig;
  weights: GpuWeights;
  tokenizer: Tokenizer;
  chatTemplate: ChatTemplate | null;
  runner: SequenceRunner;
  /** The folder it was loaded from (absent for models built in memory, e.g. random benchmark weights). */
  dir?: string;
  /** How its weights were quantized; null or absent for full precision. */
  quantization?: ModelQuantization | null;
  /** Frees every GPU buffer it holds (weights, activations, KV cache); the engine calls it after a swap. */
  destroy?(): void;
}

/** A model held for use; `release()` once done (a replaced model is freed after its last release). */
export interface ModelLease {
  readonly model: LoadedModel;
  release(): void;
}

/** An engine whose model is loaded in the background; `status()` reports progress until ready. */
export interface EngineHandle extends Engine {
  /**
   * Installs the loaded model (state becomes "ready"); a model it replaces is freed once the requests that
   * started on it have ended.
   */
  setModel(model: LoadedModel): void;
  /** Holds the served model (e.g. to evaluate it) until `release()`; null while none is loaded. */
  lease(): ModelLease | null;
  /** Requests started and not yet ended, on any model. */
  inFlight(): number;
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
  let slot: { model: LoadedModel; users: number; retired: boolean } | null = null;
  let inFlight = 0;
  let state: EngineStatus["state"] = "loading";
  let detail = "loading model";
  let queue: Promise<void> = Promise.resolve();

  function lease(): ModelLease | null {
    const s = slot;
    if (!s) return null;
    s.users++;
    inFlight++;
    let held = true;
    return {
      model: s.model,
      release() {
        if (!held) return;
        held = false;
        s.users--;
        inFlight--;
        if (s.retired && s.users === 0) free(s.model);
      },
    };
  }
  function free(m: LoadedModel): void {
    try {
      m.destroy?.();
    } catch (err) {
      log(`[engine] cannot free the replaced model: ${(err as Error).message}`);
    }
  }
  function status(): EngineStatus {
    const model = slot?.model;
    const lost = model?.gpu.lostReason;
    return {
      state: lost ? "error" : state,
      detail: lost ?? detail,
      modelId: model?.modelId ?? modelId,
      contextLength: model?.config.seqLen ?? 0,
      hasChatTemplate: model?.chatTemplate != null,
      quantization: model?.quantization ?? null,
    };
  }

  async function* generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent> {
    const held = status().state === "ready" ? lease() : null;
    if (!held) throw new Error(`Cannot generate: engine is ${status().state}`);
    try {
      const m = held.model;
      const ids = promptIds(m, request);
      if (ids.length >= m.config.seqLen) {
        throw new EngineInputError(
          `Prompt has ${ids.length} tokens but the model's context length is ${m.config.seqLen}`,
          "messages",
          "context_length_exceeded",
        );
      }
      // Wait for our turn on the GPU; release it in finally whatever happens.
      let release!: () => void;
      const turn = queue;
      queue = new Promise((resolve) => (release = resolve));
      try {
        await turn;
        yield* runOne(m, ids, request, signal);
      } finally {
        release();
      }
    } finally {
      held.release();
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
    for await (const chunk of m.runner.run(ids, { maxNewTokens, sampling })) {
      let text = "";
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

  return {
    status,
    generate,
    setModel(loaded) {
      const old = slot;
      slot = { model: loaded, users: 0, retired: false };
      state = "ready";
      detail = "ready";
      if (old && old.model !== loaded) {
        old.retired = true;
        if (old.users === 0) free(old.model);
      }
    },
    lease,
    inFlight: () => inFlight,
    setStatus(s, d) {
      state = s;
      detail = d;
    },
  };
}

/** Renders and tokenizes the prompt of a request. */
function promptIds(m: LoadedModel, request: GenerateRequest): number[] {
  const input = request.input;
  if (input.kind === "text") return m.tokenizer.encode(input.prompt, { addSpecialTokens: true });
  if (!m.chatTemplate) {
    throw new EngineInputError(
      `Cannot use /v1/chat/completions: model "${m.modelId}" has no chat template; use /v1/completions`,
      "messages",
      "no_chat_template",
    );
  }
  let text: string;
  try {
    text = m.chatTemplate.render(input.messages, { addGenerationPrompt: true });
  } catch (err) {
    // A template may reject a conversation (raise_exception): that is the client's input, not a server fault.
    throw new EngineInputError((err as Error).message, "messages", "chat_template_error");
  }
  return m.tokenizer.encode(text, { addSpecialTokens: false });
}
