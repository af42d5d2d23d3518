/**
 * Command-line configuration: defaults, help text and validation in one place (docs/style.md I).
 * parseConfig is pure: main.ts passes Deno.args and the environment in. Bad values are errors, never clamps.
 */
import { basename, join } from "node:path";
import {
  DEFAULT_GPU_HIDDEN_BYTES,
  FLAG_LABELS,
  parseCalibGpuMemory,
  parseQuantizeRequest,
  parseSize,
  QuantizeOptionsError,
  type QuantizeRequest,
  rawFromFlags,
} from "./inference/quantize/mod.ts";

/** Served when --model is absent: small (360M), Llama architecture, Apache-2.0, with a chat template. */
export const DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct";
/** Where repo ids are downloaded from when HF_ENDPOINT is unset. */
export const DEFAULT_HF_ENDPOINT = "https://huggingface.co";

/** Weight storage on the GPU. */
export type WeightDtype = "auto" | "f32" | "f16";

/** Quantization at startup: the request the HTTP API and `deno task quantize` validate the same way. */
export type QuantConfig = QuantizeRequest;

/** The default model's quantization request as JSON fields; the --nsamples, --seqlen, … flags add to it. */
const DEFAULT_MODEL_QUANTIZE_RAW = { method: "leanquant-aff", bits: 4, group_size: 128, activate: true };

/**
 * How the default model (no --model, issue 11) is served: quantized at startup with LeanQuant affine 4-bit,
 * group 128, calibrated on the built-in source with the adapter's budget (main.ts applies
 * `withAdapterBudget`), and cached in --artifacts-dir under a name keyed by the model's revision and these
 * options, so the next start serves it at once.
 */
export const DEFAULT_MODEL_QUANTIZE: QuantConfig = Object.freeze(
  parseQuantizeRequest(DEFAULT_MODEL_QUANTIZE_RAW),
);

/**
 * The quantization to run at startup on this adapter. On a CPU adapter the default model (no --model and no
 * quantize flag) is served unquantized: LeanQuant over 32 layers projects to hours on lavapipe (BENCHMARKS.md,
 * "First start of the default model"), and a newcomer without a GPU should be chatting within minutes. Any
 * quantize flag (e.g. `--quantize leanquant-aff`) still quantizes there.
 */
export function startupQuant(config: Config, adapter: { readonly isCpu: boolean }): QuantConfig | null {
  return adapter.isCpu && config.quant === DEFAULT_MODEL_QUANTIZE ? null : config.quant;
}

/** Where quantized artifacts go by default (relative to the working directory). */
export const DEFAULT_ARTIFACTS_DIR = "artifacts";

/** How repo ids are resolved: the Hugging Face cache and hub, from the environment as huggingface_hub reads it. */
export interface HubConfig {
  /** --hf-cache, else $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir: string;
  /** $HF_TOKEN: sent to the endpoint only; null when unset. */
  token: string | null;
  /** Read when token is null: $HF_TOKEN_PATH, else $HF_HOME/token (written by `huggingface-cli login`). */
  tokenFile: string;
  /** $HF_HUB_OFFLINE is 1/true/yes/on: resolve repo ids from the cache only. */
  offline: boolean;
  /** $HF_ENDPOINT, else https://huggingface.co; no trailing slash. */
  endpoint: string;
}

