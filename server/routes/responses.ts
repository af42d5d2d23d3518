/**
 * POST /v1/responses (OpenAI's Responses API, server/responses.ts translates it to a chat turn), GET and
 * DELETE /v1/responses/{id} for stored responses. Streamed, the events are OpenAI's: `response.created`,
 * `response.in_progress`, per output item `response.output_item.added`, its deltas
 * (`response.reasoning_text.delta`, `response.output_text.delta` within a content part,
 * `response.function_call_arguments.delta`) and `….done` events, then `response.completed` (or
 * `response.incomplete` at max_output_tokens) with the whole response; each with a `sequence_number`.
 * Function calls are held back while the text streams and go out whole at the end, as in the chat route.
 */
import type { Context, Handler } from "hono";
import type { TokenLogprob } from "../../inference/engine/mod.ts";
import { asApiError } from "../errors.ts";
import { badValue, type Body } from "../validate.ts";
import { chatLogprobs, parseChatRequest, type ToolCall } from "../protocol.ts";
import { ReasoningStream, splitReasoning } from "../reasoning.ts";
import {
  newId,
  type OutputItem,
  renameParam,
  responseNotFound,
  type ResponseObject,
  type ResponseStore,
  responseUsage,
  translateRequest,
} from "../responses.ts";
import { parseToolCalls, ToolCallStream } from "../tool_calls.ts";
import { chatTurn } from "./chat.ts";
import {
  collectChoices,
  readJsonBody,
  type RouteDeps,
  startGeneration,
  streamGeneration,
} from "./completions.ts";
import { usageCounter } from "../usage.ts";

type Message = Extract<OutputItem, { type: "message" }>;

/** Handlers of /v1/responses*, sharing one store. */
export function responsesHandlers(
  deps: RouteDeps,
  store: ResponseStore,
): Record<"create" | "get" | "delete" | "inputItems", Handler> {
  return {
    create: (c) => create(c, deps, store),
    inputItems: (c) => {
      const id = c.req.param("id") ?? "";
      const stored = store.get(id);
      if (!stored) throw responseNotFound(id);
      return c.json(pageOf(stored.input, new URL(c.req.url).searchParams));
    },
    get: (c) => {
      const id = c.req.param("id") ?? "";
      const stored = store.get(id);
      if (!stored) throw responseNotFound(id);
      return c.json(stored.response);
    },
    delete: (c) => {
      const id = c.req.param("id") ?? "";
      if (!store.delete(id)) throw responseNotFound(id);
      return c.json({ id, object: "response", deleted: true });
    },
  };
}

