/**
 * POST /tokenize and POST /detokenize in vLLM's shapes (vllm/entrypoints/openai/protocol.py):
 * - `{model?, prompt, add_special_tokens = true, return_token_strs = false}` (TokenizeCompletionRequest), or
 *   `{model?, messages, tools?, chat_template_kwargs?, add_generation_prompt = true, continue_final_message =
 *   false, add_special_tokens = false,
 *   return_token_strs = false}`
 *   (TokenizeChatRequest) → `{count, max_model_len, tokens, token_strs?}`;
 * - `{model?, tokens}` → `{prompt}`, special tokens included as text.
 * The ids are exactly those generation would use for the same prompt or messages.
 */
import type { Handler } from "hono";
import type { Engine, GenerateInput, TokenizeOptions } from "../../inference/engine/mod.ts";
import { ApiError, invalidRequest } from "../errors.ts";
import { parseChatMessages, parseChatTools, parseTemplateVars, parseTurnEnd } from "../protocol.ts";
import { badValue, type Body, given, requireBool, requireObject } from "../validate.ts";
import { readJsonBody } from "./completions.ts";

/** vLLM's TokenizeResponse. */
export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  token_strs?: string[];
}

/**
 * Builds the /tokenize handler.
 * @param engine The engine (its tokenize() and status()).
 * @returns A Hono handler.
 */
export function tokenizeHandler(engine: Engine): Handler {
  return async (c) => {
    const { input, options } = parseTokenizeRequest(await readJsonBody(c));
    if (input.kind === "chat" && !engine.status().hasChatTemplate) {
      throw invalidRequest(
        "Cannot tokenize messages: the model has no chat template; send prompt instead",
        "messages",
        "no_chat_template",
      );
    }
    const result = await supported(engine.tokenize, "tokenize").call(engine, input, options);
    const body: TokenizeResponse = {
      count: result.ids.length,
      max_model_len: engine.status().contextLength,
      tokens: result.ids,
      ...(options.returnTokenStrs ? { token_strs: result.tokenStrs ?? [] } : {}),
    };
    return c.json(body);
  };
}

/**
 * Builds the /detokenize handler.
 * @param engine The engine (its detokenize()).
 * @returns A Hono handler.
 */
export function detokenizeHandler(engine: Engine): Handler {
  return async (c) => {
    const ids = parseDetokenizeRequest(await readJsonBody(c));
    const prompt = await supported(engine.detokenize, "detokenize").call(engine, ids);
    return c.json({ prompt });
  };
}

/**
 * Validates a /tokenize body.
 * @param body The parsed JSON body.
 * @returns The engine input and options; throws a 400 ApiError naming the field.
 */
export function parseTokenizeRequest(body: unknown): { input: GenerateInput; options: TokenizeOptions } {
  // 1. A JSON object with a string model, if any.
  const b = requireObject(body);
  if (given(b.model) && typeof b.model !== "string") throw badValue("model", b.model, "a string");
  const returnTokenStrs = optionalBool(b, "return_token_strs") ?? false;
  // 2. messages (chat) wins over prompt, as vLLM tries the chat shape when messages is present.
  if (given(b.messages)) {
    const messages = parseChatMessages(b.messages);
    for (const key of ["chat_template"]) {
      if (given(b[key]) && !(Array.isArray(b[key]) && b[key].length === 0)) {
        throw invalidRequest(
          `Cannot serve this request: ${key} is not supported`,
          key,
          "unsupported_parameter",
        );
      }
    }
    // tools as chat renders them, so the count is what generation would prefill.
    const tools = parseChatTools(b);
    const templateVars = parseTemplateVars(b);
    return {
      input: {
        kind: "chat",
        messages,
        ...(tools ? { tools: tools.defs } : {}),
        ...(templateVars ? { templateVars } : {}),
        ...parseTurnEnd(b),
      },
      options: {
        addSpecialTokens: optionalBool(b, "add_special_tokens") ?? false,
        returnTokenStrs,
      },
    };
  }
  // 3. Otherwise prompt: a string.
  if (typeof b.prompt !== "string") {
    throw invalidRequest('Cannot read "prompt": expected a string (or send "messages")', "prompt");
  }
  return {
    input: { kind: "text", prompt: b.prompt },
    options: { addSpecialTokens: optionalBool(b, "add_special_tokens") ?? true, returnTokenStrs },
  };
}

/**
 * Validates a /detokenize body.
 * @param body The parsed JSON body.
 * @returns The token ids; throws a 400 ApiError naming the field (`tokens[3]`).
 */
export function parseDetokenizeRequest(body: unknown): number[] {
  const b = requireObject(body);
  if (given(b.model) && typeof b.model !== "string") throw badValue("model", b.model, "a string");
  if (!Array.isArray(b.tokens)) throw badValue("tokens", b.tokens, "an array of token ids");
  b.tokens.forEach((id, i) => {
    if (!Number.isSafeInteger(id) || id < 0) throw badValue(`tokens[${i}]`, id, "a non-negative integer");
  });
  return b.tokens as number[];
}

function supported<F>(method: F | undefined, name: string): F {
  if (!method) {
    throw new ApiError(501, "server_error", `Cannot ${name}: this engine does not support it`, {
      code: "not_implemented",
    });
  }
  return method;
}

function optionalBool(b: Body, key: string): boolean | undefined {
  return given(b[key]) ? requireBool(b, key) : undefined;
}
