/**
 * POST /v1/chat/completions. Streams as `chat.completion.chunk` events: a role chunk per choice, content
 * deltas (with `logprobs.content` when asked), a finish chunk per choice with an empty delta, an optional
 * usage chunk, then `data: [DONE]`. With `tools`, the model's function calls (tool_calls.ts) come back as
 * `tool_calls` with finish reason "tool_calls"; streamed, the text from a call's start on is held back and
 * the calls go out whole in one delta before the finish chunk.
 */
import type { Handler } from "hono";
import { invalidRequest } from "../errors.ts";
import {
  type ChatCompletion,
  type ChatCompletionChunk,
  chatLogprobs,
  parseChatRequest,
} from "../protocol.ts";
import { parseToolCalls, ToolCallStream } from "../tool_calls.ts";
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
    if (parsed.tools && !deps.engine.status().toolCallFormat) {
      throw invalidRequest(
        "Cannot use tools with this model: its chat template renders no tool calls the server can read",
        "tools",
      );
    }
    const events = await startGeneration(c, deps, parsed.request);
    const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const model = deps.modelName();
    const n = parsed.request.n ?? 1;
    const tools = parsed.tools;
    const wantLogprobs = parsed.request.logprobs !== undefined && parsed.request.logprobs !== null;

    if (!parsed.stream) {
      const done = await collectChoices(events, n);
      const body: ChatCompletion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: done.choices.map((ch, index) => {
          const { content, calls } = tools
            ? parseToolCalls(ch.text, tools.parallel)
            : { content: ch.text, calls: [] };
          return {
            index,
            message: calls.length > 0
              ? { role: "assistant", content: content || null, tool_calls: calls }
              : { role: "assistant", content },
            finish_reason: calls.length > 0 ? "tool_calls" : ch.finishReason,
            logprobs: wantLogprobs ? chatLogprobs(ch.logprobs) : null,
          };
        }),
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
    const held = tools ? Array.from({ length: n }, () => new ToolCallStream(tools.parallel)) : null;
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
        const text = held ? held[index].push(ev.text) : ev.text;
        if (text === "" && !ev.logprobs) return [];
        const logprobs = ev.logprobs && wantLogprobs ? chatLogprobs(ev.logprobs) : null;
        return [frame([{ index, delta: { content: text }, finish_reason: null, logprobs }])];
      }
      const out: ChatCompletionChunk[] = [];
      const { content, calls } = held ? held[index].finish() : { content: "", calls: [] };
      if (content) out.push(frame([{ index, delta: { content }, finish_reason: null, logprobs: null }]));
      if (calls.length > 0) {
        const delta = { tool_calls: calls.map((call, i) => ({ index: i, ...call })) };
        out.push(frame([{ index, delta, finish_reason: null, logprobs: null }]));
      }
      const reason = calls.length > 0 ? "tool_calls" : ev.finishReason;
      out.push(frame([{ index, delta: {}, finish_reason: reason, logprobs: null }]));
      return parsed.includeUsage && usage.done() ? [...out, { ...frame([]), usage: usage.total() }] : out;
    });
  };
}
