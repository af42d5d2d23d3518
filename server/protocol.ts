/**
 * OpenAI wire types and the pure request validators. OpenAI's snake_case names stay in this file; everything
 * past it sees our camelCase GenerateRequest. Each validator runs numbered checks and throws a 400 ApiError
 * naming the offending field. Unknown fields are ignored (clients send extras), and `null` means "not given".
 * Reference: https://platform.openai.com/docs/api-reference/chat/create
 */
import type {
  ChatMessage,
  ChatToolCall,
  GenerateRequest,
  SamplingParams,
  ToolSpec,
} from "../inference/engine/mod.ts";
import { MAX_BAD_WORD_CHARS, MAX_BAD_WORDS } from "../inference/engine/mod.ts";
import { parseChatTools, parseStructuredOutput } from "./constraints.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import type { ChatLogprobs, CompletionLogprobs, PromptLogprobs } from "./logprobs.ts";
import {
  badValue,
  type Body,
  given,
  intIn,
  isObject,
  numberIn,
  positiveInt,
  requireBool,
  requireObject,
  unsupported,
} from "./validate.ts";

export { type ChatTools, parseChatTools } from "./constraints.ts";
export { asTokenIds, chatLogprobs, completionLogprobs, promptLogprobs } from "./logprobs.ts";

/** Token counts reported in `usage`. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** OpenAI's `cached_tokens`: prompt tokens whose keys and values came from the prefix cache */
  prompt_tokens_details: { cached_tokens: number };
}

/** Why generation ended, in OpenAI terms ("tool_calls": the answer is function calls). */
export type FinishReason = "stop" | "length" | "tool_calls";

/** A function call the model made, as OpenAI returns it (`arguments` is JSON text). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** A non-streaming `/v1/chat/completions` response. */
export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: {
    index: number;
    message: {
      role: "assistant";
      content: string | null;
      reasoning_content?: string;
      tool_calls?: ToolCall[];
    };
    finish_reason: FinishReason;
    logprobs: ChatLogprobs | null;
    /** vLLM's stop_reason: the stop string or stop_token_ids id that ended the choice, when one did */
    stop_reason?: string | number;
    /** vLLM's return_token_ids: the choice's ids, its stop id included */
    token_ids?: number[];
  }[];
  usage: Usage;
  /** vLLM's prompt_logprobs, when asked */
  prompt_logprobs?: PromptLogprobs;
  /** vLLM's return_token_ids: the prompt's ids as the model read them */
  prompt_token_ids?: number[];
}

/** One `data:` event of a streaming chat response. */
export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: {
    index: number;
    delta: {
      role?: "assistant";
      content?: string;
      reasoning_content?: string;
      tool_calls?: (ToolCall & { index: number })[];
    };
    finish_reason: FinishReason | null;
    logprobs: ChatLogprobs | null;
    /** vLLM's stop_reason, on the finish chunk (see ChatCompletion) */
    stop_reason?: string | number;
    /** vLLM's return_token_ids: the ids since the choice's last chunk */
    token_ids?: number[];
  }[];
  usage?: Usage | null;
  /** vLLM's return_token_ids: the prompt's ids, on the first chunk that follows them */
  prompt_token_ids?: number[];
}

/** A `/v1/completions` response or, with `object` unchanged, one of its stream events. */
export interface TextCompletion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: {
    index: number;
    text: string;
    finish_reason: FinishReason | null;
    logprobs: CompletionLogprobs | null;
    /** vLLM's prompt_logprobs of the choice's prompt, when asked (not streamed) */
    prompt_logprobs?: PromptLogprobs;
    /** vLLM's stop_reason: the stop string or stop_token_ids id that ended the choice, when one did */
    stop_reason?: string | number;
    /** vLLM's return_token_ids: the choice's prompt's ids (streamed: on its first chunk) and its own */
    prompt_token_ids?: number[];
    token_ids?: number[];
  }[];
  usage?: Usage | null;
}

