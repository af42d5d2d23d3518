/**
 * POST /v1/completions (legacy text completion), plus the generation plumbing that chat.ts shares:
 * reading the body, starting a generation, collecting it, and streaming it as SSE.
 */
import type { Context, Handler } from "hono";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";
import {
  type Engine,
  type GenerateRequest,
  type TokenEvent,
  type TokenLogprob,
} from "../../inference/engine/mod.ts";
import { ApiError, asApiError, internalError, invalidRequest, toErrorBody } from "../errors.ts";
import { trackGeneration } from "../middleware/request_log.ts";
import { usageCounter } from "../usage.ts";
import { StreamIds } from "../token_ids.ts";
import {
  asTokenIds,
  completionLogprobs,
  parseCompletionRequest,
  promptLogprobs,
  type RequestDefaults,
  type TextCompletion,
  type Usage,
} from "../protocol.ts";

/** What every generation route needs from the app. */
export interface RouteDeps {
  engine: Engine;
  /** The `model` reported in responses. */
  modelName(): string;
  defaults: RequestDefaults;
  /** Where unexpected failures are reported (the client only sees a generic message). */
  logError(message: string, err: unknown): void;
  /** Fires when in-flight generations must stop (the shutdown grace is over). */
  stopSignal?: AbortSignal;
  /** Split chat answers into reasoning and content where the model's template knows `<think>` (ServerConfig). */
  splitReasoning?: boolean;
}

/** The `end` event of a generation. */
export type EndEvent = Extract<TokenEvent, { type: "end" }>;

/**
 * Builds the /v1/completions handler.
 * @param deps The engine, names and defaults.
 * @returns A Hono handler.
 */
export function completionsHandler(deps: RouteDeps): Handler {
  return async (c) => {
    const parsed = parseCompletionRequest(await readJsonBody(c), deps.defaults);
    const n = parsed.request.n ?? 1;
    const prompts = parsed.inputs?.length ?? 1;
    const events = parsed.inputs
      ? await startBatch(c, deps, parsed.inputs.map((input) => ({ ...parsed.request, input })), n)
      : await startGeneration(c, deps, parsed.request);
    const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const model = deps.modelName();
    const wantLogprobs = parsed.request.logprobs !== undefined && parsed.request.logprobs !== null;
    const wantPrompt = parsed.request.promptLogprobs !== undefined;
    const wantIds = parsed.request.returnTokenIds === true;
    const named = parsed.tokensAsIds ? asTokenIds : (entries: TokenLogprob[]) => entries;
    const frame = (choices: TextCompletion["choices"]): TextCompletion => ({
      id,
      object: "text_completion",
      created,
      model,
      choices,
      // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
      ...(parsed.includeUsage ? { usage: parsed.continuousUsage ? usage.total() : null } : {}),
    });
    if (!parsed.stream) {
      const done = await collectChoices(events, n, prompts);
      const choices = done.choices.map((ch, index) => ({
        index,
        text: ch.text,
        finish_reason: ch.finishReason,
        logprobs: wantLogprobs ? completionLogprobs(named(ch.logprobs)) : null,
        ...(wantPrompt ? { prompt_logprobs: promptLogprobs(ch.promptLogprobs ?? []) } : {}),
        ...(wantIds ? { prompt_token_ids: ch.promptIds ?? [], token_ids: ch.ids } : {}),
        ...(ch.stopReason !== undefined ? { stop_reason: ch.stopReason } : {}),
      }));
      return c.json({ ...frame(choices), usage: done.usage });
    }
    const sent = new Map<number, number>(); // characters of logprob tokens sent per choice (text_offset)
    const usage = usageCounter(n, prompts);
    const ids = new StreamIds(n);
    return streamGeneration(c, events, deps, (ev) => {
      usage.add(ev);
      if (wantIds) ids.add(ev);
      const index = "index" in ev ? ev.index ?? 0 : 0;
      if (ev.type === "delta") {
        if (ev.text === "" && !ev.logprobs) return [];
        const at = sent.get(index) ?? 0;
        const entries = ev.logprobs ? named(ev.logprobs) : [];
        const lp = ev.logprobs && wantLogprobs ? completionLogprobs(entries, at) : null;
        sent.set(index, at + entries.reduce((n, e) => n + e.token.length, 0));
        return [frame([{ index, text: ev.text, finish_reason: null, logprobs: lp, ...ids.take(index) }])];
      }
      // prompt_logprobs are never streamed; a prompt's ids go with its choices' first chunks
      if (ev.type === "start" || ev.type === "prompt") return [];
      const last = frame([{
        index,
        text: "",
        finish_reason: ev.finishReason,
        logprobs: null,
        ...(ev.stopReason !== undefined ? { stop_reason: ev.stopReason } : {}),
        ...ids.take(index),
      }]);
      return parsed.includeUsage && usage.done() ? [last, { ...frame([]), usage: usage.total() }] : [last];
    });
  };
}

