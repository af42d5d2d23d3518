/**
 * API keys. Routes fall in four classes by path (see accessOf):
 * - public: /health, /version, the web pages and static files; never asks for a key;
 * - api: /v1/* (except the admin routes), /tokenize, /detokenize; needs an API or admin key when API keys
 *   are configured, else open;
 * - admin: /v1/quantize*, /v1/artifacts*; needs an admin key, and answers 403 when none is configured
 *   (the admin API writes to disk and takes the GPU: off unless asked for);
 * - metrics: /metrics; public unless `metricsRequireKey`, then like api (any configured key).
 * A key is sent as `Authorization: Bearer <key>` (what OpenAI clients send) or `x-api-key: <key>`.
 * Errors follow OpenAI: 401 `invalid_request_error` / `invalid_api_key` with `WWW-Authenticate: Bearer`.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { ApiError, toErrorBody } from "../errors.ts";

/** Which keys a path needs. */
export type Access = "public" | "api" | "admin" | "metrics";

/** Options of auth(). */
export interface AuthOptions {
  /** Keys for the api class; none means the api class is open. */
  apiKeys?: readonly string[];
  /** Keys for everything; none means the admin class answers 403. */
  adminKeys?: readonly string[];
  /** /metrics needs a key (any of apiKeys or adminKeys). */
  metricsRequireKey?: boolean;
}

/**
 * Classifies a request path. Matching is by prefix on the lower-cased path with repeated slashes
 * collapsed, so that no spelling the router might accept (`//v1/quantize`, `/V1/…`) slips past as public.
 * @param path The decoded request path (Hono's `c.req.path`, which the router matches too).
 * @returns The access class.
 */
export function accessOf(path: string): Access {
  const p = path.toLowerCase().replace(/\/{2,}/g, "/");
  if (p.startsWith("/v1/quantize") || p.startsWith("/v1/artifacts")) return "admin";
  if (p === "/v1" || p.startsWith("/v1/") || p.startsWith("/tokenize") || p.startsWith("/detokenize")) {
    return "api";
  }
  if (p === "/metrics" || p.startsWith("/metrics/")) return "metrics";
  return "public";
}

/**
 * Builds the key-checking middleware. Keys are compared as SHA-256 digests with timingSafeEqual, against
 * every configured key (no early exit), so response time says nothing about how close a guess was.
 * @param options The keys.
 * @returns Middleware to mount before the routes (`app.use("*", auth(...))`).
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { auth } from "./auth.ts";
 * const app = new Hono().use("*", auth({ apiKeys: ["k"] })).get("/v1/models", (c) => c.text("ok"));
 * const res = await app.request("/v1/models");
 * console.assert(res.status === 401);
 * ```
 */
export function auth(
  { apiKeys = [], adminKeys = [], metricsRequireKey = false }: AuthOptions = {},
): MiddlewareHandler {
  const api = apiKeys.map(digest);
  const admin = adminKeys.map(digest);
  const denial = (c: Context): Response | null => {
    const access = accessOf(c.req.path);
    if (access === "public" || (access === "metrics" && !metricsRequireKey)) return null;
    if (access === "api" && api.length === 0) return null;
    if (access === "admin" && admin.length === 0) {
      return deny(
        c,
        403,
        "Cannot use the admin API: it is disabled; start the server with --admin-key",
        "admin_api_disabled",
      );
    }
    const key = presentedKey(c);
    if (key === null) {
      return deny(c, 401, "Cannot authenticate: no API key given; send it as Authorization: Bearer <key>");
    }
    const d = digest(key);
    const isAdmin = matchesAny(d, admin);
    const isApi = matchesAny(d, api);
    if (isAdmin || (isApi && access !== "admin")) return null;
    if (isApi) {
      return deny(
        c,
        403,
        "Cannot use the admin API with this key: it needs an admin key",
        "admin_key_required",
      );
    }
    return deny(c, 401, "Cannot authenticate: the API key is not valid");
  };
  return async (c, next) => {
    const denied = denial(c);
    if (denied) return denied;
    await next();
    return undefined;
  };
}

/** The bearer token, else the x-api-key header, else null. */
function presentedKey(c: Context): string | null {
  const authorization = c.req.header("authorization");
  const bearer = authorization?.match(/^Bearer +(\S+) *$/i)?.[1];
  if (bearer) return bearer;
  const header = c.req.header("x-api-key")?.trim();
  return header ? header : null;
}

function digest(key: string): Uint8Array {
  return createHash("sha256").update(key).digest();
}

function matchesAny(d: Uint8Array, keys: Uint8Array[]): boolean {
  let found = false;
  for (const k of keys) found = timingSafeEqual(d, k) || found; // evaluate every key, in the same order
  return found;
}

function deny(c: Context, status: 401 | 403, message: string, code = "invalid_api_key"): Response {
  const err = new ApiError(status, status === 401 ? "invalid_request_error" : "permission_error", message, {
    code,
  });
  if (status === 401) c.header("WWW-Authenticate", 'Bearer realm="leanserve"');
  return c.json(toErrorBody(err), status);
}