/** Where a request falls back to when it leaves a sampling field out (request → server → model). */
export interface RequestDefaults {
  /** Server-wide defaults, e.g. from the command line. */
  server?: Partial<SamplingParams>;
  /** The model's generation_config.json (see samplingFromGenerationConfig). */
  model?: Partial<SamplingParams>;
  /** Used when the request gives no max tokens; null means up to the context length. */
  maxTokens?: number | null;
  /** The model's context length: a request asking for more tokens than this is a 400. */
  contextLength?: number;
}

/** A validated request: what the engine needs plus how to answer. */
export interface ParsedRequest {
  request: GenerateRequest;
  stream: boolean;
  /** `stream_options.include_usage`: send a final usage chunk. */
  includeUsage: boolean;
  /**
   * vLLM's `stream_options.continuous_usage_stats` (with include_usage): every chunk carries the usage so
   * far instead of null. Absent: false.
   */
  continuousUsage?: boolean;
  /** The `model` field as sent, or null; any name is accepted since one model is served. */
  model: string | null;
  /** vLLM's `return_tokens_as_token_ids`: logprobs name tokens "token_id:<id>" (asTokenIds). Absent: false. */
  tokensAsIds?: boolean;
  /** vLLM's `include_reasoning: false`: chat answers leave their reasoning out. Absent: true. */
  includeReasoning?: false;
  /** Chat with `tools` (and `tool_choice` other than "none"); null otherwise. */
  tools: { parallel: boolean; forced: ToolSpec[] | null } | null;
  /**
   * Completions with a list of prompts: every prompt's input, `request.input` being the first's; each gets
   * `n` choices (choice `p·n + i` is prompt p's i-th, as OpenAI numbers them). Absent: one prompt.
   */
  inputs?: GenerateRequest["input"][];
}

/** Used when neither the request, the server nor the model sets a field (OpenAI's defaults). */
export const BUILTIN_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: null,
});

const ROLES = ["system", "user", "assistant", "developer", "tool"];
const MAX_STOP = 4;
const MAX_N = 128;
/** Prompts of one completions request (each with its n choices; --max-queued-requests bounds them too). */
const MAX_PROMPTS = 256;
const MAX_TOP_LOGPROBS = 20;
const MAX_LOGIT_BIAS = 300;
const MAX_STOP_TOKEN_IDS = 32;
/** Most ids in allowed_token_ids (a vocabulary's worth: the mask is built once per request). */
const MAX_ALLOWED_TOKEN_IDS = 262_144;
/** Template variables the server sets (chat_template.ts); chat_template_kwargs may not replace them. */
const RESERVED_TEMPLATE_VARS = ["messages", "tools", "add_generation_prompt", "bos_token", "eos_token"];
/** Characters of a cache_salt (vLLM takes any non-empty string; a 256-bit base64 secret is 43). */
const MAX_CACHE_SALT = 1024;

/**
 * Validates a `/v1/chat/completions` body.
 * @param body The parsed JSON body.
 * @param defaults Server and model defaults.
 * @returns The engine request and the response options.
 * @example
 * ```ts
 * import { parseChatRequest } from "./protocol.ts";
 * const parsed = parseChatRequest({ messages: [{ role: "user", content: "Hi" }], temperature: 0 });
 * console.assert(parsed.request.sampling.temperature === 0);
 * ```
 */