/** The whole server configuration, frozen. */
export interface Config {
  /** --help was given: print HELP_TEXT and exit; the other fields are defaults. */
  help: boolean;
  /** A Hugging Face model folder or repo id `org/name[@revision]`; DEFAULT_MODEL when not given. */
  model: string;
  /** Name reported as `model` in responses; defaults to the folder's (or repo's) name. */
  servedModelName: string;
  /** --chat-template: a template file or the template itself, replacing the model's; null: the model's. */
  chatTemplate: string | null;
  /**
   * --generation-config: where the sampling defaults come from (vLLM's flag): "auto" the model folder's
   * generation_config.json, "vllm" none (temperature 1, top_p 1, …), else a folder holding one.
   */
  generationConfig: string;
  host: string;
  port: number;
  /** max_tokens for requests that give none; null means up to the context length. */
  maxTokensDefault: number | null;
  /** Chat answers of a `<think>` template split into reasoning_content and content (--reasoning-parser). */
  splitReasoning: boolean;
  /** "auto" means f16 when the adapter has shader-f16 and the checkpoint is not f32. */
  dtype: WeightDtype;
  /**
   * Activations of the quantized kernels (affine decode GEMVs, and every engine row of affine and LUT
   * weights): int8 per 32 columns ("q8", faster) or exact "f32".
   */
  decodeActivations: "q8" | "f32";
  /** --quantize and its options (inference/quantize/options.ts), activated at startup; null without. */
  quant: QuantConfig | null;
  /** --artifacts-dir: where quantized models are written, cached and listed. */
  artifactsDir: string;
  /** --calib-dir (repeatable): the only places HTTP calibration/eval files and dataset names may come from. */
  calibDirs: readonly string[];
  /** --calib-gpu-memory: bytes of calibration hidden states a quantize job keeps on the GPU (Infinity: all). */
  calibGpuMemory: number;
  /** Continuous batching and the KV cache. */
  serving: ServingConfig;
  /** Where repo ids in --model are looked up and downloaded. */
  hub: HubConfig;
  /** Who may call what (server/middleware/auth.ts). */
  auth: AuthConfig;
  /** Request size limits. */
  limits: LimitsConfig;
  /** One JSON line per request on stdout (--disable-log-requests turns it off). */
  logRequests: boolean;
  /**
   * --allowed-origins: the web origins whose pages may call the API from a browser (CORS); "*" any (the
   * default, as vLLM's); an empty list: none (no CORS headers at all).
   */
  allowedOrigins: readonly string[];
  /** --ssl-certfile and --ssl-keyfile: serve HTTPS with this PEM certificate chain and key; null: HTTP. */
  tls: { certFile: string; keyFile: string } | null;
  /** On SIGTERM/SIGINT, how long in-flight requests may run before they are cut. */
  shutdownGraceSeconds: number;
}

/** How many requests are served at once and how the KV cache is sized. */
export interface ServingConfig {
  /** Sequences decoding at once. */
  maxNumSeqs: number;
  /** Rows of one forward: a token of every running sequence plus pieces of prompts (chunked prefill). */
  maxNumBatchedTokens: number;
  /** Prompt rows per prefill forward while other sequences decode (≤ maxNumBatchedTokens). */
  decodingPrefillTokens: number;
  /** Context per sequence; null means the model's, capped so one sequence fits the cache. */
  maxModelLen: number | null;
  /** KV cache budget: bytes, or a fraction of max-num-seqs full-length sequences; null: the default. */
  kvCacheMemory: { bytes: number } | { fraction: number } | null;
  kvCacheDtype: "f16" | "f32" | "int8";
  /** Sequences waiting for a slot before new requests get 429. */
  maxQueuedRequests: number;
  /** One-row decode steps take the batched kernels too, so a sequence's bits never depend on its batch. */
  batchInvariant: boolean;
  /** Full KV blocks stay cached for later prompts with the same start (off: --no-enable-prefix-caching). */
  prefixCaching: boolean;
  /** --scheduling-policy: first come first served, or by each request's `priority` (lower first). */
  schedulingPolicy: "fcfs" | "priority";
}

/** API keys; empty lists mean an open API and a disabled admin API. */
export interface AuthConfig {
  /** Keys accepted on /v1/* (except the admin routes), /tokenize and /detokenize. */
  apiKeys: readonly string[];
  /** Keys accepted everywhere, and the only ones accepted on /v1/quantize* and /v1/artifacts*. */
  adminKeys: readonly string[];
  /** /metrics asks for a key too. */
  metricsRequireKey: boolean;
}

/** Limits on what a client may send. */
export interface LimitsConfig {
  /** Largest request body; larger ones get a 413. */
  maxBodyBytes: number;
  /** Longest prompt in tokens; null means up to the context length. */
  maxPromptTokens: number | null;
}

