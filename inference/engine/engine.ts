/**
 * The engine: requests in, token events out, many at once. It owns the tokenizer and chat template of
 * the served model, validates and tokenizes each request, and hands its `n` sequences to the scheduler
 * (scheduler.ts: continuous batching over a paged KV cache, kv_cache.ts), whose sampled ids come back
 * through one Choice per sequence (choice.ts).
 *
 * `setModel` may be called while serving (hot swap): requests already accepted finish on the model they
 * started with, new requests get the new one, and the old model's GPU buffers are freed after its last
 * sequence ends and the last lease on it (`lease()`, e.g. a quantize job measuring its perplexity) is
 * released.
 */
import type { Gpu } from "../../kernels/core/mod.ts";
import {
  GREEDY_SLOT,
  type KvType,
  LOGPROB_RECORD_WORDS,
  maskWords,
  type SlotSettings,
} from "../../kernels/ops/mod.ts";
import { GrammarMatcher, MaskPool, TokenVocab } from "../structured/mod.ts";
import type { ChatTemplate, Tokenizer } from "../text/mod.ts";
import { type GpuWeights, gpuWeightsBuffers, type ModelConfig } from "../model/mod.ts";
import { BatchRunner } from "./batch_runner.ts";
import { createChoice, EventChannel, readLogprob } from "./choice.ts";
import { KvCache, kvKey, type KvSizing, sizeKvCache } from "./kv_cache.ts";
import { type ModelEntry, Scheduler, type Seq, type SeqConstraint, type SeqInit } from "./scheduler.ts";
import { badWordIds, type BadWords, badWordsConstraint, maskWithout } from "./bad_words.ts";
import {
  type EmbedOptions,
  type EmbedResult,
  type Engine,
  EngineBusyError,
  type EngineCounters,
  EngineInputError,
  type EngineStatus,
  type GenerateInput,
  type GenerateRequest,
  type ModelQuantization,
  type TokenEvent,
  type TokenizeOptions,
  type TokenizeResult,
  type TokenLogprob,
} from "./types.ts";

/** Everything the engine serves with, produced by load_model.ts. */
export interface LoadedModel {
  gpu: Gpu;
  modelId: string;
  config: ModelConfig;
  weights: GpuWeights;
  tokenizer: Tokenizer;
  chatTemplate: ChatTemplate | null;
  /** The folder it was loaded from (absent for models built in memory, e.g. random benchmark weights). */
  dir?: string;
  /** How its weights were quantized; null or absent for full precision. */
  quantization?: ModelQuantization | null;
}

/** Frees a loaded model's weights that never got served (e.g. a cancelled activation). */
export function destroyLoadedModel(m: LoadedModel): void {
  gpuWeightsBuffers(m.weights).forEach((b) => b.destroy());
}

/** A model held for use; `release()` once done (a replaced model is freed after its last release). */
export interface ModelLease {
  readonly model: LoadedModel;
  release(): void;
}

/** An engine whose model is loaded in the background; `status()` reports progress until ready. */
export interface EngineHandle extends Engine {
  /**
   * Installs a loaded model (state becomes "ready" once it is bound); a later call swaps models while
   * serving: the old model serves until the new one's step plans are bound. Calls take effect in order.
   */
  setModel(model: LoadedModel): Promise<void>;
  /** Holds the served model (e.g. to evaluate it) until `release()`; null while none is loaded. */
  lease(): ModelLease | null;
  /** Requests started and not yet ended, on any model. */
  inFlight(): number;
  /** Reports loading progress, or a fatal error. */
  setStatus(state: EngineStatus["state"], detail: string): void;
  counters(): EngineCounters;
  tokenize(input: GenerateInput, options?: TokenizeOptions): Promise<TokenizeResult>;
  detokenize(ids: readonly number[]): Promise<string>;
  embed(input: GenerateInput, options?: EmbedOptions): Promise<EmbedResult>;
}