export function parseChatRequest(body: unknown, defaults: RequestDefaults = {}): ParsedRequest {
  // 1. The body is a JSON object.
  const b = requireObject(body);
  // 2. messages: a non-empty array of {role, content}.
  const messages = parseChatMessages(b.messages);
  // 3. Chat-only features we do not implement.
  rejectChatExtras(b);
  // 4. tools, tool_choice and parallel_tool_calls.
  const tools = parseChatTools(b);
  // 5. logprobs (a boolean) and top_logprobs (0..20).
  const logprobs = parseChatLogprobs(b);
  // 6. chat_template_kwargs: extra template variables.
  const templateVars = parseTemplateVars(b);
  // 7. Fields shared with /v1/completions.
  const input = {
    kind: "chat" as const,
    messages,
    ...(tools ? { tools: tools.defs } : {}),
    ...(templateVars ? { templateVars } : {}),
    ...parseTurnEnd(b),
  };
  const parsed = parseCommon(b, input, defaults, logprobs);
  if (tools?.forced && parsed.request.grammar) {
    throw invalidRequest('Cannot force a function call and a "response_format" at once', "tool_choice");
  }
  // 8. vLLM's include_reasoning: false leaves the reasoning out of the answer.
  const withReasoning = given(b.include_reasoning) ? requireBool(b, "include_reasoning") : true;
  return {
    ...parsed,
    tools: tools && { parallel: tools.parallel, forced: tools.forced },
    ...(withReasoning ? {} : { includeReasoning: false as const }),
  };
}

/**
 * Validates a `/v1/completions` body.
 * @param body The parsed JSON body.
 * @param defaults Server and model defaults.
 * @returns The engine request and the response options.
 */
export function parseCompletionRequest(body: unknown, defaults: RequestDefaults = {}): ParsedRequest {
  // 1. The body is a JSON object.
  const b = requireObject(body);
  // 2. prompt: a string or token ids (as the OpenAI API and vLLM take them), or a list of those (a batch).
  const inputs = parsePrompts(b.prompt);
  // 3. echo (the prompt comes back first, with its logprobs when asked); legacy options we do not serve.
  const echo = given(b.echo) ? requireBool(b, "echo") : false;
  if (given(b.suffix) && b.suffix !== "") throw unsupported("suffix", "suffix is not supported");
  if (given(b.best_of) && b.best_of !== (b.n ?? 1)) {
    throw unsupported("best_of", "only best_of = n is supported");
  }
  // 4. logprobs: the number of top alternatives per token (0..20), as vLLM allows.
  let logprobs: number | null = null;
  if (given(b.logprobs)) {
    if (
      !Number.isSafeInteger(b.logprobs) || (b.logprobs as number) < 0 ||
      (b.logprobs as number) > MAX_TOP_LOGPROBS
    ) {
      throw badValue("logprobs", b.logprobs, `an integer from 0 to ${MAX_TOP_LOGPROBS}`);
    }
    logprobs = b.logprobs as number;
  }
  // 5. Fields shared with /v1/chat/completions. With echo, max_tokens may be 0: the prompt alone comes back
  // (scored with logprobs), as vLLM and OpenAI's legacy API answer it.
  const echoOnly = echo && b.max_tokens === 0 && !given(b.max_completion_tokens);
  const parsed = parseCommon(echoOnly ? { ...b, max_tokens: null } : b, inputs[0], defaults, logprobs);
  if (echo) parsed.request.echo = true;
  if (echoOnly) Object.assign(parsed.request, { maxTokens: 0, maxTokensStrict: true });
  return inputs.length > 1 ? { ...parsed, inputs } : parsed;
}

/**
 * A completions `prompt`: a string, token ids, or a non-empty list of strings or of token-id lists (one
 * generation each, as lm-evaluation-harness batches them).
 */
function parsePrompts(prompt: unknown): GenerateRequest["input"][] {
  return parseTextsOrIds(prompt, "prompt", MAX_PROMPTS);
}

/**
 * A string, a non-empty array of token ids, or a list of 1 to `max` of either kind (the completions `prompt`,
 * the embeddings `input`), as engine inputs; a 400 naming `field` otherwise.
 * @param value the field's value
 * @param field its name
 * @param max most items in a list
 * @param nonEmpty refuse empty strings
 */
