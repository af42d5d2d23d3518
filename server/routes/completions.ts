/**
 * POST /v1/completions (legacy text completion), plus the generation plumbing that chat.ts shares:
 * reading the body, starting a generation, collecting it, and streaming it as SSE.
 */
import type { Context, Handler } from "hono";
import { streamSSE } from "hono/streaming";
import type { Engine, GenerateRequest, TokenEvent } from "../../inference/types.ts";
import { ApiError, asApiError, internalError, invalidRequest, toErrorBody } from "../errors.ts";
import { trackGeneration } from "../middleware/request_log.ts";
import {
  parseCompletionRequest,
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
  /** Longest prompt in tokens (--max-prompt-tokens); null or absent: up to the context length. */
  maxPromptTokens?: number | null;
  /** Fires when in-flight generations must stop (the shutdown grace is over). */
  stopSignal?: AbortSignal;
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
    const events = await startGeneration(c, deps, parsed.request);
    const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const model = deps.modelName();
    const chunk = (text: string, finish: EndEvent | null): TextCompletion => ({
      id,
      object: "text_completion",
      created,
      model,
      choices: [{ index: 0, text, finish_reason: finish?.finishReason ?? null, logprobs: null }],
      // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
      ...(parsed.includeUsage ? { usage: null } : {}),
    });
    if (!parsed.stream) {
      const { text, end } = await collectText(events);
      return c.json({ ...chunk(text, end), usage: toUsage(end) });
    }
    return streamGeneration(c, events, deps, (ev) => {
      if (ev.type === "delta") return ev.text === "" ? [] : [chunk(ev.text, null)];
      if (ev.type === "start") return [];
      const last = chunk("", ev);
      return parsed.includeUsage ? [last, { ...last, choices: [], usage: toUsage(ev) }] : [last];
    });
  };
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
 * proper HTTP error before any response byte is sent. This also waits for the request's turn in the queue.
 * The events pass through the request log (trackGeneration), and stop with a 503 `server_shutting_down`
 * error once `deps.stopSignal` fires.
 * @param c The request context; its signal fires when the client goes away.
 * @param deps The engine, the prompt limit and the stop signal.
 * @param request The validated request.
 * @returns All events, the first one included.
 */
export async function startGeneration(
  c: Context,
  deps: RouteDeps,
  request: GenerateRequest,
): Promise<AsyncIterable<TokenEvent>> {
  const { engine, stopSignal } = deps;
  if (deps.maxPromptTokens) await checkPromptTokens(engine, request, deps.maxPromptTokens);
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
  async function* all(): AsyncGenerator<TokenEvent> {
    let done = first.done === true;
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
      if (!done) await it.return?.();
      link?.release();
    }
  }
  return trackGeneration(c, all());
}

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

/** --max-prompt-tokens: counts the prompt as the engine will (chat template included). */
async function checkPromptTokens(engine: Engine, request: GenerateRequest, max: number): Promise<void> {
  if (!engine.tokenize) throw new Error("Cannot enforce --max-prompt-tokens: the engine has no tokenize()");
  const { ids } = await engine.tokenize(request.input);
  if (ids.length > max) {
    throw invalidRequest(
      `Prompt has ${ids.length} tokens but this server accepts at most ${max} (--max-prompt-tokens)`,
      request.input.kind === "chat" ? "messages" : "prompt",
      "context_length_exceeded",
    );
  }
}

function shuttingDown(): ApiError {
  return new ApiError(503, "server_error", "Cannot finish the request: the server is shutting down", {
    code: "server_shutting_down",
  });
}

/**
 * Concatenates the deltas of a generation.
 * @param events The generation's events.
 * @returns The text and the end event; throws when the engine stopped without one.
 */
export async function collectText(
  events: AsyncIterable<TokenEvent>,
): Promise<{ text: string; end: EndEvent }> {
  const parts: string[] = [];
  for await (const ev of events) {
    if (ev.type === "delta") parts.push(ev.text);
    if (ev.type === "end") return { text: parts.join(""), end: ev };
  }
  throw new Error("Engine stopped without an end event");
}

/** OpenAI `usage` from an end event. */
export function toUsage(end: EndEvent): Usage {
  return {
    prompt_tokens: end.promptTokens,
    completion_tokens: end.completionTokens,
    total_tokens: end.promptTokens + end.completionTokens,
  };
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
): Response {
  return streamSSE(c, async (stream) => {
    let ended = false;
    try {
      for await (const ev of events) {
        for (const payload of toPayloads(ev)) await stream.writeSSE({ data: JSON.stringify(payload) });
        if (ev.type === "end") ended = true;
        if (stream.aborted) return; // client gone: leaving the loop returns the engine's iterator
      }
      if (!ended) throw new Error("Engine stopped without an end event");
      await stream.writeSSE({ data: "[DONE]" });
    } catch (err) {
      if (stream.aborted || c.req.raw.signal.aborted) return;
      let apiError = asApiError(err);
      if (!apiError) {
        deps.logError("Generation failed mid-stream", err);
        apiError = internalError();
      }
      await stream.writeSSE({ data: JSON.stringify(toErrorBody(apiError)) });
    }
  });
}
