/**
 * OpenAI's Responses API (`POST /v1/responses`) as a face over chat: a request's `input` items,
 * `instructions`, flat function `tools`, `text.format` and `max_output_tokens` become a chat completion body
 * that parseChatRequest validates like any other (its errors renamed back to the Responses fields), and the
 * answer becomes output items: a `reasoning` item (a template's `<think>` block), a `message` with one
 * `output_text` part, and `function_call` items. Stored responses (`store`, on by default as in OpenAI's
 * API) are kept in this process, the most recent MAX_STORED of them, for `previous_response_id` and
 * `GET /v1/responses/{id}`.
 */
import { ApiError } from "./errors.ts";
import type { Usage } from "./protocol.ts";
import { badValue, type Body, given, isObject, requireObject, unsupported } from "./validate.ts";

/** Responses kept for previous_response_id and GET (each bounded by the body limit and the context). */
export const MAX_STORED = 256;

/** One item of a response's output (or of a request's input, which takes the same shapes back). */
export type OutputItem =
  | { type: "reasoning"; id: string; summary: []; content: { type: "reasoning_text"; text: string }[] }
  | {
    type: "message";
    id: string;
    status: "completed" | "incomplete";
    role: "assistant";
    content: { type: "output_text"; text: string; annotations: []; logprobs?: unknown[] }[];
  }
  | {
    type: "function_call";
    id: string;
    call_id: string;
    name: string;
    arguments: string;
    status: "completed";
  };

/** The `response` object (the fields this server fills; OpenAI's others are null or defaults). */
export interface ResponseObject {
  id: string;
  object: "response";
  created_at: number;
  status: "in_progress" | "completed" | "incomplete";
  incomplete_details: { reason: "max_output_tokens" } | null;
  error: null;
  instructions: string | null;
  max_output_tokens: number | null;
  model: string;
  output: OutputItem[];
  parallel_tool_calls: boolean;
  previous_response_id: string | null;
  reasoning: { effort: null; summary: null };
  store: boolean;
  temperature: number | null;
  text: { format: unknown };
  tool_choice: unknown;
  tools: unknown[];
  top_p: number | null;
  truncation: "disabled";
  usage: ResponseUsage | null;
  user: string | null;
  metadata: Record<string, string>;
}

/** Token counts in the Responses shape. */
export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

/** A stored response and the conversation that led to it (what previous_response_id continues). */
interface Stored {
  response: ResponseObject;
  /** the chat messages before the answer, instructions left out (OpenAI does not carry them over) */
  messages: Body[];
  /** the request's own input items, each with an id (GET /v1/responses/{id}/input_items) */
  input: Body[];
}

/** A Responses request as chat: the body parseChatRequest reads, and what the response object echoes. */
export interface TranslatedRequest {
  chat: Body;
  /** maps a parameter of the chat body back to the Responses field it came from */
  param(chatParam: string): string;
  /** the messages to store with the response (the conversation so far, without instructions) */
  history: Body[];
  /** the request's input as items with ids, as input_items lists them */
  inputItems: Body[];
  echo: Omit<
    ResponseObject,
    "id" | "created_at" | "status" | "incomplete_details" | "output" | "usage" | "model"
  >;
  /** `include` asked for the output text's logprobs */
  logprobs: boolean;
}

/** Where responses are kept: a bounded map, oldest out first. */
export class ResponseStore {
  #items = new Map<string, Stored>();

  constructor(readonly limit = MAX_STORED) {}