export function parseTextsOrIds(
  value: unknown,
  field: string,
  max: number,
  nonEmpty = false,
): GenerateRequest["input"][] {
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.length > 0 && v.every((id) => Number.isSafeInteger(id) && id >= 0);
  const one = (v: unknown): GenerateRequest["input"] | null =>
    typeof v === "string"
      ? (nonEmpty && v.length === 0 ? null : { kind: "text", prompt: v })
      : isIds(v)
      ? { kind: "tokens", ids: v }
      : null;
  const single = one(value);
  if (single) return [single];
  const list = Array.isArray(value) && value.length > 0 && value.length <= max ? value.map(one) : null;
  if (!list || list.some((x) => x === null) || new Set(list.map((x) => x!.kind)).size > 1) {
    throw invalidRequest(
      `Cannot read "${field}": expected a ${
        nonEmpty ? "non-empty " : ""
      }string, an array of token ids, or a ` +
        `list of 1 to ${max} of either kind`,
      field,
    );
  }
  return list as GenerateRequest["input"][];
}

/**
 * Reads the sampling defaults of a model's generation_config.json (temperature, top_p, top_k, min_p).
 * Like vLLM, `do_sample` is ignored: a model that lists a temperature gets it.
 * @param json The parsed file, or null when the model has none.
 * @returns The fields it sets; throws an Error naming the field when one is out of range.
 */
export function samplingFromGenerationConfig(json: unknown): Partial<SamplingParams> {
  if (json === null || json === undefined) return {};
  try {
    return parseSampling(requireObject(json));
  } catch (err) {
    if (err instanceof ApiError) throw new Error(`Cannot use generation_config.json: ${err.message}`);
    throw err;
  }
}

/**
 * Validates the `messages` array of a chat request (also used by /tokenize).
 * @param raw The field's value.
 * @returns The messages; throws a 400 ApiError naming the element at fault.
 */
export function parseChatMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw invalidRequest('Cannot read "messages": expected a non-empty array of messages', "messages");
  }
  return raw.map((m, i) => parseMessage(m, `messages[${i}]`));
}

function parseCommon(
  b: Body,
  input: GenerateRequest["input"],
  defaults: RequestDefaults,
  logprobs: number | null,
): ParsedRequest {
  // a. model: any string (one model is served).
  if (given(b.model) && typeof b.model !== "string") throw badValue("model", b.model, "a string");
  // b. n choices from the one prompt.
  const n = given(b.n) ? intIn(b, "n", 1, MAX_N) : 1;
  // c. max_completion_tokens (newer name) wins over max_tokens. More than the context can never be served
  // (a 400 naming the field given); the client's own value is also checked against the room the prompt
  // leaves before queuing (maxTokensStrict), while a default is capped.
  const newer = positiveInt(b, "max_completion_tokens");
  const own = newer ?? positiveInt(b, "max_tokens");
  if (own !== undefined && defaults.contextLength && own > defaults.contextLength) {
    throw invalidRequest(
      `Cannot generate ${own} tokens: the model's context length is ${defaults.contextLength}`,
      newer !== undefined ? "max_completion_tokens" : "max_tokens",
      "context_length_exceeded",
    );
  }
  const maxTokens = own ?? defaults.maxTokens ?? null;
  // d. stop strings, sampling, penalties, logit bias and vLLM's extensions.
  const stop = parseStop(b.stop);
  const sampling = resolveSampling(parseSampling(b), defaults);
  const stream = given(b.stream) ? requireBool(b, "stream") : false;
  let includeUsage = false;
  let continuousUsage = false;
  if (given(b.stream_options)) {
    if (!stream) throw invalidRequest('Cannot use "stream_options" without "stream": true', "stream_options");
    const so = b.stream_options;
    if (!isObject(so)) throw badValue("stream_options", so, "an object");
    for (const key of ["include_usage", "continuous_usage_stats"]) {
      if (given(so[key]) && typeof so[key] !== "boolean") {
        throw badValue(`stream_options.${key}`, so[key], "a boolean");
      }
    }
    includeUsage = so.include_usage === true;
    // As in vLLM, continuous usage rides on include_usage.
    continuousUsage = includeUsage && so.continuous_usage_stats === true;
  }
  // e. vLLM's prompt_logprobs: alternatives per prompt token (0 gives each token's own); not streamed, as
  // in vLLM. Its −1 (the whole vocabulary) is over our cap.
  let promptLogprobs: number | null = null;
  if (given(b.prompt_logprobs)) {
    promptLogprobs = intIn(b, "prompt_logprobs", 0, MAX_TOP_LOGPROBS);
    if (stream) {
      throw invalidRequest('Cannot use "prompt_logprobs" with "stream": true', "prompt_logprobs");
    }
  }
  const model = typeof b.model === "string" ? b.model : null;
  const tokensAsIds = given(b.return_tokens_as_token_ids) && requireBool(b, "return_tokens_as_token_ids");
  const returnTokenIds = given(b.return_token_ids) && requireBool(b, "return_token_ids");
  const addSpecialTokens = given(b.add_special_tokens) ? requireBool(b, "add_special_tokens") : undefined;
  // Defaults stay out of the request (n = 1, no logprobs, no penalties).
  const request: GenerateRequest = {
    input,
    maxTokens,
    ...(own !== undefined ? { maxTokensStrict: true } : {}),
    stop,
    sampling,
    ...(n !== 1 ? { n } : {}),
    ...(logprobs !== null ? { logprobs } : {}),
    ...(promptLogprobs !== null ? { promptLogprobs } : {}),
    ...(returnTokenIds ? { returnTokenIds } : {}),
    ...(addSpecialTokens !== undefined ? { addSpecialTokens } : {}),
    ...parseExtensions(b),
  };
  return {
    request,
    stream,
    includeUsage,
    ...(continuousUsage ? { continuousUsage } : {}),
    ...(tokensAsIds ? { tokensAsIds } : {}),
    model,
    tools: null,
  };
}