/** Default of --max-body-bytes: 4 MiB, far above any chat a small context holds. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

/** A bad command line; main.ts prints the message and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Printed by --help. */
export const HELP_TEXT = `leanserve: an OpenAI-compatible LLM server on WebGPU, with LeanQuant quantization

Usage: deno task start [--model <dir|org/name[@revision]>] [options]

Serving:
  --model <dir|repo>          A Hugging Face model folder (config.json, *.safetensors, tokenizer.json), or a
                              repo id org/name[@revision] downloaded into the Hugging Face cache
                              (default ${DEFAULT_MODEL})
  --hf-cache <dir>            Hugging Face hub cache (default: $HF_HUB_CACHE, else $HF_HOME/hub, else
                              ~/.cache/huggingface/hub)
  --host <addr>               Address to listen on (default: $HOST, else 127.0.0.1)
  --port <n>                  Port to listen on (default: $PORT, else 8000)
  --served-model-name <name>  Model name reported by the API (default: the folder's or repo's name)
  --max-tokens-default <n>    max_tokens for requests that give none (default: up to the context length)
  --chat-template <file|text> A Jinja chat template file, or the template itself, instead of the model's
                              (a base model gets chat; a model's broken template is replaced)
  --generation-config <auto|vllm|dir>
                              Sampling defaults: the model's generation_config.json (auto, default), none
                              (vllm: temperature 1, top_p 1, ...), or the one in dir
  --reasoning-parser <auto|none>
                              auto: a model whose chat template knows <think> blocks (Qwen3, DeepSeek-R1)
                              answers chat with its reasoning in reasoning_content, apart from content;
                              none: the text as generated (default auto)
  --dtype <auto|f32|f16>      Weight storage on the GPU (default auto: f16 when the adapter has shader-f16
                              and the checkpoint is not f32, else f32)
  --decode-activations <q8|f32>
                              The quantized kernels (affine decode GEMVs; the engine's batched rows of
                              affine and LUT weights, LUT tables then int8 per row) quantize activations
                              to int8 per 32 columns for int8 dot products (q8, default, faster), or
                              stay exact f32

Batching (many clients at once):
  --max-num-seqs <n>          Sequences decoding at once (default 64)
  --max-num-batched-tokens <n>
                              Rows per forward: one per running sequence plus prompt pieces (default 2048)
  --decoding-prefill-tokens <n>
                              Most prompt rows per prefill forward while other sequences decode; the
                              engine takes at most twice the decoding rows (at least 32), so their
                              inter-token latency stays near 3 decode steps (default: max-num-batched-tokens)
  --max-model-len <n>         Context per sequence (default: the model's, capped so one sequence fits)
  --kv-cache-memory <size>    KV cache: bytes (e.g. 8GiB, 512MiB, 2e9) or a fraction in (0, 1] of what
                              max-num-seqs sequences of max-model-len need (default: that, at most
                              8 GiB on a GPU, 512 MiB on a CPU adapter)
  --kv-cache-dtype <f16|f32|int8>
                              KV cache element type (default f16; int8: codes with a scale per head
                              row, half f16's memory)
  --max-queued-requests <n>   Sequences waiting for a slot before requests get 429 (default 1024)
  --batch-invariant           Every decode step takes the batched kernels and every prompt piece the
                              tiled attention, so a sequence's ids and logprobs never depend on what
                              shares its steps (default: steps of few rows take the faster GEMVs, pieces
                              under 256 rows the per-row attention and LUT pieces under 128 rows the
                              batched LUT kernel, whose sums differ by rounding)
  --no-enable-prefix-caching  Prefill every prompt in full (default: full KV blocks stay cached, and a
                              prompt that starts with the same ids as an earlier one, e.g. a shared
                              system prompt or a conversation's earlier turns, reuses them;
                              --enable-prefix-caching says so explicitly)
  --scheduling-policy <fcfs|priority>
                              Order of waiting requests: arrival (default), or each request's priority
                              (lower first, then arrival; preemption takes the lowest first). With fcfs a
                              request's nonzero priority is a 400

Quantization at startup (the same job as POST /v1/quantize, cached in --artifacts-dir; off with --model unless
--quantize is given; without --model the default model is quantized with leanquant-aff and these flags adjust it):
  --quantize <method>         leanquant-aff | leanquant-nu | gptq | rtn
  --bits <2|3|4>              Bits per weight (default 4)
  --group-size <n>            Columns per group, 0 or a multiple of 32; 0 = one group per row (default 128;
                              leanquant-nu always 0)
  --calib <file>              Calibration text (default: the built-in source; rtn reads none)
  --calib-dataset <name>      Calibration text by name: a file <name>[.txt] of a --calib-dir, "builtin"
                              (the Book of Genesis kept in the repository) or "self" (sampled from the model)
  --calib-storage <s>         Calibration hidden states: auto (default) | f32 | f16 (half memory, lossy)
  --calib-gpu-memory <size>   Of those states, how much stays on the GPU: a size (default 1792MiB: an 8B
                              model quantizes in under 6 GB) or "all" (faster); the rest streams from host
                              memory, with the same results (also for POST /v1/quantize jobs)
  --quantize-lm-head <0|4|6|8>  Also quantize the LM head (affine g128; default 0 = full precision)
  --nsamples <n>              Calibration windows (default 128; 32 on a CPU adapter)
  --seqlen <n>                Tokens per window (default min(context, 2048); 512 on a CPU adapter)
  --seed <n>                  Seed of the calibration draw and k-means (default 0)
  --no-act-order              Quantize columns in stored order (default: act-order, except rtn)
  --percdamp <x>              Damping λ = x · mean(diag H) (default 0.01)
  --exponent <p>              LeanQuant importance exponent (default 4)
  --aff-t <T>                 leanquant-aff range steps (default 2048)

Quantization API (POST /v1/quantize, /v1/artifacts):
  --artifacts-dir <dir>       Where quantized models are written and found (default ./${DEFAULT_ARTIFACTS_DIR})
  --calib-dir <dir>           A directory that calibration.file, eval.file and dataset names may read from;
                              repeat for several (default: none, so only inline text and "builtin")

Operations:
  --api-key <key>             Require this key (Authorization: Bearer <key>) on /v1/*, /tokenize and
                              /detokenize. Repeat for several. Default: $LEANSERVE_API_KEY (comma-separated),
                              else no key needed
  --admin-key <key>           Key for the admin API (/v1/quantize*, /v1/artifacts*), also valid wherever an
                              API key is. Repeat for several. Default: $LEANSERVE_ADMIN_KEY, else the admin
                              API answers 403
  --metrics-require-key       /metrics asks for an API or admin key too (default: public)
  --max-body-bytes <n>        Largest request body in bytes; larger gets 413 (default 4194304)
  --max-prompt-tokens <n>     Longest prompt in tokens; longer gets 400 (default: the context length)
  --disable-log-requests      No JSON line per request on stdout (default: one line per request)
  --allowed-origins <list>    Web origins whose pages may call the API from a browser (CORS), comma-
                              separated (https://app.example.com,http://localhost:3000); "*" any (default);
                              "none" sends no CORS headers
  --ssl-certfile <file>       Serve HTTPS with this PEM certificate (chain); needs --ssl-keyfile
  --ssl-keyfile <file>        The PEM private key of --ssl-certfile
  --shutdown-grace-seconds <n>
                              On SIGTERM/SIGINT, let in-flight requests finish for this long, then cut
                              them (default 10)

  -h, --help                  Show this help

Environment: PORT, HOST; HF_HOME, HF_HUB_CACHE, HF_TOKEN (gated and private repos), HF_HUB_OFFLINE=1 (use
the cache only), HF_ENDPOINT (a mirror of the hub)
`;

