/**
 * Per-request bookkeeping: a request id (the client's `x-request-id` when it is sane, else a UUID) echoed
 * in the `x-request-id` response header, and one record per request that is finished when the response
 * body ends, not when the handler returns, so a stream is logged with its values at stream end.
 * Generation routes feed the record through trackGeneration(); the record then goes to a JSON log line
 * and to whoever else listens (metrics).
 */
import type { Context, MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { TokenEvent } from "../../inference/engine/mod.ts";
import { usageCounter } from "../usage.ts";

/** What is known about one request when its response ends. */
export interface RequestRecord {
  id: string;
  method: string;
  path: string;
  /** The matched route pattern (bounded cardinality, for metrics), or "unmatched". */
  route: string;
  status: number;
  /** Start, in the clock's milliseconds. */
  startMs: number;
  durationMs: number;
  /** The client went away before the body ended. */
  aborted: boolean;
  /** Set by trackGeneration; null for other routes. Completion tokens add up over the `n` choices. */
  promptTokens: number | null;
  completionTokens: number | null;
  /** Prompt tokens the prefix cache served (OpenAI's cached_tokens). */
  cachedTokens: number | null;
  /** Request start → first non-empty text delta. */
  ttftMs: number | null;
  /** Seconds between consecutive non-empty text deltas (one delta may carry several tokens). */
  interTokenSeconds: number[];
  /** The finish reason of choice 0 (with `n` > 1 the others may differ). */
  finishReason: string | null;
}

/** Options of requestLog(). */
export interface RequestLogOptions {
  /** Receives one JSON line per request; absent means no log lines. */
  log?: (line: string) => void;
  /** Called once per request when its response ends (metrics listen here). */
  onFinish?: (record: RequestRecord) => void;
  /** Milliseconds clock; performance.now by default. */
  now?: () => number;
  /** Requests on these paths (probes and scrapes, polled every few seconds) are not logged; they still reach onFinish. */
  quietPaths?: readonly string[];
}

const records = new WeakMap<
  Context,
  { record: RequestRecord; now: () => number; lastDeltaMs: number | null }
>();
const SANE_ID = /^[\w.:+=/-]{1,128}$/;

/**
 * Builds the request-log middleware; mount it first so that it sees every response, errors included.
 * @param options Where lines and records go.
 * @returns The middleware.
 */
export function requestLog(
  { log, onFinish, now = () => performance.now(), quietPaths = ["/health", "/metrics"] }: RequestLogOptions =
    {},
): MiddlewareHandler {
  return async (c, next) => {
    const given = c.req.header("x-request-id");
    const id = given && SANE_ID.test(given) ? given : crypto.randomUUID();
    const wallStart = new Date();
    const entry = {
      record: {
        id,
        method: c.req.method,
        path: c.req.path,
        route: "unmatched",
        status: 0,
        startMs: now(),
        durationMs: 0,
        aborted: false,
        promptTokens: null,
        cachedTokens: null,
        completionTokens: null,
        ttftMs: null,
        interTokenSeconds: [],
        finishReason: null,
      } as RequestRecord,
      now,
      lastDeltaMs: null,
    };
    records.set(c, entry);
    c.header("x-request-id", id);
    await next();

    const r = entry.record;
    r.status = c.res.status;
    const pattern = routePath(c, -1);
    r.route = pattern === "*" || pattern === "/*" ? "unmatched" : pattern;
    let finished = false;
    const finish = (aborted: boolean) => {
      if (finished) return;
      finished = true;
      r.aborted = aborted;
      r.durationMs = now() - r.startMs;
      if (log && !quietPaths.includes(r.path)) log(logLine(r, wallStart));
      onFinish?.(r);
    };
    const headers = new Headers(c.res.headers);
    headers.set("x-request-id", id);
    const body = c.res.body;
    c.res = new Response(body ? watchEnd(body, finish) : null, { status: r.status, headers });
    if (!body) finish(false);
  };
}

/**
 * The record of a request being served, for routes that add to it.
 * @param c The request context.
 * @returns The record, or undefined when requestLog is not mounted.
 */
export function requestRecord(c: Context): RequestRecord | undefined {
  return records.get(c)?.record;
}

/**
 * Passes a generation's events through, noting token counts and the times of text deltas in the
 * request's record (time to first token from the request's arrival, gaps between deltas).
 * @param c The request context.
 * @param events The engine's events.
 * @param n Choices per prompt (a completions batch numbers prompt p's choices from p·n).
 * @param prompts Prompts of the generation (a completions batch has several).
 * @returns The same events.
 */
export async function* trackGeneration(
  c: Context,
  events: AsyncIterable<TokenEvent>,
  n = 1,
  prompts = 1,
): AsyncGenerator<TokenEvent> {
  const entry = records.get(c);
  const usage = usageCounter(n, prompts);
  for await (const ev of events) {
    if (entry) {
      const r = entry.record;
      usage.add(ev);
      if (ev.type === "start") r.promptTokens = usage.total().prompt_tokens;
      if (ev.type === "delta" && ev.text !== "") {
        const t = entry.now();
        if (entry.lastDeltaMs === null) r.ttftMs = t - r.startMs;
        else r.interTokenSeconds.push((t - entry.lastDeltaMs) / 1000);
        entry.lastDeltaMs = t;
      }
      if (ev.type === "end") {
        const counts = usage.total();
        r.promptTokens = counts.prompt_tokens;
        r.completionTokens = counts.completion_tokens;
        if (usage.reportsCached()) r.cachedTokens = counts.prompt_tokens_details.cached_tokens;
        if ((ev.index ?? 0) === 0) r.finishReason = ev.finishReason;
      }
    }
    yield ev;
  }
}

/** A stream with the same bytes that calls `onEnd(aborted)` once, when it ends or is cancelled. */
function watchEnd(
  body: ReadableStream<Uint8Array>,
  onEnd: (aborted: boolean) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          onEnd(false);
        } else controller.enqueue(value);
      } catch (err) {
        onEnd(true);
        controller.error(err);
      }
    },
    async cancel(reason) {
      onEnd(true);
      await reader.cancel(reason);
    },
  });
}

function logLine(r: RequestRecord, start: Date): string {
  return JSON.stringify({
    ts: start.toISOString(),
    id: r.id,
    method: r.method,
    route: r.route,
    path: r.path,
    status: r.status,
    duration_ms: round(r.durationMs),
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    cached_tokens: r.cachedTokens,
    ttft_ms: r.ttftMs === null ? null : round(r.ttftMs),
    finish_reason: r.finishReason,
    ...(r.aborted ? { aborted: true } : {}),
  });
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
