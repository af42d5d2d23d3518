// Server-Sent Events over fetch: EventSource cannot send an Authorization header or be aborted with the
// request's own AbortController, so both pages read SSE from a fetch body with this parser.
// Format: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

/**
 * @typedef {{event: string, data: string, id: string}} SseEvent
 */

/**
 * Splits a stream of text chunks into SSE events. Lines may end in LF, CR or CRLF and may be split across
 * chunks; comment lines (":") are skipped; an event without data lines is not dispatched; an unterminated
 * last event is dropped, as the spec says.
 * @param {AsyncIterable<string>} chunks
 * @returns {AsyncGenerator<SseEvent>}
 */
export async function* parseSse(chunks) {
  let buffer = "";
  let event = "";
  let id = "";
  /** @type {string[]} */
  let data = [];
  for await (const chunk of chunks) {
    buffer += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buffer);
      // A lone CR at the end of the buffer may be the first half of a CRLF.
      if (!m || (m[0] === "\r" && m.index === buffer.length - 1)) break;
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === "") {
        if (data.length) yield { event: event || "message", data: data.join("\n"), id };
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
      else if (field === "id") id = value;
    }
  }
}

/**
 * Reads the SSE events of a fetch response body. Leaving the loop early cancels the body, which closes
 * the connection so the server sees the client go.
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<SseEvent>}
 */
export async function* readSse(body) {
  const decoder =
    /** @type {TransformStream<Uint8Array, string>} */ (/** @type {unknown} */ (new TextDecoderStream()));
  const reader = body.pipeThrough(decoder).getReader();
  let finished = false;
  const chunks = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          finished = true;
          return;
        }
        yield value;
      }
    },
  };
  try {
    yield* parseSse(chunks);
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
  }
}
