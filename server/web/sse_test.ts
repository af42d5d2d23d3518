import assert from "node:assert/strict";
import { parseSse, readSse } from "./sse.js";

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* chunks(...parts: string[]): AsyncGenerator<string> {
  for (const p of parts) yield p;
}

Deno.test("parseSse() reads events split anywhere across chunks, in LF, CRLF and CR", async () => {
  const text =
    'data: {"a":1}\n\nevent: job\ndata: {"b":2}\r\n\r\n: comment\rdata: x\rdata:y\r\rid: 7\ndata: [DONE]\n\n';
  const whole = await collect(parseSse(chunks(text)));
  assert.deepEqual(whole, [
    { event: "message", data: '{"a":1}', id: "" },
    { event: "job", data: '{"b":2}', id: "" },
    { event: "message", data: "x\ny", id: "" },
    { event: "message", data: "[DONE]", id: "7" },
  ]);
  // Every split point, including between the CR and LF of a CRLF, gives the same events.
  for (let i = 1; i < text.length; i++) {
    assert.deepEqual(
      await collect(parseSse(chunks(text.slice(0, i), text.slice(i)))),
      whole,
      `split at ${i}`,
    );
  }
  assert.deepEqual(await collect(parseSse(chunks(...text.split("")))), whole, "one character per chunk");
});

Deno.test("parseSse() drops an event without data and an unterminated last event", async () => {
  assert.deepEqual(await collect(parseSse(chunks("event: job\n\ndata: cut"))), []);
});

Deno.test("readSse() decodes UTF-8 split across byte chunks and cancels the body when left early", async () => {
  const bytes = new TextEncoder().encode("data: héllo 🌊\n\ndata: second\n\ndata: third\n\n");
  let cancelled = false;
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      // One byte at a time, so multi-byte characters straddle chunks.
      if (i < bytes.length) controller.enqueue(bytes.slice(i, ++i));
      else controller.close();
    },
    cancel() {
      cancelled = true;
    },
  });
  const seen: string[] = [];
  for await (const ev of readSse(body)) {
    seen.push(ev.data);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, ["héllo 🌊", "second"]);
  assert.equal(cancelled, true, "leaving the loop cancels the body, which closes the connection");
});
