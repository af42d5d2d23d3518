import assert from "node:assert/strict";
import { Hono } from "hono";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";
import { accessOf, auth, type AuthOptions } from "./auth.ts";

/** A bare app with one route per access class, so that a 200 means the key check let the request through. */
function bare(options: AuthOptions) {
  const app = new Hono().use("*", auth(options));
  for (const path of ["/v1/models", "/v1/quantize", "/v1/quantize/jobs/1", "/v1/artifacts/x", "/tokenize"]) {
    app.all(path, (c) => c.text("through"));
  }
  app.get("/metrics", (c) => c.text("through"));
  app.get("/health", (c) => c.text("through"));
  return (path: string, headers: Record<string, string> = {}, method = "GET") =>
    app.request(path, { method, headers });
}

const KEYS: AuthOptions = { apiKeys: ["k1", "k2"], adminKeys: ["adm"] };
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

// deno-lint-ignore no-explicit-any
async function errorOf(res: Response, status: number): Promise<any> {
  assert.equal(res.status, status);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(body.error.param, null);
  return body.error;
}

Deno.test("accessOf() classifies paths by prefix, whatever their spelling", () => {
  const cases: [string, string][] = [
    ["/v1/chat/completions", "api"],
    ["/v1", "api"],
    ["/V1/Models", "api"],
    ["/tokenize", "api"],
    ["/detokenize", "api"],
    ["/v1/quantize", "admin"],
    ["/v1/quantize/jobs/3/cancel", "admin"],
    ["//v1//quantize", "admin"],
    ["/V1/QUANTIZE", "admin"],
    ["/v1/artifacts", "admin"],
    ["/metrics", "metrics"],
    ["/health", "public"],
    ["/version", "public"],
    ["/", "public"],
    ["/admin", "public"], // the admin web page is static; the API it calls is /v1/quantize
    ["/static/app.js", "public"],
    ["/v10/x", "public"],
  ];
  for (const [path, access] of cases) assert.equal(accessOf(path), access, path);
});

Deno.test("auth() with API keys: 401 in OpenAI's shape without a valid key, through with one", async () => {
  const request = bare(KEYS);
  const missing = await errorOf(await request("/v1/models"), 401);
  assert.equal(missing.type, "invalid_request_error");
  assert.equal(missing.code, "invalid_api_key");
  assert.match(missing.message, /no API key given.*Authorization: Bearer/);
  const res = await request("/v1/models", bearer("nope"));
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="leanserve"');
  const wrong = await errorOf(res, 401);
  assert.match(wrong.message, /not valid/);
  assert.doesNotMatch(wrong.message, /nope/, "the presented key is never echoed");
  for (
    const headers of [bearer("k"), bearer("k1x"), { authorization: "Basic k1" }, { authorization: "k1" }]
  ) {
    assert.equal((await request("/v1/models", headers)).status, 401, JSON.stringify(headers));
  }
  for (
    const headers of [
      bearer("k1"),
      bearer("k2"),
      { authorization: "bearer  k1" },
      { "x-api-key": "k2" },
      bearer("adm"),
    ]
  ) {
    assert.equal(await (await request("/v1/models", headers)).text(), "through", JSON.stringify(headers));
  }
  assert.equal((await request("/tokenize", {}, "POST")).status, 401);
  assert.equal((await request("/tokenize", bearer("k1"), "POST")).status, 200);
});

Deno.test("auth() admin routes need an admin key: a plain key gets 403 permission_error", async () => {
  const request = bare(KEYS);
  for (const path of ["/v1/quantize", "/v1/quantize/jobs/1", "/v1/artifacts/x"]) {
    const err = await errorOf(await request(path, bearer("k1"), "POST"), 403);
    assert.equal(err.type, "permission_error");
    assert.equal(err.code, "admin_key_required");
    assert.equal((await request(path, {}, "POST")).status, 401);
    assert.equal((await request(path, bearer("adm"), "POST")).status, 200, path);
  }
  // spellings the router decodes or might match never skip the check
  for (const path of ["/v1/%71uantize", "//v1/quantize", "/V1/quantize", "/v1//quantize", "/v1/quantize/"]) {
    assert.ok([401, 403].includes((await request(path, bearer("k1"), "POST")).status), path);
  }
});

Deno.test("auth() without admin keys disables the admin API, even for an open server", async () => {
  for (const options of [{}, { apiKeys: ["k1"] }]) {
    const request = bare(options);
    const err = await errorOf(await request("/v1/quantize", bearer("k1"), "POST"), 403);
    assert.equal(err.code, "admin_api_disabled");
    assert.match(err.message, /--admin-key/);
  }
  const open = bare({});
  assert.equal((await open("/v1/models")).status, 200, "no API keys: the API is open");
  const adminOnly = bare({ adminKeys: ["adm"] });
  assert.equal((await adminOnly("/v1/models")).status, 200, "admin keys alone leave the plain API open");
  assert.equal((await adminOnly("/v1/quantize", {}, "POST")).status, 401);
});

Deno.test("auth() leaves /health public, and /metrics public unless metricsRequireKey", async () => {
  const request = bare(KEYS);
  assert.equal((await request("/health")).status, 200);
  assert.equal((await request("/metrics")).status, 200);
  const strict = bare({ ...KEYS, metricsRequireKey: true });
  assert.equal((await strict("/metrics")).status, 401);
  assert.equal((await strict("/metrics", bearer("k2"))).status, 200);
  assert.equal((await strict("/metrics", bearer("adm"))).status, 200);
});

Deno.test("createApp() checks keys before reading the body, and keeps /health and /version public", async () => {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: { auth: KEYS, limits: { maxBodyBytes: 20 } } });
  // a body over the limit without a key is a 401 (never read), not a 413
  const big = { method: "POST", body: JSON.stringify({ prompt: "x".repeat(100) }) };
  assert.equal((await app.request("/v1/completions", big)).status, 401);
  assert.equal((await app.request("/v1/completions", { ...big, headers: bearer("k1") })).status, 413);
  assert.equal((await app.request("/health")).status, 200);
  assert.equal((await app.request("/version")).status, 200);
  const ok = await app.request("/v1/completions", {
    method: "POST",
    headers: bearer("k1"),
    body: JSON.stringify({ prompt: "hi" }),
  });
  assert.equal(ok.status, 200);
  assert.equal(engine.requests.length, 1);
});
