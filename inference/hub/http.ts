/**
 * HTTP to the hub: the bearer token goes to the endpoint's own origin only (never to a CDN a download is
 * redirected to), redirects are followed by hand so that rule holds, and every failure becomes one HubError
 * line. Status codes and `X-Error-Code` values follow huggingface_hub's `hf_raise_for_status`.
 */
import { HubError } from "./errors.ts";

/** Where to talk to and with what credentials. */
export interface HubClient {
  /** e.g. "https://huggingface.co", without a trailing slash. */
  readonly endpoint: string;
  /** HF_TOKEN, or null. */
  readonly token: string | null;
}

/** What a request was about, for error messages. */
export interface RequestContext {
  readonly repoId: string;
  readonly revision?: string;
  readonly file?: string;
}

const MAX_REDIRECTS = 10;

/**
 * Sends one request, following redirects while `follow(response, nextUrl)` says so.
 * @returns the first response that is not a followed redirect (any status; the caller checks it)
 */
export async function hubRequest(
  client: HubClient,
  url: string,
  { method = "GET", headers = {}, follow = () => true }: {
    method?: "GET" | "HEAD";
    headers?: Record<string, string>;
    follow?: (res: Response, next: URL) => boolean;
  } = {},
): Promise<Response> {
  for (let hops = 0;; hops++) {
    const sent = new Headers(headers);
    // Sizes and checksums are of the raw bytes; a compressed transfer would change Content-Length.
    sent.set("accept-encoding", "identity");
    if (client.token && sameOrigin(url, client.endpoint)) sent.set("authorization", `Bearer ${client.token}`);
    let res: Response;
    try {
      res = await fetch(url, { method, headers: sent, redirect: "manual" });
    } catch (err) {
      throw networkError(client, url, err);
    }
    const location = res.headers.get("location");
    if (res.status < 300 || res.status >= 400 || location === null) return res;
    const next = new URL(location, url);
    if (!follow(res, next)) return res;
    await res.body?.cancel();
    if (hops >= MAX_REDIRECTS) {
      throw new HubError("http", `Cannot download "${url}": more than ${MAX_REDIRECTS} redirects`);
    }
    url = next.href;
  }
}

/** True when both URLs have the same scheme, host and port. */
export function sameOrigin(a: string | URL, b: string | URL): boolean {
  return new URL(a).origin === new URL(b).origin;
}

/** A fetch that threw (DNS, refused, reset, TLS): names the origin it could not reach. */
export function networkError(client: HubClient, url: string, err: unknown): HubError {
  const origin = new URL(url).origin;
  const via = sameOrigin(origin, client.endpoint) ? "" : ` (redirected from ${client.endpoint})`;
  // Deno's fetch says only "fetch failed"; the cause names DNS, refusal, TLS.
  const e = err as Error & { cause?: unknown };
  const detail = e.cause instanceof Error
    ? e.cause.message.replace(/^error sending request for url \([^)]*\): /, "")
    : e.message;
  return new HubError("network", `Cannot reach ${origin}${via}: ${detail}`);
}

/**
 * Turns an unexpected response into a HubError; consumes the body.
 * @param client the endpoint and whether a token was sent
 * @param res the response
 * @param ctx the repo, revision and file asked for
 */
export async function statusError(client: HubClient, res: Response, ctx: RequestContext): Promise<HubError> {
  await res.body?.cancel();
  const code = res.headers.get("x-error-code");
  const { endpoint, token } = client;
  const repo = `"${ctx.repoId}" on ${endpoint}`;
  if (code === "GatedRepo") {
    return new HubError(
      "gated",
      token
        ? `Cannot download gated repo ${repo}: the token in HF_TOKEN has no access; request it at ${endpoint}/${ctx.repoId}`
        : `Cannot download gated repo ${repo}: accept its terms at ${endpoint}/${ctx.repoId}, then set HF_TOKEN`,
    );
  }
  if (code === "RevisionNotFound") {
    return new HubError("not_found", `Cannot find revision "${ctx.revision}" of ${repo}`);
  }
  if (code === "EntryNotFound" && ctx.file) {
    return new HubError("missing_file", `Cannot find file "${ctx.file}" in ${repo}`);
  }
  if (code === "RepoNotFound" || res.status === 401 || res.status === 404) {
    return new HubError(
      "not_found",
      token
        ? `Cannot find repo ${repo}: not found, or HF_TOKEN has no access to it`
        : `Cannot find repo ${repo}: not found or gated: set HF_TOKEN`,
    );
  }
  const what = ctx.file ? `"${ctx.file}" of "${ctx.repoId}"` : `"${ctx.repoId}"`;
  const detail = res.headers.get("x-error-message") ?? res.statusText;
  return new HubError(
    "http",
    `Cannot download ${what} from ${endpoint}: HTTP ${res.status} ${detail}`.trim(),
  );
}