const VALUE_FLAGS = [
  "--model",
  "--hf-cache",
  "--host",
  "--port",
  "--served-model-name",
  "--chat-template",
  "--generation-config",
  "--max-tokens-default",
  "--reasoning-parser",
  "--dtype",
  "--decode-activations",
  "--quantize",
  "--max-num-seqs",
  "--max-num-batched-tokens",
  "--decoding-prefill-tokens",
  "--max-model-len",
  "--kv-cache-memory",
  "--kv-cache-dtype",
  "--scheduling-policy",
  "--max-queued-requests",
  "--artifacts-dir",
  "--calib-dir",
  "--calib-gpu-memory",
  "--api-key",
  "--admin-key",
  "--max-body-bytes",
  "--max-prompt-tokens",
  "--shutdown-grace-seconds",
  "--allowed-origins",
  "--ssl-certfile",
  "--ssl-keyfile",
  ...Object.values(FLAG_LABELS).filter((f) => f !== "--method" && f !== "--no-act-order"),
];
/** Flags without a value. */
const SWITCH_FLAGS = [
  "--no-act-order",
  "--metrics-require-key",
  "--disable-log-requests",
  "--batch-invariant",
  "--enable-prefix-caching",
  "--no-enable-prefix-caching",
];
/** Flags that may be given several times; every value counts. */
const REPEATABLE = ["--calib-dir", "--api-key", "--admin-key"];
/** The quantize options' flags, with --quantize naming the method. */
const QUANT_LABELS = { ...FLAG_LABELS, method: "--quantize" };
const QUANT_ONLY = Object.values(FLAG_LABELS).filter((f) => f !== "--method");

