/**
 * Request body size limit: a 413 in OpenAI's error shape (`code: "request_too_large"`). Built on Hono's
 * bodyLimit, which trusts Content-Length when it is the only framing (Deno's HTTP server never delivers more
 * bytes than it announces) and otherwise counts bytes while reading, so a chunked body without
 * Content-Length is cut as soon as it passes the limit instead of being buffered whole.
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit as honoBodyLimit } from "hono/body-limit";
import { ApiError, toErrorBody } from "../errors.ts";

/**
 * Builds the body-limit middleware; mount it after auth so that unauthenticated bodies are never read.
 * @param options The largest accepted body in bytes.
 * @returns The middleware.
 */
export function bodyLimit({ maxBytes }: { maxBytes: number }): MiddlewareHandler {
  return honoBodyLimit({
    maxSize: maxBytes,
    onError: (c) => {
      const err = new ApiError(
        413,
        "invalid_request_error",
        `Cannot read the request body: it is larger than ${maxBytes} bytes (--max-body-bytes)`,
        { code: "request_too_large" },
      );
      return c.json(toErrorBody(err), 413);
    },
  });
}
