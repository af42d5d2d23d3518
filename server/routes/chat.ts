/**
 * POST /v1/chat/completions. Streams as `chat.completion.chunk` events: a role chunk per choice, content
 * deltas (with `logprobs.content` when asked), a finish chunk per choice with an empty delta, an optional
 * usage chunk, then `data: [DONE]`.
 */
import type { Handler } from "hono";
import { invalidRequest } from "../errors.ts";
import {
  type ChatCompletion,
  type ChatCompletionChunk,
  chatLogprobs,
  parseChatRequest,
} from "../protocol.ts";
import {
  collectChoices,
  readJsonBody,
  type RouteDeps,
  startGeneration,
  streamGeneration,
  usageCounter,
} from "./completions.ts";

/**
 * Builds the /v1/chat/completions handler.
 * @param deps The engine, names and defaults.
 * @returns A Hono handler.
 */
export function chatHandler(deps: RouteDeps): Handler {
  return async (c) => {
    const parsed = parseChatRequest(await readJsonBody(c), deps.defaults);
    // Fail before queueing: the engine would reject it too, but only once the request reaches the GPU.
    if (!deps.engine.status().hasChatTemplate) {
      throw invalidRequest(
        "Cannot chat with this model: it has no chat template; use /v1/completions instead",
        "messages",
        "no_chat_template",
      );
    }
    const events = await startGeneration(c, deps, parsed.request);
    const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const model = deps.modelName();
    const n = parsed.request.n ?? 1;
    const wantLogprobs = parsed.request.logprobs !== undefined && parsed.request.logprobs !== null;

    if (!parsed.stream) {
      const done = await collectChoices(events, n);
      const body: ChatCompletion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: done.choices.map((ch, index) => ({
          index,
          message: { role: "assistant", content: ch.text },
          finish_reason: ch.finishReason,
          logprobs: wantLogprobs ? chatLogprobs(ch.logprobs) : null,
        })),
        usage: done.usage,
      };
      return c.json(body);
    }

    const frame = (choices: ChatCompletionChunk["choices"]): ChatCompletionChunk => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices,
      // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
      ...(parsed.includeUsage ? { usage: null } : {}),
    });
    const usage = usageCounter(n);
    return streamGeneration(c, events, deps, (ev): ChatCompletionChunk[] => {
      usage.add(ev);
      if (ev.type === "start") {
        return Array.from(
          { length: n },
          (_, index) =>
            frame([{
              index,
              delta: { role: "assistant", content: "" },
              finish_reason: null,
              logprobs: null,
            }]),
        );
      }
      const index = ev.index ?? 0;
      if (ev.type === "delta") {
        if (ev.text === "" && !ev.logprobs) return [];
        const logprobs = ev.logprobs && wantLogprobs ? chatLogprobs(ev.logprobs) : null;
        return [frame([{ index, delta: { content: ev.text }, finish_reason: null, logprobs }])];
      }
      const last = frame([{ index, delta: {}, finish_reason: ev.finishReason, logprobs: null }]);
      return parsed.includeUsage && usage.done() ? [last, { ...frame([]), usage: usage.total() }] : [last];
    });
  };
}
