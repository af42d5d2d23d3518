/**
 * POST /v1/embeddings in OpenAI's shape, with vLLM's extensions: `{model?, input, encoding_format = "float",
 * dimensions?, user?, truncate_prompt_tokens?, add_special_tokens = true}` → `{object: "list", data:
 * [{object: "embedding", index, embedding}], model, usage: {prompt_tokens, total_tokens}}`.
 *
 * `input` is a string, an array of token ids, or a list of 1 to 2,048 of either kind (OpenAI's limit); vLLM's
 * chat form sends `messages` instead (rendered by the model's template; `add_generation_prompt` and
 * `add_special_tokens` default to false). The inputs of a request are embedded together (each a prompt that
 * samples nothing, batched with the rest of the engine's work). An input's embedding is its last token's final-normed hidden state (last-token
 * pooling: how decoder embedding models such as gte-Qwen2, Qwen3-Embedding and e5-mistral are read),
 * L2-normalised as OpenAI's are; `dimensions` keeps the first k values and normalises again (Matryoshka
 * models). `encoding_format: "base64"` sends the little-endian f32 bytes in base64 (the openai package asks
 * for it unless told otherwise).
 */
import { Buffer } from "node:buffer";
import type { Handler } from "hono";
import {
  type EmbedOptions,
  type EmbedResult,
  type Engine,
  EngineInputError,
  type GenerateInput,
} from "../../inference/engine/mod.ts";
import { ApiError, invalidRequest } from "../errors.ts";
import { badValue, given, positiveInt, requireBool, requireObject } from "../validate.ts";
import { parseChatMessages, parseTemplateVars, parseTextsOrIds, parseTurnEnd } from "../protocol.ts";
import { readJsonBody } from "./completions.ts";

/** Most inputs in one request (OpenAI's limit). */
export const MAX_EMBED_INPUTS = 2048;
/** Most inputs of one request waiting or running in the engine at once. */
const EMBED_IN_FLIGHT = 64;

/** A validated /v1/embeddings request. */
export interface EmbeddingsRequest {
  inputs: GenerateInput[];
  format: "float" | "base64";
  dimensions: number | null;
  options: EmbedOptions;
}

/** OpenAI's CreateEmbeddingResponse. */
export interface EmbeddingsResponse {
  object: "list";
  data: { object: "embedding"; index: number; embedding: number[] | string }[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

/**
 * Builds the /v1/embeddings handler.
 * @param deps The engine (its embed()) and the `model` name responses report.
 * @returns A Hono handler.
 */
export function embeddingsHandler(deps: { engine: Engine; modelName(): string }): Handler {
  return async (c) => {
    const request = parseEmbeddingsRequest(await readJsonBody(c));
    if (request.inputs[0].kind === "chat" && !deps.engine.status().hasChatTemplate) {
      throw invalidRequest(
        "Cannot embed messages: the model has no chat template; send input instead",
        "messages",
        "no_chat_template",
      );
    }
    const embed = deps.engine.embed;
    if (!embed) {
      throw new ApiError(501, "server_error", "Cannot embed: this engine does not support it", {
        code: "not_implemented",
      });
    }
    // At most EMBED_IN_FLIGHT of a request's inputs queued at once (a list of 2,048 would otherwise fill the
    // engine's waiting queue, --max-queued-requests, by itself); a failed input or a client gone stops the rest.
    const results = new Array<EmbedResult>(request.inputs.length);
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (next < request.inputs.length && !failed && !c.req.raw.signal.aborted) {
        const i = next++;
        try {
          results[i] = await embed.call(deps.engine, request.inputs[i], request.options);
        } catch (err) {
          failed = true;
          // In a list, the field is the input's: input[i] (input[i][k] for an id of it).
          if (
            request.inputs.length > 1 && err instanceof EngineInputError && err.param?.startsWith("input")
          ) {
            throw new EngineInputError(
              err.message,
              `input[${i}]${err.param.slice("input".length)}`,
              err.code,
            );
          }
          throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(EMBED_IN_FLIGHT, request.inputs.length) }, worker));
    if (c.req.raw.signal.aborted) return new Response(null, { status: 499 }); // nobody reads it
    const size = results[0].embedding.length;
    if (request.dimensions !== null && request.dimensions > size) {
      throw invalidRequest(
        `Cannot return ${request.dimensions} dimensions: the model's embeddings have ${size}`,
        "dimensions",
      );
    }
    const tokens = results.reduce((n, r) => n + r.promptTokens, 0);
    const body: EmbeddingsResponse = {
      object: "list",
      data: results.map((r, index) => {
        const v = normalised(r.embedding.subarray(0, request.dimensions ?? size));
        return {
          object: "embedding",
          index,
          embedding: request.format === "base64" ? Buffer.from(v.buffer).toString("base64") : Array.from(v),
        };
      }),
      model: deps.modelName(),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
    return c.json(body);
  };
}

/**
 * Validates a /v1/embeddings body.
 * @param body The parsed JSON body.
 * @returns The request; throws a 400 ApiError naming the field.
 */
export function parseEmbeddingsRequest(body: unknown): EmbeddingsRequest {
  const b = requireObject(body);
  if (given(b.model) && typeof b.model !== "string") throw badValue("model", b.model, "a string");
  if (given(b.user) && typeof b.user !== "string") throw badValue("user", b.user, "a string");
  const format = b.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw badValue("encoding_format", format, '"float" or "base64"');
  }
  const dimensions = positiveInt(b, "dimensions") ?? null;
  const options: EmbedOptions = {};
  if (given(b.add_special_tokens)) options.addSpecialTokens = requireBool(b, "add_special_tokens");
  if (given(b.truncate_prompt_tokens)) {
    const k = b.truncate_prompt_tokens;
    if (!(Number.isSafeInteger(k) && ((k as number) >= 1 || k === -1))) {
      throw badValue("truncate_prompt_tokens", k, "a positive integer or -1 (the model's context)");
    }
    options.truncatePromptTokens = k as number;
  }
  // vLLM's chat form: `messages` rendered by the model's template, without the generation prompt and the
  // tokenizer's special tokens unless asked (EmbeddingChatRequest's defaults).
  if (given(b.messages)) {
    if (given(b.input)) {
      throw invalidRequest('Cannot embed both "input" and "messages": send one', "messages");
    }
    const turn = parseTurnEnd(b);
    const templateVars = parseTemplateVars(b);
    const input: GenerateInput = {
      kind: "chat",
      messages: parseChatMessages(b.messages),
      addGenerationPrompt: turn.addGenerationPrompt ?? false,
      ...(turn.continueFinalMessage ? { continueFinalMessage: true } : {}),
      ...(templateVars ? { templateVars } : {}),
    };
    options.addSpecialTokens ??= false;
    return { inputs: [input], format, dimensions, options };
  }
  return { inputs: parseTextsOrIds(b.input, "input", MAX_EMBED_INPUTS, true), format, dimensions, options };
}

/** v / ‖v‖ (a zero vector stays zero), summed in f64. */
function normalised(v: Float32Array): Float32Array {
  let sq = 0;
  for (const x of v) sq += x * x;
  const scale = sq > 0 ? 1 / Math.sqrt(sq) : 0;
  return v.map((x) => x * scale);
}