/**
 * Penalties, logit_bias, priority, min_tokens, ignore_eos, stop_token_ids, cache_salt and vLLM's
 * skip_special_tokens, include_stop_str_in_output, truncate_prompt_tokens, allowed_token_ids, bad_words; only
 * what the request sets (prompt_logprobs is parseCommon's: it depends on stream).
 */
function parseExtensions(b: Body): Partial<GenerateRequest> {
  const out: Partial<GenerateRequest> = {};
  const presence = numberIn(b, "presence_penalty", -2, 2, false) ?? 0;
  const frequency = numberIn(b, "frequency_penalty", -2, 2, false) ?? 0;
  const repetition = numberIn(b, "repetition_penalty", 0, 10, true) ?? 1;
  if (presence !== 0 || frequency !== 0 || repetition !== 1) {
    out.penalties = { presence, frequency, repetition };
  }
  // vLLM's priority (lower first; --scheduling-policy priority): any integer, 0 left out as the default.
  if (given(b.priority)) {
    if (!Number.isSafeInteger(b.priority)) throw badValue("priority", b.priority, "an integer");
    if (b.priority !== 0) out.priority = b.priority as number;
  }
  if (given(b.logit_bias)) {
    const lb = b.logit_bias;
    if (!isObject(lb) || Object.keys(lb).length > MAX_LOGIT_BIAS) {
      throw badValue("logit_bias", lb, `an object of at most ${MAX_LOGIT_BIAS} token ids to numbers`);
    }
    const entries = Object.entries(lb).map(([k, v]): [number, number] => {
      const id = /^\d+$/.test(k) ? Number(k) : NaN;
      if (!Number.isSafeInteger(id) || typeof v !== "number" || !(v >= -100 && v <= 100)) {
        throw badValue(`logit_bias.${k}`, v, "a token id mapped to a number in [-100, 100]");
      }
      return [id, v];
    });
    if (entries.length > 0) out.logitBias = entries;
  }
  if (given(b.min_tokens)) out.minTokens = intIn(b, "min_tokens", 0, Number.MAX_SAFE_INTEGER);
  if (given(b.ignore_eos)) out.ignoreEos = requireBool(b, "ignore_eos");
  if (given(b.stop_token_ids)) {
    const ids = b.stop_token_ids;
    const ok = Array.isArray(ids) && ids.length <= MAX_STOP_TOKEN_IDS &&
      ids.every((id) => Number.isSafeInteger(id) && id >= 0);
    if (!ok) throw badValue("stop_token_ids", ids, `at most ${MAX_STOP_TOKEN_IDS} token ids`);
    if ((ids as number[]).length > 0) out.stopTokenIds = ids as number[];
  }
  if (given(b.skip_special_tokens) && !requireBool(b, "skip_special_tokens")) out.skipSpecialTokens = false;
  if (given(b.include_stop_str_in_output) && requireBool(b, "include_stop_str_in_output")) {
    out.includeStopStr = true;
  }
  if (given(b.truncate_prompt_tokens)) {
    const k = b.truncate_prompt_tokens;
    if (!(k === -1 || (Number.isSafeInteger(k) && (k as number) >= 1))) {
      throw badValue("truncate_prompt_tokens", k, "a positive integer, or -1 for the max model length");
    }
    out.truncatePromptTokens = k as number;
  }
  if (given(b.allowed_token_ids)) {
    const ids = b.allowed_token_ids;
    const ok = Array.isArray(ids) && ids.length > 0 && ids.length <= MAX_ALLOWED_TOKEN_IDS &&
      ids.every((id) => Number.isSafeInteger(id) && id >= 0);
    if (!ok) throw badValue("allowed_token_ids", ids, `1 to ${MAX_ALLOWED_TOKEN_IDS} token ids`);
    out.allowedTokenIds = ids as number[];
  }
  if (given(b.bad_words)) {
    const words = b.bad_words;
    const ok = Array.isArray(words) && words.length <= MAX_BAD_WORDS &&
      words.every((w) => typeof w === "string" && w.trim() !== "" && w.length <= MAX_BAD_WORD_CHARS);
    if (!ok) {
      throw badValue(
        "bad_words",
        words,
        `at most ${MAX_BAD_WORDS} non-blank strings of at most ${MAX_BAD_WORD_CHARS} characters`,
      );
    }
    if ((words as string[]).length > 0) out.badWords = words as string[];
  }
  if (given(b.use_beam_search) && requireBool(b, "use_beam_search")) {
    throw unsupported("use_beam_search", "beam search is not supported");
  }
  if (
    given(b.logits_processors) && !(Array.isArray(b.logits_processors) && b.logits_processors.length === 0)
  ) {
    throw unsupported("logits_processors", "logits processors are not supported");
  }
  if (given(b.cache_salt)) {
    const salt = b.cache_salt;
    if (typeof salt !== "string" || salt.length === 0 || salt.length > MAX_CACHE_SALT) {
      throw badValue("cache_salt", salt, `a non-empty string of at most ${MAX_CACHE_SALT} characters`);
    }
    out.cacheSalt = salt;
  }
  const grammar = parseStructuredOutput(b);
  if (grammar) out.grammar = grammar;
  return out;
}

