/**
 * POST /v1/chat/completions. Streams as `chat.completion.chunk` events: a role chunk per choice, content
 * deltas (with `logprobs.content` when asked), a finish chunk per choice with an empty delta, an optional
 * usage chunk, then `data: [DONE]`. With `tools`, the model's function calls (tool_calls.ts) come back as
 * `tool_calls` with finish reason "tool_calls"; streamed, the text from a call's start on is held back and
 * the calls go out whole in one delta before the finish chunk. A model whose template knows `<think>` blocks
 * has its reasoning apart, in `reasoning_content` (reasoning.ts; off with --reasoning-parser none).
 * `tool_choice` "required" or a named function, and `response_format`, constrain the answer to a grammar
 * (inference/structured) that starts after such a reasoning block.
 */
import type { Handler } from "hono";
import {
  afterReasoning,
  type GenerateRequest,
  type TokenLogprob,
  type ToolCallFormat,
  toolCallsGrammar,
} from "../../inference/engine/mod.ts";
import { invalidRequest } from "../errors.ts";
import {
  asTokenIds,
  type ChatCompletion,
  type ChatCompletionChunk,
  chatLogprobs,
  parseChatRequest,
  type ParsedRequest,
  promptLogprobs,
} from "../protocol.ts";
import { reasoningMarks, type ReasoningStart, ReasoningStream, splitReasoning } from "../reasoning.ts";
import { CALL_MARKS, CALL_TOKENS, parseToolCalls, ToolCallStream } from "../tool_calls.ts";
import {
  collectChoices,
  readJsonBody,
  type RouteDeps,
  startGeneration,
  streamGeneration,
} from "./completions.ts";
import { usageCounter } from "../usage.ts";
import { StreamIds } from "../token_ids.ts";

/**
 * Builds the /v1/chat/completions handler.
 * @param deps The engine, names and defaults.
 * @returns A Hono handler.
 */
export function chatHandler(deps: RouteDeps): Handler {
  return async (c) => {
    const parsed = parseChatRequest(await readJsonBody(c), deps.defaults);
    const { request, format, thinking } = chatTurn(deps, parsed);
    const events = await startGeneration(c, deps, request);
    const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const model = deps.modelName();
    const n = parsed.request.n ?? 1;
    const tools = parsed.tools;
    const wantLogprobs = parsed.request.logprobs !== undefined && parsed.request.logprobs !== null;
    const named = parsed.tokensAsIds ? asTokenIds : (entries: TokenLogprob[]) => entries;
    const wantIds = parsed.request.returnTokenIds === true;
    /** The reasoning an answer shows: none with include_reasoning false (it is still split off the content). */
    const shown = (reasoning: string) => parsed.includeReasoning === false ? "" : reasoning;

    if (!parsed.stream) {
      const done = await collectChoices(events, n);
      const body: ChatCompletion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: done.choices.map((ch, index) => {
          const split = thinking ? splitReasoning(ch.text, thinking) : { reasoning: null, content: ch.text };
          const { content, calls } = tools
            ? parseToolCalls(split.content, tools.parallel, format!)
            : { content: split.content, calls: [] };
          return {
            index,
            message: {
              role: "assistant",
              content: calls.length > 0 ? content || null : content,
              ...(split.reasoning !== null && parsed.includeReasoning !== false
                ? { reasoning_content: split.reasoning }
                : {}),
              ...(calls.length > 0 ? { tool_calls: calls } : {}),
            },
            finish_reason: calls.length > 0 ? "tool_calls" : ch.finishReason,
            logprobs: wantLogprobs ? chatLogprobs(named(ch.logprobs)) : null,
            ...(ch.stopReason !== undefined ? { stop_reason: ch.stopReason } : {}),
            ...(wantIds ? { token_ids: ch.ids } : {}),
          };
        }),
        usage: done.usage,
        ...(wantIds ? { prompt_token_ids: done.choices[0]?.promptIds ?? [] } : {}),
        ...(parsed.request.promptLogprobs !== undefined
          ? { prompt_logprobs: promptLogprobs(done.choices[0]?.promptLogprobs ?? []) }
          : {}),
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
      ...(parsed.includeUsage ? { usage: parsed.continuousUsage ? usage.total() : null } : {}),
    });
    const usage = usageCounter(n);
    const ids = new StreamIds(n);
    /** One choice's chunk, with the ids it has not sent (return_token_ids). */
    const chunk = (choice: ChatCompletionChunk["choices"][number]): ChatCompletionChunk => {
      if (!wantIds) return frame([choice]);
      const { prompt_token_ids, token_ids } = ids.take(choice.index);
      return {
        ...frame([{ ...choice, ...(token_ids ? { token_ids } : {}) }]),
        ...(prompt_token_ids ? { prompt_token_ids } : {}),
      };
    };
    const held = tools ? Array.from({ length: n }, () => new ToolCallStream(tools.parallel, format!)) : null;
    const thoughts = thinking ? Array.from({ length: n }, () => new ReasoningStream(thinking)) : null;
    /** A delta of reasoning and content, each only when there is some (content also when neither is). */
    const delta = (reasoning: string, content: string) => ({
      ...(reasoning ? { reasoning_content: reasoning } : {}),
      ...(content || !reasoning ? { content } : {}),
    });
    return streamGeneration(c, events, deps, (ev): ChatCompletionChunk[] => {
      usage.add(ev);
      if (wantIds) ids.add(ev);
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
      if (ev.type === "prompt") return []; // prompt_logprobs: never streamed; ids go with the next chunk
      const index = ev.index ?? 0;
      if (ev.type === "delta") {
        const split = thoughts ? thoughts[index].push(ev.text) : { reasoning: "", content: ev.text };
        const text = held ? held[index].push(split.content) : split.content;
        const reasoning = shown(split.reasoning);
        if (text === "" && reasoning === "" && !ev.logprobs) return [];
        const logprobs = ev.logprobs && wantLogprobs ? chatLogprobs(named(ev.logprobs)) : null;
        return [chunk({ index, delta: delta(reasoning, text), finish_reason: null, logprobs })];
      }
      const out: ChatCompletionChunk[] = [];
      const tail = thoughts ? thoughts[index].finish() : { reasoning: "", content: "" };
      const flushed = held ? held[index].push(tail.content) : tail.content;
      const { content: rest, calls } = held ? held[index].finish() : { content: "", calls: [] };
      const content = flushed + rest;
      const reasoning = shown(tail.reasoning);
      if (reasoning || content) {
        out.push(chunk({ index, delta: delta(reasoning, content), finish_reason: null, logprobs: null }));
      }
      if (calls.length > 0) {
        const delta = { tool_calls: calls.map((call, i) => ({ index: i, ...call })) };
        out.push(chunk({ index, delta, finish_reason: null, logprobs: null }));
      }
      const reason = calls.length > 0 ? "tool_calls" : ev.finishReason;
      const stopReason = ev.stopReason !== undefined ? { stop_reason: ev.stopReason } : {};
      out.push(chunk({ index, delta: {}, finish_reason: reason, logprobs: null, ...stopReason }));
      return parsed.includeUsage && usage.done() ? [...out, { ...frame([]), usage: usage.total() }] : out;
    });
  };
}