  put(response: ResponseObject, messages: Body[], input: Body[]): void {
    this.#items.set(response.id, { response, messages, input });
    for (const id of this.#items.keys()) {
      if (this.#items.size <= this.limit) break;
      this.#items.delete(id);
    }
  }

  get(id: string): Stored | null {
    return this.#items.get(id) ?? null;
  }

  delete(id: string): boolean {
    return this.#items.delete(id);
  }
}

/** The 404 for a response this process does not hold. */
export function responseNotFound(id: string, param: string | null = null): ApiError {
  return new ApiError(
    404,
    "not_found_error",
    `Cannot find response "${id}" (responses are kept in memory, the last ${MAX_STORED})`,
    {
      param,
      code: "response_not_found",
    },
  );
}

/** Fields of a Responses request that this server cannot serve: a 400 naming each, never a silent no-op. */
const REFUSED: Record<string, string> = {
  background: "background responses are not supported",
  conversation: "conversations are not supported; use previous_response_id or send the whole input",
  prompt: "prompt templates are not supported",
  max_tool_calls: "max_tool_calls is not supported",
};

/** Sampling and vLLM fields passed to the chat body as they are. */
const PASSED = [
  "model",
  "stream",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "seed",
  "presence_penalty",
  "frequency_penalty",
  "repetition_penalty",
  "logit_bias",
  "parallel_tool_calls",
  "chat_template_kwargs",
  "cache_salt",
  "priority",
];

/**
 * Validates the Responses-only fields of a request and translates it into a chat completion body.
 * @param body the parsed JSON body
 * @param store where previous_response_id is looked up
 * @returns the chat body and how to answer
 */
export function translateRequest(body: unknown, store: ResponseStore): TranslatedRequest {
  const b = requireObject(body);
  for (const [key, why] of Object.entries(REFUSED)) {
    if (given(b[key]) && b[key] !== false) throw unsupported(key, why);
  }
  if (given(b.truncation) && b.truncation !== "disabled") {
    throw unsupported("truncation", 'only "disabled" is supported: a prompt over the context is a 400');
  }
  if (isObject(b.reasoning) && (given(b.reasoning.effort) || given(b.reasoning.summary))) {
    throw unsupported("reasoning", "reasoning effort and summaries are not supported");
  }
  const include = given(b.include) ? b.include : [];
  if (!Array.isArray(include) || include.some((x) => x !== "message.output_text.logprobs")) {
    throw badValue("include", b.include, '[] or ["message.output_text.logprobs"]');
  }
  const metadata = given(b.metadata) ? b.metadata : {};
  if (
    !isObject(metadata) || Object.keys(metadata).length > 16 ||
    Object.values(metadata).some((v) => typeof v !== "string" || v.length > 512)
  ) {
    throw badValue("metadata", b.metadata, "at most 16 string values of up to 512 characters");
  }
  const storeIt = given(b.store) ? b.store : true;
  if (typeof storeIt !== "boolean") throw badValue("store", b.store, "a boolean");
  if (given(b.instructions) && typeof b.instructions !== "string") {
    throw badValue("instructions", b.instructions, "a string");
  }
  if (given(b.user) && typeof b.user !== "string") throw badValue("user", b.user, "a string");

  // The conversation: an earlier stored response's, then this request's input.
  const origins: string[] = [];
  const messages: Body[] = [];
  let previous: string | null = null;
  if (given(b.previous_response_id)) {
    if (typeof b.previous_response_id !== "string") {
      throw badValue("previous_response_id", b.previous_response_id, "a response id");
    }
    const stored = store.get(b.previous_response_id);
    if (!stored) throw responseNotFound(b.previous_response_id, "previous_response_id");
    previous = b.previous_response_id;
    const before = [...stored.messages, ...outputMessages(stored.response.output)];
    messages.push(...before);
    origins.push(...before.map(() => "previous_response_id"));
  }
  const items = typeof b.input === "string" ? [{ role: "user", content: b.input }] : b.input;
  if (!Array.isArray(items) || items.length === 0) {
    throw badValue("input", b.input, "a string or a non-empty array of input items");
  }
  items.forEach((item, i) => {
    const m = inputMessage(item, `input[${i}]`);
    if (!m) return;
    // Consecutive function calls are one assistant turn with several calls.
    const last = messages.at(-1);
    if (m.tool_calls && last?.role === "assistant" && Array.isArray(last.tool_calls) && !last.content) {
      last.tool_calls = [...last.tool_calls, ...(m.tool_calls as unknown[])];
      return;
    }
    messages.push(m);
    origins.push(`input[${i}]`);
  });
  const history = [...messages];
  const inputItems = items.map(itemWithId);
  if (typeof b.instructions === "string") {
    messages.unshift({ role: "system", content: b.instructions });
    origins.unshift("instructions");
  }

  const chat: Body = { messages };
  for (const key of PASSED) if (given(b[key])) chat[key] = b[key];
  if (given(b.max_output_tokens)) chat.max_completion_tokens = b.max_output_tokens;
  // The output text's logprobs: asked through include, or implied by a top_logprobs above 0 (which would
  // otherwise do nothing).
  const top = b.top_logprobs;
  const logprobs = include.length > 0 || (typeof top === "number" && top > 0);
  if (logprobs) chat.logprobs = true;
  if (logprobs && given(top)) chat.top_logprobs = top;
  if (given(b.tools)) chat.tools = chatTools(b.tools);
  if (given(b.tool_choice)) chat.tool_choice = chatToolChoice(b.tool_choice);
  const format = isObject(b.text) ? b.text.format : undefined;
  if (given(b.text) && !isObject(b.text)) throw badValue("text", b.text, "an object with a format");
  if (given(format)) chat.response_format = chatFormat(format);

  return {
    chat,
    history,
    inputItems,
    logprobs,
    param: (p) =>
      p.replace(/^messages\[(\d+)\]/, (_, i) => origins[Number(i)] ?? "input")
        .replace(/^messages\b/, "input")
        .replace(/^max_completion_tokens\b/, "max_output_tokens")
        .replace(/^response_format\b/, "text.format")
        .replace(/^tools\[(\d+)\]\.function\b/, "tools[$1]"),
    echo: {
      object: "response",
      error: null,
      instructions: (b.instructions as string | undefined) ?? null,
      max_output_tokens: (b.max_output_tokens as number | undefined) ?? null,
      parallel_tool_calls: b.parallel_tool_calls !== false,
      previous_response_id: previous,
      reasoning: { effort: null, summary: null },
      store: storeIt,
      temperature: (b.temperature as number | undefined) ?? null,
      text: { format: format ?? { type: "text" } },
      tool_choice: b.tool_choice ?? "auto",
      tools: Array.isArray(b.tools) ? b.tools : [],
      top_p: (b.top_p as number | undefined) ?? null,
      truncation: "disabled",
      user: (b.user as string | undefined) ?? null,
      metadata: metadata as Record<string, string>,
    },
  };
}

/** One input item as a chat message (null: an item that carries nothing to the model, e.g. reasoning). */
function inputMessage(item: unknown, path: string): Body | null {
  if (!isObject(item)) throw badValue(path, item, "an input item object");
  const type = item.type ?? "message";
  if (type === "message") {
    const role = item.role;
    if (!["user", "system", "developer", "assistant"].includes(role as string)) {
      throw badValue(`${path}.role`, role, "one of user, system, developer, assistant");
    }
    return { role, content: itemText(item.content, `${path}.content`) };
  }
  if (type === "function_call") {
    if (typeof item.name !== "string") throw badValue(`${path}.name`, item.name, "the function's name");
    if (typeof item.call_id !== "string") throw badValue(`${path}.call_id`, item.call_id, "a string");
    if (typeof item.arguments !== "string") {
      throw badValue(`${path}.arguments`, item.arguments, "a string of JSON");
    }
    return {
      role: "assistant",
      content: "",
      tool_calls: [{
        id: item.call_id,
        type: "function",
        function: { name: item.name, arguments: item.arguments },
      }],
    };
  }
  if (type === "function_call_output") {
    if (typeof item.call_id !== "string") throw badValue(`${path}.call_id`, item.call_id, "a string");
    const output = typeof item.output === "string" ? item.output : itemText(item.output, `${path}.output`);
    return { role: "tool", tool_call_id: item.call_id, content: output };
  }
  if (type === "reasoning") return null; // the model's earlier thinking is not shown to it again
  throw badValue(`${path}.type`, type, '"message", "function_call", "function_call_output" or "reasoning"');
}

/** An input item as input_items lists it: typed, with an id (the client's, else a new one). */
function itemWithId(item: Body): Body {
  const type = (item.type as string | undefined) ?? "message";
  if (typeof item.id === "string") return { ...item, type };
  if (type !== "message") {
    return {
      ...item,
      type,
      id: newId(type === "function_call" ? "fc" : type === "reasoning" ? "rs" : "fco"),
    };
  }
  const text = item.role === "assistant" ? "output_text" : "input_text";
  const content = typeof item.content === "string" ? [{ type: text, text: item.content }] : item.content;
  return { type, id: newId("msg"), role: item.role, status: "completed", content };
}

/** The text of a content field: a string, or text parts (input_text, output_text). */
function itemText(content: unknown, path: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw badValue(path, content, "a string or an array of text parts");
  return content.map((part, i) => {
    if (!isObject(part) || !["input_text", "output_text"].includes(part.type as string)) {
      throw unsupported(`${path}[${i}]`, "only text parts (input_text, output_text) are supported");
    }
    if (typeof part.text !== "string") throw badValue(`${path}[${i}].text`, part.text, "a string");
    return part.text;
  }).join("");
}

/** A response's output as the chat messages a following turn sees. */
function outputMessages(output: OutputItem[]): Body[] {
  const text = output.flatMap((o) => o.type === "message" ? o.content.map((c) => c.text) : []).join("");
  const calls = output.flatMap((o) =>
    o.type === "function_call"
      ? [{ id: o.call_id, type: "function", function: { name: o.name, arguments: o.arguments } }]
      : []
  );
  return [{ role: "assistant", content: text, ...(calls.length > 0 ? { tool_calls: calls } : {}) }];
}

/** Flat function tools ({type, name, description, parameters, strict}) in chat's nested shape. */
function chatTools(tools: unknown): unknown {
  if (!Array.isArray(tools)) throw badValue("tools", tools, "an array of function tools");
  return tools.map((t, i) => {
    if (!isObject(t) || t.type !== "function") {
      throw unsupported(
        `tools[${i}].type`,
        `only function tools are supported, not ${JSON.stringify(isObject(t) ? t.type : t)}`,
      );
    }
    const { type: _, ...fn } = t;
    return { type: "function", function: fn };
  });
}

/** `tool_choice`: the same words as chat, a named function as {type, name}. */
function chatToolChoice(choice: unknown): unknown {
  if (isObject(choice)) {
    if (choice.type !== "function" || typeof choice.name !== "string") {
      throw badValue("tool_choice", choice, '"none", "auto", "required" or {"type": "function", "name": …}');
    }
    return { type: "function", function: { name: choice.name } };
  }
  return choice;
}

/** `text.format` as chat's response_format. */
function chatFormat(format: unknown): unknown {
  if (!isObject(format)) throw badValue("text.format", format, "an object with a type");
  if (format.type === "text") return undefined;
  if (format.type === "json_object") return { type: "json_object" };
  if (format.type === "json_schema") {
    const { type: _, ...schema } = format;
    return { type: "json_schema", json_schema: schema };
  }
  throw badValue("text.format.type", format.type, '"text", "json_object" or "json_schema"');
}

/** Chat usage in the Responses shape. */
export function responseUsage(u: Usage): ResponseUsage {
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0 },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}

/** An error of the chat validator, renamed to the Responses field it came from. */
export function renameParam(err: unknown, param: (p: string) => string): unknown {
  if (!(err instanceof ApiError) || err.param === null) return err;
  const renamed = param(err.param);
  if (renamed === err.param) return err;
  return new ApiError(err.status, err.type, err.message.replaceAll(`"${err.param}"`, `"${renamed}"`), {
    param: renamed,
    code: err.code,
    retryAfter: err.retryAfter,
  });
}

/** A new id with OpenAI's prefix for its kind. */
export function newId(prefix: "resp" | "msg" | "rs" | "fc" | "fco"): string {
  return `${prefix}_${crypto.randomUUID().replaceAll("-", "")}`;
}
