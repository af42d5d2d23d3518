import assert from "node:assert/strict";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { createApp } from "../app.ts";

const LIMIT = 64;

function setup() {
  const engine = new FakeEngine();
  const app = createApp({ engine, config: { limits: { maxBodyBytes: LIMIT } } });
  return { app, engine };
}

/** A JSON completion request of exactly `bytes` bytes. */
function bodyOf(bytes: number): string {
  const frame = JSON.stringify({ prompt: "" }).length;
  return JSON.stringify({ prompt: "x".repeat(bytes - frame) });
}

// deno-lint-ignore no-explicit-any
async function errorOf(res: Response, status: number): Promise<any> {
  assert.equal(res.status, status);
  return (await res.json()).error;
}

Deno.test("a body over --max-body-bytes gets 413 request_too_large in OpenAI's shape; at the limit it passes", async () => {
  const { app, engine } = setup();
  assert.equal(bodyOf(LIMIT).length, LIMIT);
  const ok = await app.request("/v1/completions", { method: "POST", body: bodyOf(LIMIT) });
  assert.equal(ok.status, 200);
  const err = await errorOf(
    await app.request("/v1/completions", { method: "POST", body: bodyOf(LIMIT + 1) }),
    413,
  );
  assert.deepEqual(err, {
    message: `Cannot read the request body: it is larger than ${LIMIT} bytes (--max-body-bytes)`,
    type: "invalid_request_error",
    param: null,
    code: "request_too_large",
  });
  assert.equal(engine.requests.length, 1);
});

Deno.test("a chunked body without Content-Length is counted while read and cut past the limit", async () => {
  const { app, engine } = setup();
  // app.request() with a stream body sends no Content-Length, as a chunked upload does
  const stream = (text: string, pieces: number) => {
    const bytes = new TextEncoder().encode(text);
    const step = Math.ceil(bytes.length / pieces);
    let sent = 0;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= bytes.length) return controller.close();
        controller.enqueue(bytes.slice(sent, sent + step));
        sent += step;
      },
    });
  };
  const post = (body: ReadableStream<Uint8Array>) =>
    app.request("/v1/completions", { method: "POST", body, duplex: "half" } as RequestInit);
  assert.equal((await post(stream(bodyOf(LIMIT), 4))).status, 200);
  assert.equal((await errorOf(await post(stream(bodyOf(LIMIT * 100), 100)), 413)).code, "request_too_large");
  assert.equal(engine.requests.length, 1);
});

Deno.test("over a real socket, an endless chunked upload is answered 413 while it is still being sent", async () => {
  const { app } = setup();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const abort = new AbortController();
  try {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller): Promise<void> | void {
        // Once past the limit the upload goes quiet but never ends (no last chunk): only the limit can answer
        // it. It sends nothing the server need not read: unread bytes would turn the server's close into a TCP
        // reset, which may reach the client before the 413 does (a flaky test, not a server fault).
        if (sent > LIMIT) return new Promise<void>(() => {});
        const piece = new TextEncoder().encode('{"prompt": "' + "x".repeat(32));
        controller.enqueue(piece);
        sent += piece.length;
        return;
      },
    });
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/v1/completions`, {
      method: "POST",
      body,
      duplex: "half",
      signal: abort.signal,
    } as RequestInit);
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, "request_too_large");
    // The upload never ends, so the 413 proves the server answered without waiting for the whole body.
  } finally {
    abort.abort();
    await server.shutdown();
  }
});