async function create(c: Context, deps: RouteDeps, store: ResponseStore): Promise<Response> {
  const t = translateRequest(await readJsonBody(c), store);
  let started;
  try {
    const parsed = parseChatRequest(t.chat, deps.defaults);
    const turn = chatTurn(deps, parsed);
    started = { parsed, turn, events: await startGeneration(c, deps, turn.request) };
  } catch (err) {
    throw renameParam(asApiError(err) ?? err, t.param);
  }
  const { parsed, turn, events } = started;
  const { format, thinking } = turn;
  const tools = parsed.tools;
  const skeleton = {
    ...t.echo,
    id: newId("resp"),
    created_at: Math.floor(Date.now() / 1000),
    model: deps.modelName(),
  };
  const finish = (output: OutputItem[], length: boolean, usage: ResponseObject["usage"]): ResponseObject => {
    const response: ResponseObject = {
      ...skeleton,
      status: length ? "incomplete" : "completed",
      incomplete_details: length ? { reason: "max_output_tokens" } : null,
      output,
      usage,
    };
    if (response.store) store.put(response, t.history, t.inputItems);
    return response;
  };
  const logprobs = (entries: readonly TokenLogprob[] | undefined) =>
    t.logprobs ? { logprobs: chatLogprobs(entries ?? []).content } : {};

  if (!parsed.stream) {
    const done = await collectChoices(events, 1);
    const ch = done.choices[0];
    const split = thinking ? splitReasoning(ch.text, thinking) : { reasoning: null, content: ch.text };
    const { content, calls } = tools
      ? parseToolCalls(split.content, tools.parallel, format!)
      : { content: split.content, calls: [] };
    const output: OutputItem[] = [];
    if (split.reasoning) output.push(reasoningItem(split.reasoning));
    const length = ch.finishReason === "length";
    if (content || calls.length === 0) {
      output.push({
        ...messageItem(length ? "incomplete" : "completed"),
        content: [{ type: "output_text", text: content, annotations: [], ...logprobs(ch.logprobs) }],
      });
    }
    output.push(...calls.map(callItem));
    return c.json(finish(output, length, responseUsage(done.usage)));
  }

  // Streaming: one item open at a time (reasoning, then the message), calls at the end.
  let seq = 0;
  const event = (type: string, fields: object) => ({ type, sequence_number: seq++, ...fields });
  const output: OutputItem[] = [];
  let open: { item: OutputItem; index: number; text: string } | null = null;
  const usage = usageCounter(1);
  const held = tools ? new ToolCallStream(tools.parallel, format!) : null;
  const thoughts = thinking ? new ReasoningStream(thinking) : null;
  const inProgress = () => ({
    ...skeleton,
    status: "in_progress",
    incomplete_details: null,
    output: [],
    usage: null,
  });

  /** Closes the open item: its done events, and it joins the output. */
  const close = (status: Message["status"] = "completed"): object[] => {
    if (!open) return [];
    const { item, index, text } = open;
    open = null;
    const ids = { item_id: item.id, output_index: index };
    if (item.type === "reasoning") {
      const done = { ...item, content: [{ type: "reasoning_text" as const, text }] };
      output.push(done);
      return [
        event("response.reasoning_text.done", { ...ids, content_index: 0, text }),
        event("response.output_item.done", { output_index: index, item: done }),
      ];
    }
    const part = { ...(item as Message).content[0], text };
    const done: Message = { ...(item as Message), status, content: [part] };
    output.push(done);
    return [
      event("response.output_text.done", { ...ids, content_index: 0, text, ...logprobsOf(part) }),
      event("response.content_part.done", { ...ids, content_index: 0, part }),
      event("response.output_item.done", { output_index: index, item: done }),
    ];
  };
  /** Opens an item of `kind` unless it is the open one. */
  const ensure = (kind: "reasoning" | "message"): object[] => {
    if (open?.item.type === kind) return [];
    const out = close();
    const index = output.length;
    if (kind === "reasoning") {
      const item = reasoningItem("");
      open = { item, index, text: "" };
      return [
        ...out,
        event("response.output_item.added", { output_index: index, item: { ...item, content: [] } }),
      ];
    }
    const item: Message = {
      ...messageItem("completed"),
      content: [{ type: "output_text", text: "", annotations: [], ...(t.logprobs ? { logprobs: [] } : {}) }],
    };
    open = { item, index, text: "" };
    const ids = { item_id: item.id, output_index: index };
    return [
      ...out,
      event("response.output_item.added", {
        output_index: index,
        item: { ...item, status: "in_progress", content: [] },
      }),
      event("response.content_part.added", { ...ids, content_index: 0, part: item.content[0] }),
    ];
  };
  /** Text of the answer: reasoning and content deltas, in order. */
  const text = (reasoning: string, content: string, entries?: readonly TokenLogprob[]): object[] => {
    const out: object[] = [];
    if (reasoning) {
      out.push(...ensure("reasoning"));
      open!.text += reasoning;
      out.push(event("response.reasoning_text.delta", { ...idsOf(), content_index: 0, delta: reasoning }));
    }
    if (content || (entries?.length && open?.item.type === "message")) {
      out.push(...ensure("message"));
      open!.text += content;
      const lp = logprobs(entries);
      const part = (open!.item as Message).content[0];
      if (part.logprobs && "logprobs" in lp) part.logprobs.push(...lp.logprobs);
      out.push(event("response.output_text.delta", { ...idsOf(), content_index: 0, delta: content, ...lp }));
    }
    return out;
  };
  const idsOf = () => ({ item_id: open!.item.id, output_index: open!.index });

  return streamGeneration(c, events, deps, (ev) => {
    usage.add(ev);
    if (ev.type === "start") {
      return [
        event("response.created", { response: inProgress() }),
        event("response.in_progress", { response: inProgress() }),
      ];
    }
    if (ev.type === "delta") {
      const split = thoughts ? thoughts.push(ev.text) : { reasoning: "", content: ev.text };
      return text(split.reasoning, held ? held.push(split.content) : split.content, ev.logprobs);
    }
    if (ev.type === "prompt") return []; // not a Responses field
    const tail = thoughts ? thoughts.finish() : { reasoning: "", content: "" };
    const out = text(tail.reasoning, held ? held.push(tail.content) : tail.content);
    const { content: rest, calls } = held ? held.finish() : { content: "", calls: [] };
    out.push(...text("", rest));
    const length = ev.finishReason === "length";
    if (calls.length === 0 && !output.some((o) => o.type === "message")) out.push(...ensure("message"));
    out.push(...close(length ? "incomplete" : "completed"));
    for (const call of calls.map(callItem)) {
      const index = output.length;
      output.push(call);
      const ids = { item_id: call.id, output_index: index };
      out.push(
        event("response.output_item.added", { output_index: index, item: { ...call, arguments: "" } }),
        event("response.function_call_arguments.delta", { ...ids, delta: call.arguments }),
        event("response.function_call_arguments.done", { ...ids, arguments: call.arguments }),
        event("response.output_item.done", { output_index: index, item: call }),
      );
    }
    const response = finish(output, length, responseUsage(usage.total()));
    out.push(event(length ? "response.incomplete" : "response.completed", { response }));
    return out;
  }, { named: true });
}

