/**
 * A scripted Engine for server tests: no GPU. It tokenizes one id per UTF-16 code unit (plus a BOS of 1),
 * streams scripted deltas (optionally slowly; the same to each of `n` choices), and, like the real engine,
 * ends an aborted run at its next "chunk" with a normal end event.
 */
import {
  type EmbedOptions,
  type EmbedResult,
  type Engine,
  type EngineCounters,
  EngineInputError,
  type EngineStatus,
  type GenerateInput,
  type GenerateRequest,
  type TokenEvent,
  type TokenizeOptions,
  type TokenizeResult,
  type ToolCallFormat,
} from "../inference/engine/mod.ts";

/** What the fake does for each request. */
export interface FakeScript {
  deltas: string[];
  /** Wait this long before each delta (abortable). */
  delayMs?: number;
  finishReason?: "stop" | "length";
  /** the end events' stop_reason (a stop string or id), if any */
  stopReason?: string | number;
}

/** Ids at or above this are outside the fake vocabulary. */
export const FAKE_VOCAB = 0x10000;

/** The scripted engine; fields are public so tests can steer and inspect it. */
export class FakeEngine implements Engine {
  state: EngineStatus["state"] = "ready";
  hasChatTemplate = true;
  /** How its "model" writes function calls (null: it takes no tools). */
  toolCallFormat: ToolCallFormat | null = null;
  /** Its "template" knows <think> blocks (EngineStatus.thinking). */
  thinking: { opensInPrompt: boolean } | null = null;
  contextLength = 64;
  /** Prompts longer than this are refused as the engine's --max-prompt-tokens refuses them; null: none. */
  maxPromptTokens: number | null = null;
  script: FakeScript = { deltas: ["Hel", "lo", " world"] };
  requests: GenerateRequest[] = [];
  embedded: GenerateInput[] = [];
  signals: (AbortSignal | undefined)[] = [];
  running = 0;
  waiting = 0;
  finished = 0;
  /** Totals as the real engine keeps them: prompt tokens at the start, one per delta sampled. */
  promptTokensTotal = 0;
  generatedTokensTotal = 0;

  status(): EngineStatus {
    return {
      state: this.state,
      detail: this.state,
      modelId: "fake-model",
      contextLength: this.contextLength,
      hasChatTemplate: this.hasChatTemplate,
      toolCallFormat: this.toolCallFormat,
      thinking: this.thinking,
    };
  }

  counters(): EngineCounters {
    return {
      running: this.running,
      waiting: this.waiting,
      kvBlocksUsed: 3,
      kvBlocksTotal: 4,
      kvBlocksCached: 1,
      gpuBytes: { weights: 1000, kvCache: 200, scratch: 30 },
      cacheConfig: { blockSize: 16, numBlocks: 4, kvCacheDtype: "f16", maxModelLen: 64, prefixCaching: true },
      promptTokensTotal: this.promptTokensTotal,
      generatedTokensTotal: this.generatedTokensTotal,
      preemptionsTotal: 0,
      prefixCacheQueriesTotal: 40,
      prefixCacheHitsTotal: 32,
    };
  }

  tokenize(input: GenerateInput, options: TokenizeOptions = {}): Promise<TokenizeResult> {
    if (input.kind === "tokens") return Promise.resolve({ ids: input.ids }); // ids pass through, as in the engine
    const { addSpecialTokens = input.kind === "text" } = options;
    const text = input.kind === "text"
      ? input.prompt
      : input.messages.map((m) => `${m.role}: ${m.content}\n`).join("") +
        ((input.addGenerationPrompt ?? !input.continueFinalMessage) ? "assistant:" : "");
    const ids = [...(addSpecialTokens ? [1] : []), ...Array.from(text, (ch) => ch.charCodeAt(0))];
    return Promise.resolve(
      options.returnTokenStrs ? { ids, tokenStrs: ids.map((id) => String.fromCharCode(id)) } : { ids },
    );
  }

  detokenize(ids: readonly number[]): Promise<string> {
    const bad = ids.findIndex((id) => id >= FAKE_VOCAB);
    if (bad >= 0) throw new EngineInputError(`Cannot detokenize id ${ids[bad]}`, `tokens[${bad}]`);
    return Promise.resolve(String.fromCharCode(...ids));
  }

  /**
   * A fake embedding of 4 values: (number of ids, first id, last id, 0), after truncate_prompt_tokens; the
   * inputs it was asked for are kept in `embedded`.
   */
  async embed(input: GenerateInput, options: EmbedOptions = {}): Promise<EmbedResult> {
    this.embedded.push(input);
    const all = (await this.tokenize(input, { addSpecialTokens: options.addSpecialTokens ?? true })).ids;
    const keep = options.truncatePromptTokens === -1 ? this.contextLength : options.truncatePromptTokens;
    const ids = keep !== undefined && all.length > keep ? all.slice(all.length - keep) : all;
    if (ids.length > this.contextLength) {
      throw new EngineInputError(`Input has ${ids.length} tokens`, "input", "context_length_exceeded");
    }
    return { embedding: Float32Array.of(ids.length, ids[0], ids.at(-1)!, 0), promptTokens: ids.length };
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent> {
    this.requests.push(request);
    this.signals.push(signal);
    const promptTokens = (await this.tokenize(request.input)).ids.length;
    if (this.maxPromptTokens !== null && promptTokens > this.maxPromptTokens) {
      throw new EngineInputError(
        `Prompt has ${promptTokens} tokens but this server accepts at most ${this.maxPromptTokens}`,
        "prompt",
        "context_length_exceeded",
      );
    }
    const s = this.script;
    this.running++;
    let completion = 0;
    this.promptTokensTotal += promptTokens;
    try {
      yield { type: "start", promptTokens };
      // With n > 1 every choice gets the script, its deltas interleaved by index.
      const n = request.n ?? 1;
      const at = (index: number) => (n > 1 ? { index } : {});
      for (const text of s.deltas) {
        if (s.delayMs) await sleep(s.delayMs, signal);
        if (signal?.aborted) break;
        completion++;
        this.generatedTokensTotal += n;
        for (let i = 0; i < n; i++) yield { type: "delta", text, ...at(i) };
      }
      for (let i = 0; i < n; i++) {
        yield {
          type: "end",
          finishReason: signal?.aborted ? "stop" : s.finishReason ?? "stop",
          promptTokens,
          completionTokens: completion,
          ...(s.stopReason !== undefined ? { stopReason: s.stopReason } : {}),
          ...at(i),
        };
      }
    } finally {
      this.running--;
      this.finished++;
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
