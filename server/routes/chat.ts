/**
 * POST /v1/chat/completions. Streams as `chat.completion.chunk` events: a role chunk, content deltas,
 * a finish chunk with an empty delta, an optional usage chunk, then `data: [DONE]`.
 */
import type { Handler } from "hono";
import { invalidRequest } from "../errors.ts";
import {
  type ChatCompletion,
  type ChatCompletionChunk,
  type FinishReason,
  parseChatRequest,
} from "../protocol.ts";
import {
  collectText,
  readJsonBody,
  type RouteDeps,
  startGeneration,
  streamGeneration,
  toUsage,
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

    if (!parsed.stream) {
      const { text, end } = await collectText(events);
      const body: ChatCompletion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{
          index: 0,
          message: { role: "assistant", content: text },
          finish_reason: end.finishReason,
          logprobs: null,
        }],
        usage: toUsage(end),
      };
      return c.json(body);
    }

    const chunk = (delta: ChatCompletionChunk["choices"][0]["delta"], finish: FinishReason | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
      // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
      ...(parsed.includeUsage ? { usage: null } : {}),
    } satisfies ChatCompletionChunk);
    return streamGeneration(c, events, deps, (ev): ChatCompletionChunk[] => {
      if (ev.type === "start") return [chunk({ role: "assistant", content: "" }, null)];
      if (ev.type === "delta") return ev.text === "" ? [] : [chunk({ content: ev.text }, null)];
      const last = chunk({}, ev.finishReason);
      return parsed.includeUsage ? [last, { ...last, choices: [], usage: toUsage(ev) }] : [last];
    });
  };
}
