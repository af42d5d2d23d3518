/**
 * The HTTP app: OpenAI-compatible routes over one Engine, errors in OpenAI's shape.
 * The server does not queue: the engine batches requests and bounds its own queue (inference/engine).
 */
import { Hono, type MiddlewareHandler } from "hono";
import { DEFAULT_MAX_BODY_BYTES } from "../config.ts";
import type { Engine, SamplingParams } from "../inference/engine/mod.ts";
import { ApiError, asApiError, internalError, toErrorBody } from "./errors.ts";
import { createServerMetrics, type MetricsSource } from "./metrics.ts";
import { auth, type AuthOptions } from "./middleware/auth.ts";
import { bodyLimit } from "./middleware/body_limit.ts";
import { cors } from "./middleware/cors.ts";
import { requestLog } from "./middleware/request_log.ts";
import { chatHandler } from "./routes/chat.ts";
import { completionsHandler, type RouteDeps } from "./routes/completions.ts";
import { metricsHandler } from "./routes/metrics.ts";
import { embeddingsHandler } from "./routes/embeddings.ts";
import { getModelHandler, listModelsHandler } from "./routes/models.ts";
import type { JobManager } from "../inference/jobs/mod.ts";
import { quantizeHandlers } from "./routes/quantize.ts";
import { responsesHandlers } from "./routes/responses.ts";
import { ResponseStore } from "./responses.ts";
import { artifactHandlers } from "./routes/artifacts.ts";
import { detokenizeHandler, tokenizeHandler } from "./routes/tokenize.ts";
import { versionHandler } from "./routes/version.ts";
import { webRoutes } from "./web/mod.ts";

/** The slice of config.ts's Config that the server reads (passed down explicitly, docs/style.md B). */
export interface ServerConfig {
  /** Name reported as `model`; null or absent means the engine's model id (its folder name). */
  servedModelName?: string | null;
  /** max_tokens when a request gives none; null or absent means up to the context length. */
  maxTokensDefault?: number | null;
  /** API and admin keys; absent: open API, admin API disabled (server/middleware/auth.ts). */
  auth?: AuthOptions;
  /** Largest body (default 4 MiB); the longest prompt (--max-prompt-tokens) is the engine's to check. */
  limits?: { maxBodyBytes?: number };
  /**
   * Chat answers of a model whose template knows `<think>` blocks split into `reasoning_content` and
   * `content` (server/reasoning.ts); false: the text as generated. Default true.
   */
  splitReasoning?: boolean;
  /**
   * Web origins whose pages may call the API from a browser (server/middleware/cors.ts): ["*"] any; absent
   * or empty: no CORS headers.
   */
  allowedOrigins?: readonly string[];
}

/** Everything createApp needs. */
export interface AppOptions {
  engine: Engine;
  config: ServerConfig;
  /** Server-wide sampling defaults, applied after the request's own fields. */
  samplingDefaults?: Partial<SamplingParams>;
  /** The model's generation_config.json defaults (see samplingFromGenerationConfig), applied last. */
  generationDefaults?: Partial<SamplingParams>;
  /** Receives unexpected failures; the client sees only a generic 500. Defaults to console.error. */
  logError?: (message: string, err: unknown) => void;
  /** Quantization jobs: mounts /v1/quantize* and /v1/artifacts* (absent: those routes are 404). */
  jobs?: JobManager;
  /** Receives one JSON line per request (server/middleware/request_log.ts); absent: no request log. */
  logRequest?: (line: string) => void;
  /** Scrape-time gauges beyond the engine's counters: the quantize job, extra GPU memory. */
  metricsSource?: Omit<MetricsSource, "engine">;
  /** Fires when in-flight generations must stop (server/shutdown.ts); they end with a 503 error. */
  stopSignal?: AbortSignal;
}

/**
 * Builds the Hono app: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/models,
 * /tokenize, /detokenize, /health,
 * /version, /metrics, the admin routes (with `jobs`) and the web pages (`/`, `/admin`, `/web/*`), behind the
 * request log, CORS (with allowedOrigins), the key check and the body limit (in that order).
 * @param options The engine, the server config and the sampling defaults.
 * @returns The app; serve it with `Deno.serve({ port, hostname }, app.fetch)`.
 * @example
 * ```ts
 * import { createApp } from "./app.ts";
 * import type { Engine } from "../inference/engine/types.ts";
 * const engine: Engine = {
 *   status: () => ({ state: "loading", detail: "", modelId: "m", contextLength: 8, hasChatTemplate: false }),
 *   generate: () => { throw new Error("not ready"); },
 * };
 * const res = await createApp({ engine, config: {} }).request("/health");
 * console.assert(res.status === 503);
 * ```
 */