/**
 * Parses the command line.
 * @param args Command-line arguments (Deno.args), `--flag value` or `--flag=value`.
 * @param env Environment variables: PORT and HOST (fallbacks of --port and --host), LEANSERVE_API_KEY and
 *   LEANSERVE_ADMIN_KEY (fallbacks of --api-key and --admin-key, comma-separated) and the Hugging Face
 *   variables of HubConfig.
 * @returns The frozen config; throws ConfigError with a message naming the flag.
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const config = parseConfig(["--model", "models/lq-49m", "--quantize", "rtn"], {});
 * console.assert(config.port === 8000 && config.quant?.bits === 4);
 * ```
 */
export function parseConfig(args: string[], env: Record<string, string | undefined>): Config {
  const flags = readFlags(args);
  const help = flags.has("--help");
  const model = flags.get("--model") ?? DEFAULT_MODEL;
  if (model === "") throw new ConfigError('Cannot use --model "": expected a folder or a repo id');

  const portText = flags.get("--port") ?? env.PORT;
  const config: Config = {
    help,
    model,
    servedModelName: flags.get("--served-model-name") ?? defaultServedName(model),
    chatTemplate: flags.get("--chat-template") ?? null,
    generationConfig: flags.get("--generation-config") ?? "auto",
    host: flags.get("--host") ?? env.HOST ?? "127.0.0.1",
    port: portText === undefined ? 8000 : int(portText, flags.has("--port") ? "--port" : "PORT", 1, 65535),
    maxTokensDefault: optionalInt(flags, "--max-tokens-default", 1, Number.MAX_SAFE_INTEGER) ?? null,
    splitReasoning:
      oneOf(flags.get("--reasoning-parser") ?? "auto", "--reasoning-parser", ["auto", "none"] as const) ===
        "auto",
    dtype: oneOf(flags.get("--dtype") ?? "auto", "--dtype", ["auto", "f32", "f16"] as const),
    decodeActivations: oneOf(
      flags.get("--decode-activations") ?? "q8",
      "--decode-activations",
      ["q8", "f32"] as const,
    ),
    // Without --model the default model is served, quantized at startup (cached in --artifacts-dir).
    quant: parseQuant(flags),
    artifactsDir: flags.get("--artifacts-dir") ?? DEFAULT_ARTIFACTS_DIR,
    calibDirs: Object.freeze(flags.lists.get("--calib-dir") ?? []),
    calibGpuMemory: parseCalibGpuMemorySafely(flags.get("--calib-gpu-memory")),
    serving: parseServing(flags),
    hub: parseHub(flags, env),
    auth: parseAuth(flags, env),
    limits: {
      maxBodyBytes: optionalInt(flags, "--max-body-bytes", 1, 2 ** 40) ?? DEFAULT_MAX_BODY_BYTES,
      maxPromptTokens: optionalInt(flags, "--max-prompt-tokens", 1, Number.MAX_SAFE_INTEGER) ?? null,
    },
    logRequests: !flags.has("--disable-log-requests"),
    allowedOrigins: Object.freeze(parseOrigins(flags.get("--allowed-origins") ?? "*")),
    tls: parseTls(flags.get("--ssl-certfile"), flags.get("--ssl-keyfile")),
    shutdownGraceSeconds: optionalInt(flags, "--shutdown-grace-seconds", 0, 3600) ?? 10,
  };
  if (config.artifactsDir === "") throw new ConfigError('Cannot use --artifacts-dir "": expected a folder');
  if (config.calibDirs.includes("")) throw new ConfigError('Cannot use --calib-dir "": expected a folder');
  if (config.host === "") throw new ConfigError('Cannot use --host "": expected an address');
  if (config.generationConfig === "") {
    throw new ConfigError('Cannot use --generation-config "": expected auto, vllm or a folder');
  }
  if (config.chatTemplate === "") {
    throw new ConfigError('Cannot use --chat-template "": expected a template file or a template');
  }
  if (!help && config.servedModelName === "") {
    throw new ConfigError('Cannot use --served-model-name "": expected a name');
  }
  return Object.freeze({
    ...config,
    quant: config.quant && Object.freeze(config.quant),
    serving: Object.freeze(config.serving),
    hub: Object.freeze(config.hub),
    auth: Object.freeze(config.auth),
    limits: Object.freeze(config.limits),
    tls: config.tls && Object.freeze(config.tls),
  });
}