/** Chat's `logprobs` (boolean) and `top_logprobs` (0..20, needs logprobs): the top count, or null. */
function parseChatLogprobs(b: Body): number | null {
  const on = given(b.logprobs) ? requireBool(b, "logprobs") : false;
  if (!given(b.top_logprobs)) return on ? 0 : null;
  const top = intIn(b, "top_logprobs", 0, MAX_TOP_LOGPROBS);
  if (!on) throw invalidRequest('Cannot use "top_logprobs" without "logprobs": true', "top_logprobs");
  return top;
}

function parseMessage(m: unknown, path: string): ChatMessage {
  if (!isObject(m)) throw badValue(path, m, "an object with role and content");
  const role = m.role;
  if (typeof role !== "string" || !ROLES.includes(role)) {
    throw badValue(`${path}.role`, role, `one of ${ROLES.join(", ")}`);
  }
  // "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
  const out: ChatMessage = {
    role: role === "developer" ? "system" : role,
    content: parseContent(m.content, role, path),
  };
  if (role === "assistant" && given(m.tool_calls)) {
    if (!Array.isArray(m.tool_calls)) throw badValue(`${path}.tool_calls`, m.tool_calls, "an array");
    if (m.tool_calls.length > 0) {
      out.tool_calls = m.tool_calls.map((c, i) => parseCallMessage(c, `${path}.tool_calls[${i}]`));
    }
  }
  if (role === "tool" && given(m.tool_call_id)) {
    if (typeof m.tool_call_id !== "string") {
      throw badValue(`${path}.tool_call_id`, m.tool_call_id, "a string");
    }
    out.tool_call_id = m.tool_call_id;
  }
  return out;
}