/** One finished choice of a non-streaming response. */
export interface CollectedChoice {
  text: string;
  finishReason: EndEvent["finishReason"];
  logprobs: TokenLogprob[];
  /** its prompt's scored tokens (GenerateRequest.promptLogprobs), when asked */
  promptLogprobs?: TokenLogprob[];
  /** its own ids and its prompt's (GenerateRequest.returnTokenIds), when asked */
  ids: number[];
  promptIds?: number[];
  /** the stop string or stop id that ended it (vLLM's stop_reason), if one did */
  stopReason?: string | number;
}

/**
 * Gathers the deltas of every choice of a generation.
 * @param events The generation's events.
 * @param n The number of choices.
 * @returns The choices in index order and the usage; throws when the engine stopped early.
 */
export async function collectChoices(
  events: AsyncIterable<TokenEvent>,
  n: number,
  prompts = 1,
): Promise<{ choices: CollectedChoice[]; usage: Usage }> {
  const count = n * prompts;
  const parts = Array.from(
    { length: count },
    () => ({ text: [] as string[], logprobs: [] as TokenLogprob[], ids: [] as number[] }),
  );
  const ends: (EndEvent | undefined)[] = new Array(count);
  const scored: (TokenLogprob[] | undefined)[] = new Array(prompts); // per prompt
  const promptIds: (number[] | undefined)[] = new Array(prompts);
  const usage = usageCounter(n, prompts);
  for await (const ev of events) {
    usage.add(ev);
    if (ev.type === "delta") {
      const p = parts[ev.index ?? 0];
      p.text.push(ev.text);
      p.logprobs.push(...(ev.logprobs ?? []));
      p.ids.push(...(ev.ids ?? []));
    }
    if (ev.type === "prompt") {
      scored[Math.floor((ev.index ?? 0) / n)] = ev.logprobs;
      promptIds[Math.floor((ev.index ?? 0) / n)] = ev.ids;
    }
    if (ev.type === "end") ends[ev.index ?? 0] = ev;
  }
  const choices = parts.map((p, i) => {
    const end = ends[i];
    if (!end) throw new Error("Engine stopped without an end event");
    const prompt = scored[Math.floor(i / n)];
    const read = promptIds[Math.floor(i / n)];
    return {
      text: p.text.join(""),
      finishReason: end.finishReason,
      logprobs: p.logprobs,
      ids: p.ids,
      ...(end.stopReason !== undefined ? { stopReason: end.stopReason } : {}),
      ...(prompt ? { promptLogprobs: prompt } : {}),
      ...(read ? { promptIds: read } : {}),
    };
  });
  return { choices, usage: usage.total() };
}

/**
 * Starts one generation per request (a completions batch of prompts) and merges their events as they come:
 * one "start" (the prompts' tokens summed), then every delta and end with choice index `p·n + i`. All start
 * before the response does, so a refused prompt is the request's 4xx, and the others are cancelled.
 */
async function startBatch(
  c: Context,
  deps: RouteDeps,
  requests: GenerateRequest[],
  n: number,
): Promise<Generation> {
  // Each untracked: the request log and metrics see the merged stream once.
  const started = await Promise.allSettled(requests.map((r) => startGeneration(c, deps, r, false)));
  const generations = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.all(generations.map((g) => g.close()));
    throw (failed as PromiseRejectedResult).reason;
  }
  const merged = mergeEvents(generations, n);
  const closeAll = () => Promise.all(generations.map((g) => g.close())).then(() => {});
  return Object.assign(trackGeneration(c, merged, n, requests.length), { close: closeAll });
}

async function* mergeEvents(generations: Generation[], n: number): AsyncGenerator<TokenEvent> {
  const its = generations.map((g) => g[Symbol.asyncIterator]());
  try {
    // Each one's first event is its start (startGeneration waited for it): one start for them all.
    const firsts = await Promise.all(its.map((it) => it.next()));
    const promptTokens = firsts.reduce(
      (t, r) => t + (!r.done && r.value.type === "start" ? r.value.promptTokens : 0),
      0,
    );
    yield { type: "start", promptTokens };
    const pending = new Map<number, Promise<[number, IteratorResult<TokenEvent>]>>();
    const pull = (p: number) => pending.set(p, its[p].next().then((r) => [p, r]));
    its.forEach((_, p) => pull(p));
    while (pending.size > 0) {
      const [p, r] = await Promise.race(pending.values());
      pending.delete(p);
      if (r.done) continue;
      yield r.value.type === "start" ? r.value : { ...r.value, index: p * n + (r.value.index ?? 0) };
      pull(p);
    }
  } finally {
    // A reader that leaves early (client gone) ends every generation, freeing their slots.
    await Promise.all(generations.map((g) => g.close()));
  }
}

/**
 * Reads the request body as JSON whatever the Content-Type (curl sends form-encoded by default).
 * @param c The request context.
 * @returns The parsed value; throws a 400 ApiError when it is not JSON.
 */
export async function readJsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidRequest(`Cannot parse the request body as JSON: ${(err as Error).message}`);
  }
}