/** --allowed-origins: "*", "none", or a comma-separated list of origins (scheme://host[:port]). */
function parseOrigins(text: string): string[] {
  if (text === "*") return ["*"];
  if (text === "none") return [];
  const origins = text.split(",").map((o) => o.trim());
  for (const o of origins) {
    let url: URL | null = null;
    try {
      url = new URL(o);
    } catch {
      // reported below
    }
    // An origin is exactly scheme://host[:port]: what a browser sends in the Origin header, compared as text.
    if (!url || !/^https?:$/.test(url.protocol) || url.origin !== o) {
      throw new ConfigError(
        `Cannot use --allowed-origins "${text}": "${o}" is not an origin like https://app.example.com ` +
          `(scheme, host and port only); or use "*" or "none"`,
      );
    }
  }
  return origins;
}

/** --ssl-certfile and --ssl-keyfile: both or neither. */
function parseTls(certFile: string | undefined, keyFile: string | undefined): Config["tls"] {
  if (certFile === undefined && keyFile === undefined) return null;
  if (!certFile || !keyFile) {
    throw new ConfigError("Cannot serve HTTPS: give both --ssl-certfile and --ssl-keyfile");
  }
  return { certFile, keyFile };
}

function parseServing(flags: Map<string, string>): ServingConfig {
  if (flags.has("--enable-prefix-caching") && flags.has("--no-enable-prefix-caching")) {
    throw new ConfigError("Cannot use both --enable-prefix-caching and --no-enable-prefix-caching");
  }
  const maxNumSeqs = optionalInt(flags, "--max-num-seqs", 1, 4096) ?? 64;
  const maxNumBatchedTokens = optionalInt(flags, "--max-num-batched-tokens", 1, 1 << 20) ??
    Math.max(2048, maxNumSeqs);
  if (maxNumBatchedTokens < maxNumSeqs) {
    throw new ConfigError(
      `Cannot use --max-num-batched-tokens ${maxNumBatchedTokens}: a forward must hold a row of each of ` +
        `--max-num-seqs ${maxNumSeqs} sequences`,
    );
  }
  const decodingPrefillTokens = optionalInt(flags, "--decoding-prefill-tokens", 1, 1 << 20) ??
    maxNumBatchedTokens;
  if (decodingPrefillTokens > maxNumBatchedTokens) {
    throw new ConfigError(
      `Cannot use --decoding-prefill-tokens ${decodingPrefillTokens}: a forward holds at most ` +
        `--max-num-batched-tokens ${maxNumBatchedTokens} rows`,
    );
  }
  return {
    maxNumSeqs,
    maxNumBatchedTokens,
    decodingPrefillTokens,
    maxModelLen: optionalInt(flags, "--max-model-len", 2, 1 << 24) ?? null,
    kvCacheMemory: parseMemory(flags.get("--kv-cache-memory")),
    kvCacheDtype: oneOf(
      flags.get("--kv-cache-dtype") ?? "f16",
      "--kv-cache-dtype",
      ["f16", "f32", "int8"] as const,
    ),
    maxQueuedRequests: optionalInt(flags, "--max-queued-requests", 0, 1 << 24) ?? 1024,
    batchInvariant: flags.has("--batch-invariant"),
    prefixCaching: !flags.has("--no-enable-prefix-caching"),
    schedulingPolicy: oneOf(
      flags.get("--scheduling-policy") ?? "fcfs",
      "--scheduling-policy",
      ["fcfs", "priority"] as const,
    ),
  };
}