export function createApp(options: AppOptions): Hono {
  const { engine, config, logError = defaultLog, logRequest, metricsSource = {}, stopSignal, jobs } = options;
  const modelName = () => config.servedModelName ?? engine.status().modelId;
  const deps: RouteDeps = {
    engine,
    modelName,
    defaults: {
      server: options.samplingDefaults ?? {},
      model: options.generationDefaults ?? {},
      maxTokens: config.maxTokensDefault ?? null,
      get contextLength() {
        return engine.status().contextLength;
      },
    },
    logError,
    splitReasoning: config.splitReasoning ?? true,
    ...(stopSignal ? { stopSignal } : {}),
  };
  const modelsDeps = { engine, modelName, created: Math.floor(Date.now() / 1000) };
  const metrics = createServerMetrics({ ...metricsSource, engine: () => engine.counters?.() ?? null });
  const ready = requireReady(engine);

  const app = new Hono();
  app.use("*", requestLog({ ...(logRequest ? { log: logRequest } : {}), onFinish: metrics.observeRequest }));
  const corsMiddleware = cors(config.allowedOrigins ?? []);
  if (corsMiddleware) app.use("*", corsMiddleware); // before the key check: preflights carry no key
  app.use("*", auth(config.auth));
  app.use("*", bodyLimit({ maxBytes: config.limits?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES }));
  app.post("/v1/chat/completions", ready, chatHandler(deps));
  app.post("/v1/completions", ready, completionsHandler(deps));
  app.post("/v1/embeddings", ready, embeddingsHandler(deps));
  const responses = responsesHandlers(deps, new ResponseStore());
  app.post("/v1/responses", ready, responses.create);
  app.get("/v1/responses/:id", responses.get);
  app.get("/v1/responses/:id/input_items", responses.inputItems);
  app.delete("/v1/responses/:id", responses.delete);
  app.get("/v1/models", listModelsHandler(modelsDeps));
  app.get("/v1/models/:id{.+}", getModelHandler(modelsDeps)); // ids may contain "/"
  if (jobs) {
    const q = quantizeHandlers(jobs);
    app.post("/v1/quantize", q.submit);
    app.get("/v1/quantize", q.list);
    app.get("/v1/quantize/:id", q.get);
    app.get("/v1/quantize/:id/events", q.events);
    app.delete("/v1/quantize/:id", q.cancel);
    const a = artifactHandlers(jobs);
    app.get("/v1/artifacts", a.list);
    app.post("/v1/artifacts/:name/activate", a.activate);
  }
  app.post("/tokenize", ready, tokenizeHandler(engine));
  app.post("/detokenize", ready, detokenizeHandler(engine));
  app.get("/health", (c) => {
    const s = engine.status();
    if (s.state === "ready") return c.json({ status: "ok" });
    return c.json({ status: s.state, detail: s.detail }, 503);
  });
  app.get("/version", versionHandler());
  app.get("/metrics", metricsHandler(metrics));
  app.route("/", webRoutes()); // the chat page, the quantization console and their assets

  app.notFound((c) => {
    const err = new ApiError(404, "not_found_error", `Cannot find route ${c.req.method} ${c.req.path}`);
    return c.json(toErrorBody(err), 404);
  });
  app.onError((err, c) => {
    let apiError = asApiError(err);
    if (!apiError) {
      // A client that hung up mid-request is not a server failure; nobody reads this response.
      if (c.req.raw.signal.aborted) return new Response(null, { status: 499 });
      logError(`${c.req.method} ${c.req.path} failed`, err);
      apiError = internalError();
    }
    if (apiError.retryAfter !== null) c.header("Retry-After", String(apiError.retryAfter));
    return c.json(toErrorBody(apiError), apiError.status);
  });
  return app;
}

/** 503 for generation requests until the engine is ready, and after it failed (device lost). */
function requireReady(engine: Engine): MiddlewareHandler {
  return async (_c, next) => {
    const s = engine.status();
    if (s.state !== "ready") {
      const what = s.state === "loading" ? "the model is still loading" : "the engine failed";
      throw new ApiError(503, "server_error", `Cannot generate now: ${what}: ${s.detail}`, {
        code: s.state === "loading" ? "model_loading" : "engine_failed",
      });
    }
    await next();
  };
}

function defaultLog(message: string, err: unknown): void {
  console.error(`[server] ${message}:`, err);
}