/**
 * A function call of an earlier assistant turn. Its `arguments` (JSON text) go to the template as the
 * object they encode, as vLLM hands them over: templates write them with `tojson`.
 */
function parseCallMessage(c: unknown, path: string): ChatToolCall {
  const fn = isObject(c) ? c.function : undefined;
  if (!isObject(c) || !isObject(fn) || typeof fn.name !== "string") {
    throw badValue(path, c, 'a call {"id", "type": "function", "function": {"name", "arguments"}}');
  }
  const text = fn.arguments;
  if (given(text) && typeof text !== "string") {
    throw badValue(`${path}.function.arguments`, text, "a string of JSON");
  }
  let args: unknown = text ?? "{}";
  try {
    const parsed = JSON.parse(args as string);
    if (isObject(parsed)) args = parsed;
  } catch {
    // Not JSON: the template gets the text as it came.
  }
  return {
    id: typeof c.id === "string" ? c.id : "",
    type: "function",
    function: { name: fn.name, arguments: args },
  };
}

/**
 * vLLM's `add_generation_prompt` (default true) and `continue_final_message` (default false: the answer
 * continues the final assistant message, whose content ends the prompt), for chat and /tokenize; both true
 * is a 400, as in vLLM. Only what the request sets.
 */
export function parseTurnEnd(b: Body): { addGenerationPrompt?: boolean; continueFinalMessage?: boolean } {
  const add = given(b.add_generation_prompt) ? requireBool(b, "add_generation_prompt") : undefined;
  const cont = given(b.continue_final_message) ? requireBool(b, "continue_final_message") : false;
  if (add && cont) {
    throw invalidRequest(
      'Cannot set both "continue_final_message" and "add_generation_prompt" to true',
      "continue_final_message",
    );
  }
  return {
    ...(add !== undefined ? { addGenerationPrompt: add } : {}),
    ...(cont ? { continueFinalMessage: true } : {}),
  };
}

/**
 * vLLM's `chat_template_kwargs`: extra variables for the chat template (e.g. `{"enable_thinking": false}` for
 * Qwen3), and its `documents` (RAG templates read them as `documents`, a list of objects of strings such as
 * `title` and `text`; a template that does not use them ignores them); null when there are none. The
 * variables the server sets itself cannot be overridden.
 */
export function parseTemplateVars(b: Body): Record<string, unknown> | null {
  const vars = given(b.chat_template_kwargs) ? b.chat_template_kwargs : {};
  if (!isObject(vars)) throw badValue("chat_template_kwargs", vars, "an object of template variables");
  for (const key of RESERVED_TEMPLATE_VARS) {
    if (key in vars) {
      throw invalidRequest(
        `Cannot set "${key}" through chat_template_kwargs: the server sets it`,
        `chat_template_kwargs.${key}`,
      );
    }
  }
  if (given(b.documents)) {
    const docs = b.documents;
    const ok = Array.isArray(docs) &&
      docs.every((d) => isObject(d) && Object.values(d).every((v) => typeof v === "string"));
    if (!ok) throw badValue("documents", docs, 'a list of objects of strings (e.g. "title" and "text")');
    return { ...vars, documents: docs };
  }
  return Object.keys(vars).length > 0 ? vars : null;
}