/** `--kv-cache-memory`: "8GiB", "512MiB", "2e9" (bytes) or "0.5" (a fraction in (0, 1]). */
function parseMemory(text: string | undefined): ServingConfig["kvCacheMemory"] {
  if (text === undefined) return null;
  const size = parseSize(text);
  if (!size || !(size.value > 0)) {
    throw new ConfigError(
      `Cannot use --kv-cache-memory "${text}": expected bytes (e.g. 8GiB, 512MiB, 2e9) or a fraction in (0, 1]`,
    );
  }
  if (size.unit === "" && size.value <= 1) return { fraction: size.value };
  return { bytes: size.bytes };
}

/** `--calib-gpu-memory` (inference/quantize/options.ts), its error as a ConfigError. */
function parseCalibGpuMemorySafely(text: string | undefined): number {
  if (text === undefined) return DEFAULT_GPU_HIDDEN_BYTES;
  try {
    return parseCalibGpuMemory(text);
  } catch (err) {
    if (err instanceof QuantizeOptionsError) throw new ConfigError(err.message);
    throw err;
  }
}

/** The folder's name; for a repo id `org/name@rev`, `name`. */
function defaultServedName(model: string): string {
  const name = basename(model.replace(/[\\/]+$/, ""));
  return /^[\w.-]+\/[\w.-]+@/.test(model) ? name.slice(0, name.indexOf("@")) : name;
}

/** The Hugging Face variables, with huggingface_hub's defaults and precedence (constants.py). */
function parseHub(flags: Map<string, string>, env: Record<string, string | undefined>): HubConfig {
  const home = env.HF_HOME || join(env.XDG_CACHE_HOME || join(env.HOME || ".", ".cache"), "huggingface");
  const cacheDir = flags.get("--hf-cache") ??
    (env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(home, "hub"));
  if (cacheDir === "") throw new ConfigError('Cannot use --hf-cache "": expected a folder');
  const endpoint = (env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT).replace(/\/+$/, "");
  if (!URL.canParse(endpoint) || !/^https?:$/.test(new URL(endpoint).protocol)) {
    throw new ConfigError(`Cannot use HF_ENDPOINT "${env.HF_ENDPOINT}": expected an http(s) URL`);
  }
  return {
    cacheDir,
    token: env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || null,
    tokenFile: env.HF_TOKEN_PATH || join(home, "token"),
    offline: ["1", "ON", "YES", "TRUE"].includes((env.HF_HUB_OFFLINE ?? "").toUpperCase()),
    endpoint,
  };
}

