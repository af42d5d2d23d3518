import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

const KEY = "sk-cors";

function app(allowedOrigins?: readonly string[]) {
  const config = { auth: { apiKeys: [KEY], adminKeys: [] }, ...(allowedOrigins ? { allowedOrigins } : {}) };
  return createApp({ engine: new FakeEngine(), config });
}

/** A browser's preflight for a POST with a key and a JSON body. */
const preflight = (origin: string) =>
  new Request("http://server/v1/chat/completions", {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, x-stainless-os",
    },
  });

const chat = (origin: string, key: string | null) =>
  new Request("http://server/v1/chat/completions", {
    method: "POST",
    headers: {
      origin,
      "content-type": "application/json",
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }] }),
  });

Deno.test("CORS for any origin: a keyless preflight passes, the real request still needs its key", async () => {
  const a = app(["*"]);
  const pre = await a.request(preflight("https://app.example.com"));
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "*");
  assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
  // Request headers are reflected: browser clients send their own (the openai package's x-stainless-*).
  assert.equal(pre.headers.get("access-control-allow-headers"), "authorization,content-type,x-stainless-os");
  assert.equal(pre.headers.get("access-control-max-age"), "600");

  const ok = await a.request(chat("https://app.example.com", KEY));
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("access-control-allow-origin"), "*");
  assert.match(ok.headers.get("access-control-expose-headers") ?? "", /x-request-id/);
  const denied = await a.request(chat("https://app.example.com", null));
  assert.equal(denied.status, 401);
  // The error carries the header too, so the page can read why.
  assert.equal(denied.headers.get("access-control-allow-origin"), "*");
});

Deno.test("CORS for listed origins: the origin echoed with Vary, another origin gets no grant", async () => {
  const a = app(["https://app.example.com", "http://localhost:3000"]);
  const pre = await a.request(preflight("http://localhost:3000"));
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "http://localhost:3000");
  assert.match(pre.headers.get("vary") ?? "", /origin/i);
  const other = await a.request(chat("https://evil.example.com", KEY));
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  const otherPre = await a.request(preflight("https://evil.example.com"));
  assert.equal(otherPre.headers.get("access-control-allow-origin"), null);
});

Deno.test("no allowed origins: no CORS headers, and a preflight is just an unauthenticated request", async () => {
  for (const a of [app([]), app()]) {
    const res = await a.request(chat("https://app.example.com", KEY));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    const pre = await a.request(preflight("https://app.example.com"));
    assert.equal(pre.headers.get("access-control-allow-origin"), null);
    assert.equal(pre.status, 401);
  }
});