function parseContent(content: unknown, role: string, path: string): string {
  if (typeof content === "string") return content;
  // An assistant turn that only carried tool calls has null content.
  if (!given(content) && role === "assistant") return "";
  if (!Array.isArray(content)) {
    throw badValue(`${path}.content`, content, "a string or an array of text parts");
  }
  return content.map((part, i) => {
    if (!isObject(part) || part.type !== "text" || typeof part.text !== "string") {
      const type = isObject(part) ? part.type : part;
      throw unsupported(
        `${path}.content[${i}]`,
        `only "text" content parts are supported, got ${JSON.stringify(type)}`,
      );
    }
    return part.text;
  }).join("\n"); // parts are separate blocks of text, as vLLM joins them
}

function rejectChatExtras(b: Body): void {
  if (given(b.functions) && !(Array.isArray(b.functions) && b.functions.length === 0)) {
    throw unsupported("functions", 'the legacy "functions" field is not supported; use "tools"');
  }
  // As vLLM without --trust-request-chat-template: the model's own template renders every chat.
  const kwargs = isObject(b.chat_template_kwargs) ? b.chat_template_kwargs : {};
  for (
    const [field, value] of [["chat_template", b.chat_template], [
      "chat_template_kwargs.chat_template",
      kwargs.chat_template,
    ]]
  ) {
    if (given(value)) throw unsupported(field as string, "request chat templates are not accepted");
  }
}

function parseSampling(b: Body): Partial<SamplingParams> {
  const s: Partial<SamplingParams> = {};
  const temperature = numberIn(b, "temperature", 0, 2, false);
  if (temperature !== undefined) s.temperature = temperature;
  const topP = numberIn(b, "top_p", 0, 1, true);
  if (topP !== undefined) s.topP = topP;
  if (given(b.top_k)) {
    const k = b.top_k;
    // -1 is vLLM's spelling of "disabled"; accept it so vLLM clients work unchanged.
    if (!Number.isSafeInteger(k) || (k as number) < -1) {
      throw badValue("top_k", k, "an integer >= 0 (0 disables)");
    }
    s.topK = Math.max(0, k as number);
  }
  const minP = numberIn(b, "min_p", 0, 1, false);
  if (minP !== undefined) s.minP = minP;
  if (given(b.seed)) {
    // Clients send any integer (−1, 2^63 − 1, …); the sampler's RNG takes a u32, so seeds are taken mod 2^32.
    if (typeof b.seed !== "number" || !Number.isInteger(b.seed)) throw badValue("seed", b.seed, "an integer");
    s.seed = Number(BigInt.asUintN(32, BigInt(b.seed)));
  }
  return s;
}

function resolveSampling(req: Partial<SamplingParams>, d: RequestDefaults): SamplingParams {
  return {
    temperature: req.temperature ?? d.server?.temperature ?? d.model?.temperature ??
      BUILTIN_SAMPLING.temperature,
    topP: req.topP ?? d.server?.topP ?? d.model?.topP ?? BUILTIN_SAMPLING.topP,
    topK: req.topK ?? d.server?.topK ?? d.model?.topK ?? BUILTIN_SAMPLING.topK,
    minP: req.minP ?? d.server?.minP ?? d.model?.minP ?? BUILTIN_SAMPLING.minP,
    seed: req.seed ?? d.server?.seed ?? d.model?.seed ?? BUILTIN_SAMPLING.seed,
  };
}

function parseStop(stop: unknown): string[] {
  if (!given(stop)) return [];
  const list = typeof stop === "string" ? [stop] : stop;
  if (
    !Array.isArray(list) || list.length > MAX_STOP || !list.every((s) => typeof s === "string" && s !== "")
  ) {
    throw badValue("stop", stop, `a non-empty string or an array of at most ${MAX_STOP} non-empty strings`);
  }
  return list as string[];
}