/** Flags win over the environment; a key never appears in an error message (it is a secret). */
function parseAuth(flags: FlagMap, env: Record<string, string | undefined>): AuthConfig {
  const keys = (flag: string, envName: string) => {
    const given = flags.lists.get(flag);
    const list = given ?? (env[envName] ?? "").split(",").map((k) => k.trim()).filter((k) => k !== "");
    const where = given ? flag : envName;
    for (const key of list) {
      if (!/^[\x21-\x7e]+$/.test(key) || key.includes(",")) {
        throw new ConfigError(
          `Cannot use a key of ${where}: expected printable ASCII without spaces or commas`,
        );
      }
    }
    return Object.freeze([...new Set(list)]);
  };
  const apiKeys = keys("--api-key", "LEANSERVE_API_KEY");
  const adminKeys = keys("--admin-key", "LEANSERVE_ADMIN_KEY");
  const metricsRequireKey = flags.has("--metrics-require-key");
  if (metricsRequireKey && apiKeys.length + adminKeys.length === 0) {
    throw new ConfigError(
      "Cannot use --metrics-require-key without --api-key or --admin-key: it has no effect",
    );
  }
  return { apiKeys, adminKeys, metricsRequireKey };
}

/**
 * --quantize and its options, validated by the request validator the CLI and HTTP API share. Without --model
 * the default model is quantized anyway, and the options (e.g. --nsamples) adjust its request.
 */
function parseQuant(flags: FlagMap): QuantConfig | null {
  const base = flags.has("--quantize") ? {} : DEFAULT_MODEL_QUANTIZE_RAW;
  if (!flags.has("--quantize")) {
    const stray = QUANT_ONLY.find((f) => flags.has(f));
    if (flags.has("--model")) {
      if (stray) throw new ConfigError(`Cannot use ${stray} without --quantize`);
      return null;
    }
    if (!stray) return DEFAULT_MODEL_QUANTIZE;
  }
  try {
    const raw = rawFromFlags((f) => flags.has(f) ? flags.get(f) : undefined, QUANT_LABELS);
    return parseQuantizeRequest({ ...base, ...raw, activate: true }, { labels: QUANT_LABELS, strings: true });
  } catch (err) {
    if (err instanceof QuantizeOptionsError) throw new ConfigError(err.message);
    throw err;
  }
}

/** Flag → its last value, plus every value of the repeatable flags in `lists`. */
class FlagMap extends Map<string, string> {
  readonly lists = new Map<string, string[]>();
}

/** `--flag value` and `--flag=value` into a map; the last repeat wins. `--help` maps to "". */
function readFlags(args: string[]): FlagMap {
  const flags = new FlagMap();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") {
      flags.set("--help", "");
      continue;
    }
    if (!arg.startsWith("--")) throw new ConfigError(`Cannot use argument "${arg}": options start with --`);
    const eq = arg.indexOf("=");
    const name = eq < 0 ? arg : arg.slice(0, eq);
    if (SWITCH_FLAGS.includes(name)) {
      if (eq >= 0) throw new ConfigError(`Cannot give ${name} a value: it is a switch`);
      flags.set(name, "");
      continue;
    }
    if (!VALUE_FLAGS.includes(name)) throw new ConfigError(`Cannot use unknown option ${name}: see --help`);
    const value = eq < 0 ? args[++i] : arg.slice(eq + 1);
    if (value === undefined || (eq < 0 && value.startsWith("--"))) {
      throw new ConfigError(`Missing value for ${name}`);
    }
    flags.set(name, value);
    if (REPEATABLE.includes(name)) flags.lists.set(name, [...(flags.lists.get(name) ?? []), value]);
  }
  return flags;
}

function int(text: string, name: string, min: number, max: number): number {
  const n = /^-?\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`Cannot use ${name} "${text}": expected an integer from ${min} to ${max}`);
  }
  return n;
}

function optionalInt(flags: Map<string, string>, name: string, min: number, max: number): number | undefined {
  const text = flags.get(name);
  return text === undefined ? undefined : int(text, name, min, max);
}

function oneOf<T extends string>(text: string, name: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) {
    throw new ConfigError(`Cannot use ${name} "${text}": expected one of ${allowed.join(", ")}`);
  }
  return text as T;
}
