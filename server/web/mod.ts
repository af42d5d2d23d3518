/**
 * The web pages for people: GET / (chat) and GET /admin (quantization console), plus their assets under
 * /web/. Every file is imported as text at startup (no file reads at request time, and `deno compile` embeds
 * them). Each response carries an ETag (revalidated with `Cache-Control: no-cache`, since the asset names are
 * not versioned) and a Content-Security-Policy that allows only this origin and no inline script or style.
 */
import { createHash } from "node:crypto";
import { Hono } from "hono";
import indexHtml from "./index.html" with { type: "text" };
import adminHtml from "./admin.html" with { type: "text" };
import styleCss from "./style.css" with { type: "text" };
import faviconSvg from "./favicon.svg" with { type: "text" };
import adminJs from "./admin.js" with { type: "text" };
import apiJs from "./api.js" with { type: "text" };
import chartJs from "./chart.js" with { type: "text" };
import chatJs from "./chat.js" with { type: "text" };
import chatStreamJs from "./chat_stream.js" with { type: "text" };
import compareJs from "./compare.js" with { type: "text" };
import domJs from "./dom.js" with { type: "text" };
import jobViewJs from "./job_view.js" with { type: "text" };
import markdownJs from "./markdown.js" with { type: "text" };
import sseJs from "./sse.js" with { type: "text" };
import statusJs from "./status.js" with { type: "text" };

/** The policy sent with every page and asset: this origin only, no inline code, no framing. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const JS = "text/javascript; charset=utf-8";

/** Asset files by the name they are served under (/web/<name>). */
const ASSET_FILES: Record<string, { body: string; type: string }> = {
  "style.css": { body: styleCss, type: "text/css; charset=utf-8" },
  "favicon.svg": { body: faviconSvg, type: "image/svg+xml" },
  "admin.js": { body: adminJs, type: JS },
  "api.js": { body: apiJs, type: JS },
  "chart.js": { body: chartJs, type: JS },
  "chat.js": { body: chatJs, type: JS },
  "chat_stream.js": { body: chatStreamJs, type: JS },
  "compare.js": { body: compareJs, type: JS },
  "dom.js": { body: domJs, type: JS },
  "job_view.js": { body: jobViewJs, type: JS },
  "markdown.js": { body: markdownJs, type: JS },
  "sse.js": { body: sseJs, type: JS },
  "status.js": { body: statusJs, type: JS },
};

/** One servable file with its precomputed validator. */
interface Asset {
  body: string;
  type: string;
  etag: string;
}

function asset(body: string, type: string): Asset {
  const hash = createHash("sha256").update(body).digest("base64url").slice(0, 22);
  return { body, type, etag: `"${hash}"` };
}

/** True when an If-None-Match header names this ETag (weak or strong, or `*`). */
function matches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((tag) => {
    const t = tag.trim();
    return t === "*" || t === etag || t === `W/${etag}`;
  });
}

function respond(a: Asset, ifNoneMatch: string | undefined): Response {
  const headers = new Headers({
    "cache-control": "no-cache",
    etag: a.etag,
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  });
  if (matches(ifNoneMatch, a.etag)) return new Response(null, { status: 304, headers });
  headers.set("content-type", a.type);
  return new Response(a.body, { status: 200, headers });
}

/**
 * Builds the routes of the web pages: `/`, `/admin` and `/web/<asset>`.
 * @returns A Hono app to mount with `app.route("/", webRoutes())`.
 * @example
 * ```ts
 * import { webRoutes } from "./mod.ts";
 * const res = await webRoutes().request("/");
 * console.assert(res.headers.get("content-type")?.startsWith("text/html"));
 * ```
 */
export function webRoutes(): Hono {
  const html = "text/html; charset=utf-8";
  const pages = { index: asset(indexHtml, html), admin: asset(adminHtml, html) };
  const assets = new Map(Object.entries(ASSET_FILES).map(([name, f]) => [name, asset(f.body, f.type)]));

  const app = new Hono();
  app.get("/", (c) => respond(pages.index, c.req.header("if-none-match")));
  app.get("/admin", (c) => respond(pages.admin, c.req.header("if-none-match")));
  app.get("/web/:name", (c) => {
    const a = assets.get(c.req.param("name"));
    if (!a) return c.notFound(); // the mounting app's OpenAI-shaped 404
    return respond(a, c.req.header("if-none-match"));
  });
  return app;
}