/** How the engine batches (the serving flags of config.ts). */
export interface BatchOptions {
  /** sequences decoding at once (--max-num-seqs) */
  maxNumSeqs: number;
  /** rows per forward: decode rows plus prompt pieces (--max-num-batched-tokens) */
  maxNumBatchedTokens: number;
  /**
   * Most prompt rows per prefill forward while other sequences decode (at most maxNumBatchedTokens); the
   * scheduler takes fewer, twice the decoding rows (at least 32), so the streams' inter-token latency
   * stays within about 3× a decode step (scheduler.ts PIECE_STEPS; BENCHMARKS.md "Serving under load").
   */
  decodingPrefillTokens: number;
  /**
   * Every decode forward takes the batched kernels, few-row forwards too (--batch-invariant): a sequence's
   * ids and logprobs are then the bits it gets alone, whatever shares its steps, at some cost to few-stream
   * speed (BENCHMARKS.md "Serving under load"). Default false (PagedKv.decodePath).
   */
  batchInvariant: boolean;
  /**
   * Decode attention reads each tile's K rows coalesced into workgroup memory first (BatchRunnerOptions
   * .stagedKeys; the same bits); an experiment for bench:serve and bench:profile (--staged-keys) until timed
   */
  stagedKeys: boolean;
  /** sequences waiting for a slot before new requests get 429 (--max-queued-requests) */
  maxQueued: number;
  /**
   * Keep full KV blocks for later prompts that start with the same ids (vLLM's automatic prefix caching;
   * scheduler.ts): a shared system prompt or a conversation's earlier turns are prefilled once. Off with
   * --no-enable-prefix-caching.
   */
  prefixCaching: boolean;
  /**
   * --scheduling-policy: "priority" orders waiting requests by GenerateRequest.priority (lower first, then
   * arrival) and preempts the lowest first; "fcfs" takes them in arrival order and refuses a nonzero priority.
   */
  schedulingPolicy: "fcfs" | "priority";
  /** KV cache budget (--kv-cache-memory); null: the default of kv_cache.ts */
  kvCacheMemory: KvSizing["memory"];
  /** context per sequence (--max-model-len); null: the model's, capped so one sequence fits */
  maxModelLen: number | null;
  /**
   * Longest prompt, counted as the model reads it (chat template, truncate_prompt_tokens), before any other
   * length check (--max-prompt-tokens); null: up to the context
   */
  maxPromptTokens: number | null;
  kvCacheDtype: KvType;
  /** steps per chunk at most */
  maxChunk: number;
  /**
   * Bind every row bucket's forward when a model is installed (batch_runner.ts); null: on GPUs, not on CPU
   * adapters (lavapipe: tests, where binding a bucket on first use costs no one a stall worth the startup).
   */
  prebuild: boolean | null;
  /**
   * Aim for chunks of this much GPU time: ids reach clients in bursts of one chunk, so shorter chunks
   * smooth the inter-token latency, longer ones cost fewer readbacks (≥ 10 ms each in Deno).
   */
  chunkTargetMs: number;
}

/** Defaults of {@link BatchOptions}. */
export const BATCH_DEFAULTS: Readonly<BatchOptions> = Object.freeze({
  maxNumSeqs: 64,
  maxNumBatchedTokens: 2048,
  decodingPrefillTokens: 2048,
  batchInvariant: false,
  stagedKeys: false,
  maxQueued: 1024,
  prefixCaching: true,
  schedulingPolicy: "fcfs",
  kvCacheMemory: null,
  maxModelLen: null,
  maxPromptTokens: null,
  kvCacheDtype: "f16",
  maxChunk: 16,
  prebuild: null,
  chunkTargetMs: 15,
});

/** logit_bias entries per request (OpenAI's limit) and ids min_tokens may ban (EOS + stop_token_ids). */
export const MAX_BIAS = 300;
export const MAX_BAN = 64;

interface Served {
  model: LoadedModel;
  entry: ModelEntry;
  runner: BatchRunner;
  /** leases held on the model */
  leases: number;
  /** the scheduler has drained it (replaced, last sequence ended) */
  drained: boolean;
  /** its vocabulary as byte strings (structured output: the sinks' matchers), made at the first use */
  vocab?: TokenVocab;
  /** the threads that compute its token masks (structured/mask_thread.ts), started as they are needed */
  masks?: MaskPool;
}

/**
 * Creates an engine in the "loading" state.
 * @param modelId the name /v1/models reports
 * @param options `log` for seeds and warnings; `batch` overrides {@link BATCH_DEFAULTS}
 */
