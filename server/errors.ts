/**
 * The one HTTP error type of the server and the OpenAI error body it turns into.
 * Body shape (https://platform.openai.com/docs/guides/error-codes):
 * `{"error": {"message": string, "type": string, "param": string | null, "code": string | null}}`.
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { EngineBusyError, EngineInputError } from "../inference/engine/mod.ts";

/**
 * OpenAI error `type` values this server uses. OpenAI itself answers a bad key with 401
 * `invalid_request_error` (code `invalid_api_key`); `permission_error` marks a key that is valid but not
 * allowed on the route (403).
 */
export type ApiErrorType =
  | "invalid_request_error"
  | "not_found_error"
  | "permission_error"
  | "rate_limit_error"
  | "server_error";

/** The JSON body of every error response (and of the error event of a failed stream). */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error whose message is safe to show the client, with the HTTP status it maps to. */
export class ApiError extends Error {
  /** The request field at fault, e.g. "temperature" or "messages[1].role". */
  readonly param: string | null;
  /** A machine-readable code, e.g. "model_loading". */
  readonly code: string | null;
  /** Seconds for a `Retry-After` header (429), or null. */
  readonly retryAfter: number | null;

  /**
   * @param status HTTP status of the response.
   * @param type OpenAI error type.
   * @param message Sentence-case message without a trailing period.
   * @param options The offending `param` and a machine-readable `code`.
   */
  constructor(
    readonly status: ContentfulStatusCode,
    readonly type: ApiErrorType,
    message: string,
    { param = null, code = null, retryAfter = null }: {
      param?: string | null;
      code?: string | null;
      retryAfter?: number | null;
    } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.param = param;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * Builds the OpenAI error body for an ApiError.
 * @param err The error to describe.
 * @returns `{"error": {...}}` ready for `c.json()`.
 * @example
 * ```ts
 * import { ApiError, toErrorBody } from "./errors.ts";
 * const body = toErrorBody(new ApiError(400, "invalid_request_error", "Bad", { param: "n" }));
 * console.assert(body.error.param === "n");
 * ```
 */
export function toErrorBody(err: ApiError): ErrorBody {
  return { error: { message: err.message, type: err.type, param: err.param, code: err.code } };
}

/** Shorthand for the 400 that every request validator throws. */
export function invalidRequest(
  message: string,
  param: string | null = null,
  code: string | null = null,
): ApiError {
  return new ApiError(400, "invalid_request_error", message, { param, code });
}

/**
 * Maps the errors whose message is safe to show: ApiError itself, EngineInputError (400), EngineBusyError
 * (429 with Retry-After) and Hono's HTTPException (its own status).
 * @param err Anything thrown.
 * @returns The ApiError to send, or null for an unexpected error that must be logged and hidden.
 */
export function asApiError(err: unknown): ApiError | null {
  if (err instanceof ApiError) return err;
  if (err instanceof EngineInputError) return invalidRequest(err.message, err.param, err.code);
  if (err instanceof EngineBusyError) {
    return new ApiError(429, "rate_limit_error", err.message, {
      code: "queue_full",
      retryAfter: err.retryAfterSeconds,
    });
  }
  if (err instanceof HTTPException) {
    const type = err.status < 500 ? "invalid_request_error" : "server_error";
    return new ApiError(err.status, type, err.message || `HTTP ${err.status}`);
  }
  return null;
}

/** The generic 500 sent for unexpected failures (the detail goes to the log only). */
export function internalError(): ApiError {
  return new ApiError(500, "server_error", "Internal server error: see the server log");
}
