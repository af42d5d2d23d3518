/**
 * The real server (main.ts) over HTTPS (--ssl-certfile, --ssl-keyfile) with CORS for one origin: a client that
 * trusts the certificate's CA gets answers, one that does not is refused by TLS, and a plain-HTTP request
 * reaches nothing. tests/fixtures/tls holds throwaway test material (EC P-256, valid until 2126; its keys
 * protect nothing): ca.pem, a CA whose key was deleted after signing, and cert.pem/key.pem, the server's
 * certificate for 127.0.0.1 and localhost that it signed (rustls, Deno's TLS, refuses a self-signed CA
 * certificate as a server's own, hence the two).
 */
import assert from "node:assert/strict";
import { IN_CI, sharedPath, testGpu } from "./_gpu.ts";
import { runServerToExit, startServer } from "./_server.ts";

const FIXTURES = new URL("./fixtures/tls/", import.meta.url).pathname;
const CA = `${FIXTURES}ca.pem`;
const CERT = `${FIXTURES}cert.pem`;
const KEY = `${FIXTURES}key.pem`;

Deno.test("main.ts serves HTTPS with --ssl-certfile/--ssl-keyfile, and says which file it cannot read", async () => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu && IN_CI) throw new Error("CI needs a WebGPU adapter");
  if (!model || !gpu) return;
  gpu.device.destroy();
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(CA)] });
  const trusting =
    ((input: string | URL | Request, init?: RequestInit) =>
      fetch(input, { ...init, client } as RequestInit)) as typeof fetch;
  const origin = "https://app.example.com";
  const server = await startServer(
    ["--model", model, "--ssl-certfile", CERT, "--ssl-keyfile", KEY, "--allowed-origins", origin],
    {},
    { fetch: trusting },
  );
  try {
    assert.match(server.base, /^https:/);
    assert.match(server.logs(), /listening on https:\/\/127\.0\.0\.1:/);
    const res = await trusting(`${server.base}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", origin },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 4, temperature: 0 }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), origin);
    assert.equal((await res.json()).usage.completion_tokens, 4);
    // A client without the certificate in its trust store is refused by TLS itself.
    await assert.rejects(fetch(`${server.base}/health`));
    // Plain HTTP on the HTTPS port gets no answer.
    await assert.rejects(fetch(server.base.replace("https:", "http:") + "/health").then((r) => r.text()));
  } finally {
    await server.stop();
    client.close();
  }
  const missing = await runServerToExit([
    "--model",
    model,
    "--ssl-certfile",
    "/nonexistent.pem",
    "--ssl-keyfile",
    KEY,
  ]);
  assert.equal(missing.code, 1);
  assert.match(missing.output, /Cannot read --ssl-certfile "\/nonexistent\.pem"/);
});
