/**
 * The admin API for quantization jobs (inference/jobs): POST /v1/quantize starts one (202), GET lists them or
 * shows one, GET …/events streams its snapshots as SSE (`event: job`) until it ends, DELETE cancels it.
 * Authentication is the auth middleware's concern, mounted on these paths by app.ts's caller.
 */
import type { Context, Handler } from "hono";
import { streamSSE } from "hono/streaming";
import {
  JobInputError,
  type JobJson,
  type JobManager,
  parseQuantizeRequest,
  QuantizeOptionsError,
} from "../../inference/jobs/mod.ts";
import { ApiError, invalidRequest } from "../errors.ts";
import { readJsonBody } from "./completions.ts";

const TERMINAL = new Set(["done", "failed", "cancelled"]);

/**
 * Maps the job manager's and the validator's errors to OpenAI-shaped API errors.
 * @param err anything thrown by a job call
 * @returns the error to throw (the original when it is not a client error)
 */
export function jobError(err: unknown): unknown {
  if (err instanceof QuantizeOptionsError) return invalidRequest(err.message, err.field || null);
  if (err instanceof JobInputError) {
    const type = err.status === 404
      ? "not_found_error"
      : err.status === 503
      ? "server_error"
      : "invalid_request_error";
    return new ApiError(err.status, type, err.message, { param: err.field, code: err.code });
  }
  return err;
}

/** The 202 answer to a job submission: its id, state and where to watch it. */
export function accepted(c: Context, job: JobJson): Response {
  const statusUrl = `/v1/quantize/${job.id}`;
  c.header("location", statusUrl);
  return c.json({ id: job.id, object: job.object, status: job.status, status_url: statusUrl }, 202);
}

/** Handlers of /v1/quantize*, bound to one job manager. */
export function quantizeHandlers(
  jobs: JobManager,
): Record<"submit" | "list" | "get" | "events" | "cancel", Handler> {
  const call = async <T>(fn: () => T | Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw jobError(err);
    }
  };
  const find = async (id: string): Promise<JobJson> => {
    const job = await jobs.get(id);
    if (!job) {
      throw new ApiError(404, "not_found_error", `Cannot find job "${id}"`, {
        param: "id",
        code: "job_not_found",
      });
    }
    return job;
  };
  return {
    submit: async (c) => {
      const body = await readJsonBody(c);
      const request = await call(() => parseQuantizeRequest(body));
      return accepted(c, await call(() => jobs.submit(request)));
    },
    list: async (c) => c.json({ object: "list", data: await jobs.list() }),
    get: async (c) => c.json(await find(c.req.param("id") ?? "")),
    cancel: async (c) => c.json(await call(() => jobs.cancel(c.req.param("id") ?? ""))),
    events: async (c) => {
      const id = c.req.param("id") ?? "";
      await find(id);
      return streamSSE(c, async (stream) => {
        // Each snapshot is the job's whole state, so a client slower than the job gets the newest one and
        // skips those it missed: nothing queues up behind a stalled reader, and the last one sent is the end.
        let newest: JobJson | null = null;
        let wake: (() => void) | null = null;
        const unsubscribe = jobs.subscribe(id, (job) => {
          newest = job;
          wake?.();
        });
        stream.onAbort(() => wake?.());
        try {
          let last = await find(id);
          await stream.writeSSE({ event: "job", data: JSON.stringify(last) });
          while (!TERMINAL.has(last.status) && !stream.aborted) {
            if (newest === null) await new Promise<void>((resolve) => (wake = resolve));
            wake = null;
            if (newest === null || stream.aborted) continue;
            [last, newest] = [newest, null];
            await stream.writeSSE({ event: "job", data: JSON.stringify(last) });
          }
        } finally {
          unsubscribe();
        }
      });
    },
  };
}