/**
 * What the served model's template makes of a validated chat request (shared with /v1/responses): the
 * engine request with its grammar, the form of its function calls (null without tools), and the reasoning
 * block its answers may open (null when none, or when --reasoning-parser none keeps it in the content).
 * Refuses, before queueing, a model without a chat template and tools it cannot read back.
 */
export function chatTurn(
  deps: RouteDeps,
  parsed: ParsedRequest,
): { request: GenerateRequest; format: ToolCallFormat | null; thinking: ReasoningStart | null } {
  // One view of the served model's template for the checks, the grammar and reading the answer back.
  const status = deps.engine.status();
  // Fail before queueing: the engine would reject it too, but only once the request reaches the GPU.
  if (!status.hasChatTemplate) {
    throw invalidRequest(
      "Cannot chat with this model: it has no chat template; use /v1/completions, or start the server " +
        "with --chat-template",
      "messages",
      "no_chat_template",
    );
  }
  if (parsed.tools && !status.toolCallFormat) {
    throw invalidRequest(
      "Cannot use tools with this model: its chat template renders no tool calls the server can read",
      "tools",
    );
  }
  // The template's form of calls (checked above to be one the server reads whenever tools are given).
  const format = status.toolCallFormat ?? null;
  return {
    request: constrained(parsed, format, status.thinking ?? null),
    format,
    // Answers of a template that knows <think> blocks: reasoning apart from content (reasoning.ts).
    thinking: deps.splitReasoning === false ? null : status.thinking ?? null,
  };
}

/**
 * The request with the grammar its answer follows: forced function calls (tool_choice "required" or named)
 * or the response_format, after the reasoning block a thinking template lets the model write first. With
 * tools, the text keeps the special tokens the format's calls are read by (Mistral's `[TOOL_CALLS]`).
 */
function constrained(
  parsed: ParsedRequest,
  format: ToolCallFormat | null,
  thinking: ReasoningStart | null,
): GenerateRequest {
  const marks = parsed.tools && format ? CALL_TOKENS[format] : undefined;
  const request = marks ? { ...parsed.request, keepSpecialTokens: marks } : parsed.request;
  const forced = format ? parsed.tools?.forced : null;
  let grammar = forced
    ? toolCallsGrammar(CALL_MARKS[format!], forced, parsed.tools!.parallel)
    : parsed.request.grammar;
  if (!grammar) return request;
  if (thinking) grammar = afterReasoning(grammar, reasoningMarks(thinking));
  return { ...request, grammar };
}