export function createEngine(
  modelId: string,
  { log = console.log, batch = {} }: { log?: (msg: string) => void; batch?: Partial<BatchOptions> } = {},
): EngineHandle {
  const opts: BatchOptions = { ...BATCH_DEFAULTS, ...batch };
  const scheduler = new Scheduler({ chunkTargetMs: opts.chunkTargetMs, prefixCaching: opts.prefixCaching });
  let served: Served | null = null;
  /** The install in progress (setModel calls take effect in order). */
  let installing: Promise<void> = Promise.resolve();
  const all: Served[] = [];
  let inFlight = 0;
  let state: EngineStatus["state"] = "loading";
  let detail = "loading model";

  function status(): EngineStatus {
    const m = served?.model;
    const lost = m?.gpu.lostReason;
    return {
      state: lost ? "error" : state,
      detail: lost ?? detail,
      modelId: m?.modelId ?? modelId,
      contextLength: served?.runner.cache.shape.maxModelLen ?? 0,
      hasChatTemplate: m?.chatTemplate != null,
      toolCallFormat: m?.chatTemplate?.toolCallFormat ?? null,
      thinking: m?.chatTemplate?.thinking ?? null,
      quantization: m?.quantization ?? null,
    };
  }

  function lease(): ModelLease | null {
    const s = served;
    if (!s) return null;
    s.leases++;
    let held = true;
    return {
      model: s.model,
      release() {
        if (!held) return;
        held = false;
        if (--s.leases === 0 && s.drained) free(s);
      },
    };
  }

  /** Frees a replaced model once the scheduler has drained it and nobody holds a lease. */
  function free(me: Served): void {
    const { runner, model } = me;
    const cache = runner.cache;
    all.splice(all.indexOf(me), 1);
    runner.destroy();
    destroyLoadedModel(model);
    me.masks?.close();
    if (!all.some((s) => s.runner.cache === cache)) cache.destroy();
    log(`[engine] freed model "${model.modelId}"`);
  }

  async function install(model: LoadedModel): Promise<void> {
    const { gpu, config } = model;
    const old = served;
    const key = kvKey(config, opts.kvCacheDtype);
    const sizing = {
      memory: opts.kvCacheMemory,
      maxModelLen: opts.maxModelLen,
      maxNumSeqs: opts.maxNumSeqs,
      kvType: opts.kvCacheDtype,
    };
    const cache = old && old.runner.cache.key === key
      ? old.runner.cache
      : new KvCache(gpu, config, sizeKvCache(gpu, config, sizing, log));
    const runner = new BatchRunner(gpu, config, model.weights, cache, {
      maxSlots: opts.maxNumSeqs,
      maxRows: Math.max(opts.maxNumBatchedTokens, opts.maxNumSeqs),
      maxChunk: opts.maxChunk,
      maxBias: MAX_BIAS,
      maxBan: MAX_BAN,
      decodingPrefillRows: opts.decodingPrefillTokens,
      batchInvariant: opts.batchInvariant,
      stagedKeys: opts.stagedKeys,
    });
    // Bind every bucket's forward now: binding one mid-serving stalls every stream (batch_runner.ts).
    if (opts.prebuild ?? !gpu.isCpu) {
      const t0 = performance.now();
      if (state !== "ready") detail = "binding step plans"; // /health says why the start waits
      try {
        const plans = await runner.prebuild();
        log(`[engine] bound ${plans} step plans in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      } catch (err) {
        runner.destroy();
        if (cache !== old?.runner.cache) cache.destroy();
        throw err;
      }
    }
    const me: Served = { model, runner, entry: null!, leases: 0, drained: false };
    me.entry = scheduler.addModel(runner, () => {
      me.drained = true;
      if (me.leases === 0) free(me);
    });
    all.push(me);
    served = me;
  }

  async function* generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent> {
    const s = served;
    if (!s || status().state !== "ready") throw new Error(`Cannot generate: engine is ${status().state}`);
    const m = s.model;
    const entry = s.entry;
    const maxModelLen = s.runner.cache.shape.maxModelLen;
    const full = promptIds(
      m,
      request.input,
      request.addSpecialTokens !== undefined ? { addSpecialTokens: request.addSpecialTokens } : {},
    );
    const ids = truncatedPrompt(full, request.truncatePromptTokens, maxModelLen);
    if (opts.maxPromptTokens !== null && ids.length > opts.maxPromptTokens) {
      throw new EngineInputError(
        `Prompt has ${ids.length} tokens but this server accepts at most ${opts.maxPromptTokens} ` +
          "(--max-prompt-tokens)",
        request.input.kind === "chat" ? "messages" : "prompt",
        "context_length_exceeded",
      );
    }
    const limit = checkLengths(request, ids.length, maxModelLen);
    const n = request.n ?? 1;
    const priority = request.priority ?? 0;
    if (priority !== 0 && opts.schedulingPolicy !== "priority") {
      throw new EngineInputError(
        "Cannot use a priority: the server schedules first come first served (--scheduling-policy priority " +
          "orders by it)",
        "priority",
      );
    }
    if (n > opts.maxNumSeqs) {
      throw new EngineInputError(`Cannot generate ${n} choices: at most ${opts.maxNumSeqs} run at once`, "n");
    }
    checkQueue(n);
    const scoreTop = promptScoreTop(request);
    const channel = new EventChannel();
    let open = n;
    const eos = request.ignoreEos ? [] : m.config.eosTokenIds;
    const stopIds = new Set([...eos, ...(request.stopTokenIds ?? [])]);
    const base = slotSettings(m, request, [...m.config.eosTokenIds, ...(request.stopTokenIds ?? [])]);
    if (request.allowedTokenIds && request.grammar) {
      throw new EngineInputError(
        "Cannot combine allowed_token_ids with structured output: the grammar chooses the ids",
        "allowed_token_ids",
      );
    }
    const allowed = request.allowedTokenIds ? allowedMask(m.config.vocabSize, request.allowedTokenIds) : null;
    const bad = request.badWords?.length ? badWordIds(m.tokenizer, request.badWords) : null;
    const staticMask = bad && !bad.dynamic ? maskWithout(m.config.vocabSize, allowed, bad.always) : allowed;
    if (staticMask && staticMask.every((w) => w === 0)) {
      throw new EngineInputError("Cannot sample: bad_words bans every allowed token", "bad_words");
    }
    // What comes of the prompt itself before any generated token (promptEvents), at once or, when the
    // prompt is scored, from the prefill that reads it (SeqInit.score).
    const prompt = (scored: TokenLogprob[] | null) => promptEvents(s, request, ids, n, ids !== full, scored);
    const score = (then: () => void = () => {}) => ({
      top: scoreTop!,
      done(records: Uint32Array) {
        prompt(scoredPrompt(m, ids, records)).forEach((ev) => channel.push(ev));
        then();
      },
    });
    if (request.maxTokens === 0) {
      // The prompt alone (completions' echo with max_tokens 0, as vLLM and OpenAI's legacy API serve it):
      // scored when asked (one sequence that samples nothing), else nothing is scheduled.
      if (!request.echo) {
        throw new EngineInputError("Cannot generate 0 tokens: max_tokens 0 needs echo", "max_tokens");
      }
      const ends = () => {
        for (let index = 0; index < n; index++) {
          channel.push({
            type: "end",
            finishReason: "length",
            promptTokens: ids.length,
            completionTokens: 0,
            index,
          });
        }
        channel.close();
      };
      if (scoreTop === null) {
        yield { type: "start", promptTokens: ids.length };
        yield* prompt(null);
        ends();
        yield* channel;
        return;
      }
      const init: SeqInit = {
        prompt: ids,
        limit: 0,
        settings: base,
        score: score(ends),
        sink: { token: () => true, fail: (err) => channel.fail(err) },
      };
      yield* scheduled([init]);
      return;
    }
    const seed = request.sampling.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (request.sampling.seed === null && request.sampling.temperature > 0) {
      log(`[engine] sampling seed ${seed}`);
    }
    const grammars = Array.from(
      { length: n },
      () => request.grammar ? new GrammarMatcher(request.grammar, s.vocab ??= tokenVocab(m)) : null,
    );
    const inits = grammars.map((grammar, index) => ({
      prompt: ids,
      limit,
      settings: { ...base, seed: index === 0 ? seed : mixSeed(seed, index) },
      ...(request.cacheSalt !== undefined ? { cacheSalt: request.cacheSalt } : {}),
      ...(priority !== 0 ? { priority } : {}),
      // The sink's matcher follows the ids (ends the choice when the value is complete); the mask thread's
      // matcher follows the same ids to walk the vocabulary off the engine loop.
      ...(grammar
        ? {
          constraint: withBadWords(
            bad,
            m,
            (s.masks ??= MaskPool.start(grammar.vocab)).open(grammar.grammar, stopIds),
          ),
        }
        : bad?.dynamic
        ? { constraint: badWordsConstraint(bad, m.config.vocabSize, allowed, null) }
        : staticMask
        ? { mask: staticMask }
        : {}),
      sink: createChoice({
        grammar,
        keepSpecialTokens: request.keepSpecialTokens ?? [],
        skipSpecialTokens: request.skipSpecialTokens ?? true,
        includeStopStr: request.includeStopStr ?? false,
        ids: request.returnTokenIds ?? false,
        index,
        tokenizer: m.tokenizer,
        prompt: ids,
        stop: request.stop,
        stopIds,
        // EOS ends a choice with no stop_reason even when listed (vLLM checks EOS first)
        stopTokenIds: new Set((request.stopTokenIds ?? []).filter((id) => !eos.includes(id))),
        limit,
        logprobs: request.logprobs ?? null,
        channel,
        onEnd: () => {
          if (--open === 0) channel.close();
        },
      }),
      // One scoring serves all choices (they share the prompt): the first's.
      ...(scoreTop !== null && index === 0 ? { score: score() } : {}),
    }));
    yield* scheduled(inits);

    /** Runs sequences: their events, and on the way out (done, failed, client gone) their end. */
    async function* scheduled(inits: SeqInit[]): AsyncGenerator<TokenEvent> {
      let seqs: Seq[];
      try {
        seqs = scheduler.add(entry, inits);
      } catch (err) {
        inits.forEach((init: SeqInit) => init.constraint?.release?.()); // the mask thread forgets them
        throw err;
      }
      inFlight++;
      const cancel = () => {
        seqs.forEach((seq) => scheduler.cancel(seq));
        channel.close(); // a reader waiting for the next event ends now
      };
      signal?.addEventListener("abort", cancel);
      try {
        if (signal?.aborted) return;
        yield { type: "start", promptTokens: ids.length };
        if (scoreTop === null) yield* prompt(null);
        yield* channel;
      } finally {
        inFlight--;
        signal?.removeEventListener("abort", cancel);
        cancel();
      }
    }
  }

  /** A 429 (EngineBusyError) when `n` more sequences would overfill the waiting queue. */
  function checkQueue(n: number): void {
    if (scheduler.counts().waiting + n > opts.maxQueued) {
      throw new EngineBusyError(`Cannot queue the request: ${opts.maxQueued} sequences are already waiting`);
    }
  }

  async function embed(input: GenerateInput, options: EmbedOptions = {}): Promise<EmbedResult> {
    const s = served;
    if (!s || status().state !== "ready") throw new Error(`Cannot embed: engine is ${status().state}`);
    const maxModelLen = s.runner.cache.shape.maxModelLen;
    const full = promptIds(
      s.model,
      input,
      options.addSpecialTokens !== undefined ? { addSpecialTokens: options.addSpecialTokens } : {},
      "input",
    );
    const ids = truncatedPrompt(full, options.truncatePromptTokens, maxModelLen);
    if (ids.length === 0) throw new EngineInputError("Cannot embed an empty input", "input");
    const most = Math.min(maxModelLen, opts.maxPromptTokens ?? Infinity);
    if (ids.length > most) {
      throw new EngineInputError(
        `Input has ${ids.length} tokens but this server embeds at most ${most}`,
        "input",
        "context_length_exceeded",
      );
    }
    checkQueue(1);
    inFlight++;
    try {
      return await new Promise<EmbedResult>((resolve, reject) => {
        scheduler.add(s.entry, [{
          prompt: ids,
          limit: 0,
          settings: GREEDY_SLOT,
          embed: { done: (embedding) => resolve({ embedding, promptTokens: ids.length }) },
          sink: { token: () => true, fail: reject },
        }]);
      });
    } finally {
      inFlight--;
    }
  }

  /**
   * What comes of the prompt itself before the generated tokens: its scored tokens (a "prompt" event, for
   * GenerateRequest.promptLogprobs) and, with `echo`, the prompt as each choice's first delta (with its
   * tokens' logprobs when `logprobs` asks). One scoring, with promptScoreTop's alternatives, serves both.
   */
  function promptEvents(
    s: Served,
    request: GenerateRequest,
    ids: number[],
    n: number,
    truncated: boolean,
    scored: TokenLogprob[] | null,
  ): TokenEvent[] {
    const events: TokenEvent[] = [];
    const promptLogprobs = scored && request.promptLogprobs !== undefined
      ? withTop(scored, request.promptLogprobs)
      : null;
    if (promptLogprobs || request.returnTokenIds) {
      events.push({
        type: "prompt",
        ...(request.returnTokenIds ? { ids: [...ids] } : {}),
        ...(promptLogprobs ? { logprobs: promptLogprobs } : {}),
      });
    }
    if (!request.echo) return events;
    const logprobs = scored && request.logprobs !== undefined && request.logprobs !== null
      ? withTop(scored, request.logprobs)
      : undefined;
    // A truncated prompt (truncate_prompt_tokens) echoes the ids the model read.
    const text = request.input.kind === "text" && !truncated
      ? request.input.prompt
      : s.model.tokenizer.decode(ids);
    for (let index = 0; index < n; index++) {
      events.push({ type: "delta", index, text, tokens: 0, ...(logprobs ? { logprobs } : {}) });
    }
    return events;
  }

  function counters(): EngineCounters {
    const caches = new Set(all.map((s) => s.runner.cache));
    const weights = new Set(all.flatMap((s) => gpuWeightsBuffers(s.model.weights)));
    const { running, waiting } = scheduler.counts();
    return {
      running,
      waiting,
      kvBlocksUsed: [...caches].reduce((n, c) => n + c.usedBlocks, 0),
      kvBlocksTotal: [...caches].reduce((n, c) => n + c.shape.numBlocks, 0),
      kvBlocksCached: [...caches].reduce((n, c) => n + c.cachedBlocks, 0),
      gpuBytes: {
        weights: [...weights].reduce((n, b) => n + b.size, 0),
        kvCache: [...caches].reduce((n, c) => n + c.shape.bytes, 0),
        scratch: all.reduce((n, s) => n + s.runner.scratchBytes, 0),
      },
      cacheConfig: served
        ? {
          blockSize: served.runner.cache.shape.blockSize,
          numBlocks: served.runner.cache.shape.numBlocks,
          kvCacheDtype: served.runner.cache.shape.kvType,
          maxModelLen: served.runner.cache.shape.maxModelLen,
          prefixCaching: opts.prefixCaching,
        }
        : null,
      promptTokensTotal: scheduler.promptTokens,
      generatedTokensTotal: scheduler.generatedTokens,
      preemptionsTotal: scheduler.preemptions,
      prefixCacheQueriesTotal: scheduler.prefixQueries,
      prefixCacheHitsTotal: scheduler.prefixHits,
    };
  }

  /** The model new requests get; tokenize and detokenize use it too, so counts match generation. */
  function current(what: string): LoadedModel {
    if (!served || status().state !== "ready") throw new Error(`Cannot ${what}: engine is ${status().state}`);
    return served.model;
  }

  return {
    status,
    generate,
    counters,
    tokenize(input, options = {}) {
      const m = current("tokenize");
      const ids = promptIds(m, input, options);
      if (!options.returnTokenStrs) return Promise.resolve({ ids });
      return Promise.resolve({ ids, tokenStrs: ids.map((id) => m.tokenizer.idToToken(id) ?? "") });
    },
    embed,
    detokenize(ids) {
      const m = current("detokenize");
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
      const done = installing.then(() => install(loaded)).then(() => {
        state = "ready";
        detail = "ready";
      });
      installing = done.catch(() => {});
      return done;
    },
    lease,
    inFlight: () => inFlight,
    setStatus(s, d) {
      state = s;
      detail = d;
    },
  };
}

/** Refuses prompts that leave no room; returns the most ids the request may generate. */
function checkLengths(request: GenerateRequest, promptLen: number, maxLen: number): number {
  const param = request.input.kind === "chat" ? "messages" : "prompt";
  if (promptLen === 0) throw new EngineInputError("Cannot generate from an empty prompt", param);
  if (promptLen >= maxLen) {
    throw new EngineInputError(
      `Prompt has ${promptLen} tokens but the max model length is ${maxLen}`,
      param,
      "context_length_exceeded",
    );
  }
  const room = maxLen - promptLen;
  if (request.maxTokensStrict && request.maxTokens !== null && request.maxTokens > room) {
    throw new EngineInputError(
      `Cannot generate ${request.maxTokens} tokens: the prompt has ${promptLen} tokens and the max model ` +
        `length is ${maxLen}, which leaves ${room}; lower max_tokens`,
      "max_tokens",
      "context_length_exceeded",
    );
  }
  return Math.min(request.maxTokens ?? Infinity, room);
}

/** The kernels' per-sequence settings of a request (seed filled in per choice). */
function slotSettings(m: LoadedModel, r: GenerateRequest, banIds: number[]): SlotSettings {
  const vocab = m.config.vocabSize;
  for (const [id] of r.logitBias ?? []) {
    if (!(id >= 0 && id < vocab)) {
      throw new EngineInputError(`Cannot bias token ${id}: the vocabulary has ${vocab}`, "logit_bias");
    }
  }
  for (const id of r.stopTokenIds ?? []) {
    if (!(id >= 0 && id < vocab)) {
      throw new EngineInputError(`Cannot stop on token ${id}: the vocabulary has ${vocab}`, "stop_token_ids");
    }
  }
  if ((r.logitBias ?? []).length > MAX_BIAS) {
    throw new EngineInputError(`Cannot use more than ${MAX_BIAS} logit_bias entries`, "logit_bias");
  }
  const ban = [...new Set(banIds)].filter((id) => id < vocab);
  if ((r.minTokens ?? 0) > 0 && ban.length > MAX_BAN) {
    throw new EngineInputError(
      `Cannot hold back more than ${MAX_BAN} stop ids with min_tokens`,
      "stop_token_ids",
    );
  }
  const p = r.penalties ?? { presence: 0, frequency: 0, repetition: 1 };
  return {
    temperature: r.sampling.temperature,
    topP: r.sampling.topP,
    topK: r.sampling.topK,
    minP: r.sampling.minP,
    seed: 0,
    presence: p.presence,
    frequency: p.frequency,
    repetition: p.repetition,
    bias: r.logitBias ?? [],
    minTokens: r.minTokens ?? 0,
    ban: (r.minTokens ?? 0) > 0 ? ban : [],
    logprobs: r.logprobs !== undefined && r.logprobs !== null,
    nTop: r.logprobs ?? 0,
    masked: r.grammar !== undefined || r.allowedTokenIds !== undefined || (r.badWords ?? []).length > 0,
  };
}

/**
 * The prompt ids the model reads: the last `keep` of them (GenerateRequest.truncatePromptTokens; −1: the max
 * model length), or all.
 * @returns `ids` itself when nothing is cut
 */
function truncatedPrompt(ids: number[], keep: number | undefined, maxModelLen: number): number[] {
  const n = keep === -1 ? maxModelLen : keep;
  return n !== undefined && ids.length > n ? ids.slice(ids.length - n) : ids;
}

/** The mask (logits_process.ts's row) of `ids`; an id past the vocabulary is a 400 naming allowed_token_ids. */
function allowedMask(vocab: number, ids: readonly number[]): Uint32Array {
  const words = new Uint32Array(maskWords(vocab));
  ids.forEach((id, i) => {
    if (!(Number.isSafeInteger(id) && id >= 0 && id < vocab)) {
      throw new EngineInputError(
        `Cannot allow token ${id}: the vocabulary has ${vocab} ids`,
        `allowed_token_ids[${i}]`,
      );
    }
    words[id >>> 5] |= 1 << (id & 31);
  });
  return words;
}

/** A model's vocabulary as byte strings over its logit rows (ids past the tokenizer's are never allowed). */
function tokenVocab(m: LoadedModel): TokenVocab {
  return new TokenVocab(m.tokenizer.tokenBytesTable(), m.config.vocabSize);
}

/** A distinct u32 seed for choice `index` > 0 of a request seeded with `seed`. */
function mixSeed(seed: number, index: number): number {
  let h = Math.imul((seed ^ 0x9e3779b9) >>> 0, 0x85ebca6b) ^ Math.imul(index, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x27d4eb2f);
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * Renders and tokenizes the prompt of a request (the default options are what generation uses); `field` is
 * what a bad id's 400 names (`prompt[k]`, or /v1/embeddings' `input[k]`).
 */
function promptIds(
  m: LoadedModel,
  input: GenerateInput,
  options: TokenizeOptions = {},
  field = "prompt",
): number[] {
  const { addSpecialTokens = input.kind === "text" } = options;
  if (input.kind === "tokens") {
    // Ids come from clients too (/v1/completions takes a prompt of ids): one past the embedding is a 400.
    const vocab = m.config.vocabSize;
    const bad = input.ids.findIndex((id) => !(Number.isSafeInteger(id) && id >= 0 && id < vocab));
    if (bad >= 0) {
      throw new EngineInputError(
        `Cannot use token id ${input.ids[bad]}: the vocabulary has ${vocab} ids`,
        `${field}[${bad}]`,
      );
    }
    return input.ids;
  }
  if (input.kind === "text") return m.tokenizer.encode(input.prompt, { addSpecialTokens });
  if (!m.chatTemplate) {
    throw new EngineInputError(
      `Cannot use /v1/chat/completions: model "${m.modelId}" has no chat template; use /v1/completions`,
      "messages",
      "no_chat_template",
    );
  }
  if ((input.tools?.length ?? 0) > 0 && !m.chatTemplate.toolCallFormat) {
    throw new EngineInputError(
      `Cannot use tools with model "${m.modelId}": its chat template renders no tool calls the server can read`,
      "tools",
    );
  }
  const continueFinalMessage = input.continueFinalMessage ?? false;
  if (continueFinalMessage && input.messages.at(-1)?.role !== "assistant") {
    throw new EngineInputError(
      "Cannot continue the final message: it is not the assistant's",
      "continue_final_message",
    );
  }
  let text: string;
  try {
    text = m.chatTemplate.render(input.messages, {
      addGenerationPrompt: input.addGenerationPrompt ?? !continueFinalMessage,
      continueFinalMessage,
      ...(input.tools ? { tools: input.tools } : {}),
      ...(input.templateVars ? { extra: input.templateVars } : {}),
    });
  } catch (err) {
    // A template may reject a conversation (raise_exception): that is the client's input, not a server fault.
    throw new EngineInputError((err as Error).message, "messages", "chat_template_error");
  }
  return m.tokenizer.encode(text, { addSpecialTokens });
}

/**
 * How many alternatives a request's prompt is scored with: the most of what `promptLogprobs` and an echo
 * with `logprobs` ask (one scoring serves both), or null when neither asks.
 */
function promptScoreTop(request: GenerateRequest): number | null {
  const echo = request.echo && request.logprobs !== undefined && request.logprobs !== null
    ? request.logprobs
    : null;
  const prompt = request.promptLogprobs ?? null;
  if (echo === null) return prompt;
  return prompt === null ? echo : Math.max(echo, prompt);
}

/** A grammar's constraint, its masks without the ids bad words ban. */
function withBadWords(bad: BadWords | null, m: LoadedModel, grammar: SeqConstraint): SeqConstraint {
  return bad ? badWordsConstraint(bad, m.config.vocabSize, null, grammar) : grammar;
}

/**
 * A scored prompt's tokens (SeqInit.score's records): the first one's logprob null (nothing predicts it),
 * each other's from record t − 1.
 */
function scoredPrompt(m: LoadedModel, ids: readonly number[], records: Uint32Array): TokenLogprob[] {
  const rec = (t: number) => records.subarray(t * LOGPROB_RECORD_WORDS, (t + 1) * LOGPROB_RECORD_WORDS);
  return ids.map((id, t) =>
    t === 0
      ? { id, token: m.tokenizer.decode([id]), logprob: null, top: [] }
      : readLogprob(m.tokenizer, id, rec(t - 1))
  );
}

/** Scored prompt logprobs with at most `top` alternatives each. */
function withTop(entries: TokenLogprob[], top: number): TokenLogprob[] {
  return entries.map((e) => e.top.length > top ? { ...e, top: e.top.slice(0, top) } : e);
}