/**
 * Starts a generation and waits for its first event, so that input errors (EngineInputError) surface as a
 * proper HTTP error (400, 429) before any response byte is sent. The engine's first event ("start") comes
 * as soon as the request is queued, so a streaming response's headers go out while it waits for a slot.
 * The events pass through the request log (trackGeneration), and stop with a 503 `server_shutting_down`
 * error once `deps.stopSignal` fires.
 * @param c The request context; its signal fires when the client goes away.
 * @param deps The engine, the prompt limit and the stop signal.
 * @param request The validated request.
 * @param track Feed the request log and metrics (trackGeneration); false for a batch's parts, tracked merged.
 * @returns All events, the first one included.
 */
export async function startGeneration(
  c: Context,
  deps: RouteDeps,
  request: GenerateRequest,
  track = true,
): Promise<Generation> {
  const { engine, stopSignal } = deps;
  if (stopSignal?.aborted) throw shuttingDown();
  const link = stopSignal ? linkSignals(c.req.raw.signal, stopSignal) : null;
  const it = engine.generate(request, link?.signal ?? c.req.raw.signal)[Symbol.asyncIterator]();
  let first: IteratorResult<TokenEvent>;
  try {
    first = await it.next();
  } catch (err) {
    link?.release();
    throw err;
  }
  let done = first.done === true;
  let closed = false;
  /** Ends the engine's iterator unless it ended (frees its queue slot) and detaches the stop signal; once. */
  const close = async () => {
    if (closed) return;
    closed = true;
    if (!done) await it.return?.();
    link?.release();
  };
  async function* all(): AsyncGenerator<TokenEvent> {
    try {
      if (done) return;
      if (stopSignal?.aborted) throw shuttingDown();
      yield first.value;
      for (;;) {
        const r = await it.next();
        done = r.done === true;
        if (done) return;
        // The engine ends an aborted run with a normal "end"; the client must not take it for a full answer.
        if (stopSignal?.aborted) throw shuttingDown();
        yield r.value;
      }
    } finally {
      // A consumer that stops early (client gone) must still end the engine's iterator to free its queue slot.
      await close();
    }
  }
  return Object.assign(track ? trackGeneration(c, all(), request.n ?? 1) : all(), { close });
}

/**
 * A started generation's events; `close()` ends it even if they were never read (an iterator's `return()`
 * does nothing for a generator that has not started).
 */
export type Generation = AsyncIterable<TokenEvent> & { close(): Promise<void> };

/**
 * A signal that fires when either source does. Unlike AbortSignal.any, whose dependents stay registered on
 * a long-lived source (about 200 bytes per call in Deno 2.9, never freed), release() detaches it.
 */
function linkSignals(a: AbortSignal, b: AbortSignal): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const abort = () => controller.abort();
  if (a.aborted || b.aborted) abort();
  a.addEventListener("abort", abort, { once: true });
  b.addEventListener("abort", abort, { once: true });
  return {
    signal: controller.signal,
    release() {
      a.removeEventListener("abort", abort);
      b.removeEventListener("abort", abort);
    },
  };
}

function shuttingDown(): ApiError {
  return new ApiError(503, "server_error", "Cannot finish the request: the server is shutting down", {
    code: "server_shutting_down",
  });
}

/**
 * Streams a generation as SSE: each engine event becomes zero or more `data:` JSON events, then `data: [DONE]`.
 * A failure mid-stream becomes one `{"error": ...}` event and the stream closes; it never escapes to Hono, whose
 * own handler would echo internal messages to the client.
 * @param c The request context.
 * @param events The generation's events (from startGeneration).
 * @param deps For logging.
 * @param toPayloads Maps one event to the JSON payloads to send.
 * @returns The streaming response.
 */
export function streamGeneration(
  c: Context,
  events: AsyncIterable<TokenEvent>,
  deps: Pick<RouteDeps, "logError">,
  toPayloads: (ev: TokenEvent) => object[],
  { named = false }: { named?: boolean } = {},
): Response {
  // named (the Responses API): each event is `event: <payload.type>`, and no `[DONE]` closes the stream.
  const write = (stream: SSEStreamingApi, payload: object & { type?: unknown }) =>
    stream.writeSSE({
      data: JSON.stringify(payload),
      ...(named && typeof payload.type === "string" ? { event: payload.type } : {}),
    });
  return streamSSE(c, async (stream) => {
    let ended = false;
    try {
      for await (const ev of events) {
        for (const payload of toPayloads(ev)) await write(stream, payload);
        if (ev.type === "end") ended = true;
        if (stream.aborted) return; // client gone: leaving the loop returns the engine's iterator
      }
      if (!ended) throw new Error("Engine stopped without an end event");
      if (!named) await stream.writeSSE({ data: "[DONE]" });
    } catch (err) {
      if (stream.aborted || c.req.raw.signal.aborted) return;
      let apiError = asApiError(err);
      if (!apiError) {
        deps.logError("Generation failed mid-stream", err);
        apiError = internalError();
      }
      await write(stream, named ? { type: "error", ...toErrorBody(apiError) } : toErrorBody(apiError));
    }
  });
}