/**
 * One page of a stored response's input items, as OpenAI's list endpoints page: `order` asc or desc (the
 * default), `after` / `before` an item id, `limit` 1 to 100 (default 20).
 */
function pageOf(items: Body[], q: URLSearchParams): object {
  const order = q.get("order") ?? "desc";
  if (order !== "asc" && order !== "desc") throw badValue("order", order, '"asc" or "desc"');
  const limitText = q.get("limit") ?? "20";
  const limit = Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw badValue("limit", limitText, "1 to 100");
  let list = order === "asc" ? [...items] : [...items].reverse();
  for (const key of ["after", "before"] as const) {
    const at = q.get(key);
    if (at === null) continue;
    const i = list.findIndex((item) => item.id === at);
    if (i < 0) throw badValue(key, at, "the id of one of this response's input items");
    list = key === "after" ? list.slice(i + 1) : list.slice(0, i);
  }
  const data = list.slice(0, limit);
  return {
    object: "list",
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: list.length > limit,
  };
}

function logprobsOf(part: Message["content"][number]): object {
  return part.logprobs ? { logprobs: part.logprobs } : {};
}

function reasoningItem(text: string): Extract<OutputItem, { type: "reasoning" }> {
  return { type: "reasoning", id: newId("rs"), summary: [], content: [{ type: "reasoning_text", text }] };
}

function messageItem(status: Message["status"]): Omit<Message, "content"> {
  return { type: "message", id: newId("msg"), status, role: "assistant" };
}

function callItem(call: ToolCall): Extract<OutputItem, { type: "function_call" }> {
  return {
    type: "function_call",
    id: newId("fc"),
    call_id: call.id,
    name: call.function.name,
    arguments: call.function.arguments,
    status: "completed",
  };
}
