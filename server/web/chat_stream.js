// One streamed answer over this server's /v1/chat/completions or /v1/completions, with the numbers a person wants to
// see: time to first token and decode speed.
import { apiFetch, HttpError } from "./api.js";
import { readSse } from "./sse.js";

/**
 * @typedef {{role: string, content: string}} Message
 * @typedef {{
 *   text: string, reasoning: string, model: string|null, finishReason: string|null, stopped: boolean,
 *   promptTokens: number|null, completionTokens: number, ttftMs: number|null, tokensPerSecond: number|null,
 *   totalMs: number
 * }} ChatResult
 */

/**
 * Streams one chat answer. Aborting `signal` closes the connection (the server then stops generating) and
 * resolves with what arrived so far and `stopped: true`.
 * @param {Message[]} messages
 * @param {StreamOptions} [opts]
 * @returns {Promise<ChatResult>}
 */
export function streamChat(messages, opts = {}) {
  return streamGeneration("/v1/chat/completions", { messages }, opts);
}

/**
 * Streams one text completion of a raw prompt (for base models without a chat template), like streamChat.
 * @param {string} prompt
 * @param {StreamOptions} [opts]
 * @returns {Promise<ChatResult>}
 */
export function streamCompletion(prompt, opts = {}) {
  return streamGeneration("/v1/completions", { prompt }, opts);
}

/**
 * @typedef {{
 *   params?: Record<string, unknown>, signal?: AbortSignal, onText?: (text: string, reasoning: string) => void
 * }} StreamOptions
 *   `params`: sampling fields sent as they are (temperature, top_p, max_tokens, ...); `onText` gets the answer
 *   and the reasoning so far (a thinking model's `reasoning_content`, else "").
 */

/**
 * @param {string} path
 * @param {Record<string, unknown>} input `messages` or `prompt`.
 * @param {StreamOptions} opts
 * @returns {Promise<ChatResult>}
 */
async function streamGeneration(path, input, { params = {}, signal, onText = () => {} }) {
  const t0 = performance.now();
  const state = {
    text: "",
    reasoning: "",
    model: /** @type {string|null} */ (null),
    finishReason: /** @type {string|null} */ (null),
    usage: /** @type {{prompt_tokens: number, completion_tokens: number}|null} */ (null),
    deltas: 0,
    tFirst: /** @type {number|null} */ (null),
  };
  let stopped = false;
  try {
    const body = { ...params, ...input, stream: true, stream_options: { include_usage: true } };
    const res = await apiFetch(path, { method: "POST", body, signal });
    if (!res.body) throw new HttpError(res.status, "Cannot read the answer: the response has no body");
    for await (const ev of readSse(res.body)) {
      // Read on to the end of the body after [DONE]: cancelling it would show as a failed request.
      if (ev.data === "[DONE]") continue;
      applyChunk(state, JSON.parse(ev.data));
      onText(state.text, state.reasoning);
    }
  } catch (err) {
    if (!signal?.aborted) throw err;
    stopped = true;
  }
  return summarize(state, t0, stopped);
}

/**
 * Folds one `chat.completion.chunk` or `text_completion` chunk (or a mid-stream `{"error": ...}`) into the
 * running state.
 * @param {any} state
 * @param {any} chunk
 */
function applyChunk(state, chunk) {
  if (chunk.error) {
    throw new HttpError(200, chunk.error.message ?? "Generation failed", chunk.error.code, chunk.error.param);
  }
  state.model ??= chunk.model ?? null;
  const choice = chunk.choices?.[0];
  const piece = choice?.delta?.content ?? choice?.text;
  const thought = choice?.delta?.reasoning_content;
  if (typeof thought === "string" && thought !== "") {
    state.tFirst ??= performance.now();
    state.reasoning += thought;
    state.deltas++;
  }
  if (typeof piece === "string" && piece !== "") {
    state.tFirst ??= performance.now();
    state.text += piece;
    state.deltas++;
  }
  if (choice?.finish_reason) state.finishReason = choice.finish_reason;
  if (chunk.usage) state.usage = chunk.usage;
}

/**
 * @param {any} state
 * @param {number} t0
 * @param {boolean} stopped
 * @returns {ChatResult}
 */
function summarize(state, t0, stopped) {
  // Usage counts tokens exactly; a stopped answer has none, so count deltas (one per token or fewer).
  const completionTokens = state.usage?.completion_tokens ?? state.deltas;
  const totalMs = performance.now() - t0;
  // Tokens over the whole answer time, prefill included. A first-to-last-token rate would be inflated: the
  // engine reads tokens back a chunk at a time, so they can arrive in bursts.
  const tokensPerSecond = completionTokens > 0 && totalMs > 0 ? completionTokens / (totalMs / 1000) : null;
  return {
    text: state.text,
    reasoning: state.reasoning,
    model: state.model,
    finishReason: state.finishReason,
    stopped,
    promptTokens: state.usage?.prompt_tokens ?? null,
    completionTokens,
    ttftMs: state.tFirst === null ? null : state.tFirst - t0,
    tokensPerSecond,
    totalMs,
  };
}

/**
 * One line describing an answer: "22 tokens in 4.1 s · 5.4 tok/s · first token 412 ms · stop".
 * @param {ChatResult} r
 * @returns {string}
 */
export function describeResult(r) {
  const parts = [
    `${r.completionTokens} token${r.completionTokens === 1 ? "" : "s"} in ${(r.totalMs / 1000).toFixed(1)} s`,
  ];
  parts.push(r.tokensPerSecond === null ? "— tok/s" : `${r.tokensPerSecond.toFixed(1)} tok/s`);
  parts.push(r.ttftMs === null ? "first token —" : `first token ${Math.round(r.ttftMs)} ms`);
  parts.push(r.stopped ? "stopped" : r.finishReason ?? "unfinished");
  return parts.join(" · ");
}
