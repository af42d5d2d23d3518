/**
 * GET /v1/models and GET /v1/models/:id: the one served model.
 * Reference: https://platform.openai.com/docs/api-reference/models
 */
import type { Handler } from "hono";
import type { Engine } from "../../inference/engine/mod.ts";
import { ApiError } from "../errors.ts";

/** One entry of the model list; `max_model_len` is vLLM's extension giving the context length. */
export interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  max_model_len: number;
  /** How the served weights are quantized (null: full precision); `ppl` as measured when it was made. */
  quantization: { method: string; bits: number; group_size: number; ppl: number | null } | null;
}

/** Inputs of the models routes. */
export interface ModelsDeps {
  engine: Engine;
  /** The served name. */
  modelName(): string;
  /** Unix seconds reported as `created` (server start). */
  created: number;
}

function card(deps: ModelsDeps): ModelCard {
  const q = deps.engine.status().quantization ?? null;
  return {
    id: deps.modelName(),
    object: "model",
    created: deps.created,
    owned_by: "leanserve",
    max_model_len: deps.engine.status().contextLength,
    quantization: q && { method: q.method, bits: q.bits, group_size: q.groupSize, ppl: q.ppl },
  };
}

/**
 * Builds the GET /v1/models handler.
 * @param deps The engine and the served name.
 * @returns A handler answering `{"object": "list", "data": [card]}`.
 */
export function listModelsHandler(deps: ModelsDeps): Handler {
  return (c) => c.json({ object: "list", data: [card(deps)] });
}

/**
 * Builds the GET /v1/models/:id handler.
 * @param deps The engine and the served name.
 * @returns A handler answering the card, or 404 for another id.
 */
export function getModelHandler(deps: ModelsDeps): Handler {
  return (c) => {
    const id = c.req.param("id") ?? "";
    if (id !== deps.modelName()) {
      throw new ApiError(
        404,
        "not_found_error",
        `Cannot find model "${id}": this server serves "${deps.modelName()}"`,
        {
          param: "model",
          code: "model_not_found",
        },
      );
    }
    return c.json(card(deps));
  };
}
