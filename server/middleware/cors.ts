/**
 * CORS: which web origins' pages may call the API from a browser (--allowed-origins). Built on Hono's cors,
 * which answers a preflight (OPTIONS with Access-Control-Request-Method) itself, with a 204, before the key
 * check: browsers send preflights without credentials, and the real request that follows carries the key.
 * Request headers are reflected rather than listed, since browser clients send their own (the openai
 * package's x-stainless-* headers); the request id and Retry-After are exposed to scripts.
 */
import type { MiddlewareHandler } from "hono";
import { cors as honoCors } from "hono/cors";

/**
 * Builds the CORS middleware.
 * @param origins "*" alone for any origin, else the origins allowed (scheme://host[:port], compared as text)
 * @returns the middleware, or null for no origins (no CORS headers at all)
 */
export function cors(origins: readonly string[]): MiddlewareHandler | null {
  if (origins.length === 0) return null;
  return honoCors({
    origin: origins.includes("*") ? "*" : [...origins],
    allowMethods: ["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
    exposeHeaders: ["x-request-id", "retry-after"],
    maxAge: 600,
  });
}
