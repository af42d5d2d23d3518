/**
 * Command-line configuration: defaults, help text and validation in one place (docs/style.md I).
 * parseConfig is pure: main.ts passes Deno.args and the environment in. Bad values are errors, never clamps.
 */
import { basename } from "node:path";

/** Quantization methods (see docs/quantization.md). */
export const QUANT_METHODS = ["rtn", "gptq", "leanquant-nu", "leanquant-aff"] as const;
/** How weights are quantized at load. */
export type QuantMethod = typeof QUANT_METHODS[number];
/** Weight storage on the GPU. */
export type WeightDtype = "auto" | "f32" | "f16";

/** Quantization settings; present only with --quantize. */
export interface QuantConfig {
  method: QuantMethod;
  /** Bits per weight code. */
  bits: 2 | 3 | 4;
  /** Columns per scale group; 0 means one group per row. Unused by leanquant-nu (one grid per row). */
  groupSize: number;
  /** Calibration text file, or "builtin" (the default of gptq and leanquant-*); null for rtn, which needs none. */
  calib: string | null;
  /** LM head bits: 0 keeps it in full precision (quant/types.ts `lmHeadBits`). */
  lmHeadBits: 0 | 4 | 6 | 8;
  /** Calibration sequences drawn from the file (GPTQ's --nsamples). */
  nsamples: number;
  /** Seed of the calibration draw and the k-means init. */
  seed: number;
}

/** The whole server configuration, frozen. */
export interface Config {
  /** --help was given: print HELP_TEXT and exit; the other fields are defaults. */
  help: boolean;
  /** The Hugging Face model folder; "" only when help is true. */
  model: string;
  /** Name reported as `model` in responses; defaults to the model folder's name. */
  servedModelName: string;
  host: string;
  port: number;
  /** max_tokens for requests that give none; null means up to the context length. */
  maxTokensDefault: number | null;
  /** "auto" means f16 when the adapter has shader-f16 and the checkpoint is not f32. */
  dtype: WeightDtype;
  /** Decode activations of affine GEMVs: int8 per 32 columns ("q8", faster) or exact "f32". */
  decodeActivations: "q8" | "f32";
  quant: QuantConfig | null;
  /** Continuous batching and the KV cache. */
  serving: ServingConfig;
  /** Who may call what (server/middleware/auth.ts). */
  auth: AuthConfig;
  /** Request size limits. */
  limits: LimitsConfig;
  /** One JSON line per request on stdout (--disable-log-requests turns it off). */
  logRequests: boolean;
  /** On SIGTERM/SIGINT, how long in-flight requests may run before they are cut. */
  shutdownGraceSeconds: number;
}

/** How many requests are served at once and how the KV cache is sized. */
export interface ServingConfig {
  /** Sequences decoding at once. */
  maxNumSeqs: number;
  /** Rows of one forward: a token of every running sequence plus pieces of prompts (chunked prefill). */
  maxNumBatchedTokens: number;
  /** Context per sequence; null means the model's, capped so one sequence fits the cache. */
  maxModelLen: number | null;
  /** KV cache budget: bytes, or a fraction of max-num-seqs full-length sequences; null: the default. */
  kvCacheMemory: { bytes: number } | { fraction: number } | null;
  kvCacheDtype: "f16" | "f32";
  /** Sequences waiting for a slot before new requests get 429. */
  maxQueuedRequests: number;
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

Usage: deno task start --model <dir> [options]

Serving:
  --model <dir>               Hugging Face model folder (config.json, *.safetensors, tokenizer.json). Required
  --host <addr>               Address to listen on (default 127.0.0.1)
  --port <n>                  Port to listen on (default: $PORT, else 8000)
  --served-model-name <name>  Model name reported by the API (default: the model folder's name)
  --max-tokens-default <n>    max_tokens for requests that give none (default: up to the context length)
  --dtype <auto|f32|f16>      Weight storage on the GPU (default auto: f16 when the adapter has shader-f16
                              and the checkpoint is not f32, else f32)
  --decode-activations <q8|f32>
                              Decode GEMVs of affine weights quantize activations to int8 per 32
                              columns and use int8 dot products (q8, default, faster), or stay exact f32

Batching (many clients at once):
  --max-num-seqs <n>          Sequences decoding at once (default 64)
  --max-num-batched-tokens <n>
                              Rows per forward: one per running sequence plus prompt pieces (default 512)
  --max-model-len <n>         Context per sequence (default: the model's, capped so one sequence fits)
  --kv-cache-memory <size>    KV cache: bytes (e.g. 8GiB, 512MiB, 2e9) or a fraction in (0, 1] of what
                              max-num-seqs sequences of max-model-len need (default: that, at most
                              8 GiB on a GPU, 512 MiB on a CPU adapter)
  --kv-cache-dtype <f16|f32>  KV cache element type (default f16)
  --max-queued-requests <n>   Sequences waiting for a slot before requests get 429 (default 1024)

Quantization at load (off by default):
  --quantize <method>         rtn | gptq | leanquant-nu | leanquant-aff
  --bits <2|3|4>              Bits per weight (default 4)
  --group-size <n>            Columns per group, 0 = one group per row (default 128; not for leanquant-nu)
  --calib <file>              Calibration text for gptq and leanquant-* (default: builtin, the Book of
                              Genesis kept in the repository; self: text sampled from the model first)
  --quantize-lm-head <0|4|6|8>  Also quantize the LM head (affine g128; default 0 = full precision)
  --nsamples <n>              Calibration sequences (default 128)
  --seed <n>                  Seed of the calibration draw and k-means (default 0)

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
  --shutdown-grace-seconds <n>
                              On SIGTERM/SIGINT, let in-flight requests finish for this long, then cut
                              them (default 10)

  -h, --help                  Show this help
`;

const VALUE_FLAGS = [
  "--model",
  "--host",
  "--port",
  "--served-model-name",
  "--max-tokens-default",
  "--dtype",
  "--decode-activations",
  "--quantize",
  "--bits",
  "--group-size",
  "--calib",
  "--nsamples",
  "--seed",
  "--max-num-seqs",
  "--max-num-batched-tokens",
  "--max-model-len",
  "--kv-cache-memory",
  "--kv-cache-dtype",
  "--max-queued-requests",
  "--quantize-lm-head",
  "--api-key",
  "--admin-key",
  "--max-body-bytes",
  "--max-prompt-tokens",
  "--shutdown-grace-seconds",
];
/** Flags without a value. */
const SWITCH_FLAGS = ["--metrics-require-key", "--disable-log-requests"];
/** Flags that may be given several times; every value counts. */
const REPEATABLE = ["--api-key", "--admin-key"];
const QUANT_ONLY = ["--bits", "--group-size", "--calib", "--nsamples", "--seed", "--quantize-lm-head"];
/** Flags that change nothing for a method are errors, so that a typo'd intent does not pass silently. */
const NOT_FOR: Record<QuantMethod, string[]> = {
  "rtn": ["--calib", "--nsamples", "--seed"],
  "gptq": [],
  "leanquant-nu": ["--group-size"],
  "leanquant-aff": [],
};

/**
 * Parses the command line.
 * @param args Command-line arguments (Deno.args), `--flag value` or `--flag=value`.
 * @param env Environment variables: PORT (fallback of --port), LEANSERVE_API_KEY and LEANSERVE_ADMIN_KEY
 * (fallbacks of --api-key and --admin-key, comma-separated).
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
  const model = flags.get("--model") ?? "";
  if (!help && model === "") {
    throw new ConfigError("Missing --model <dir>: the Hugging Face model folder to serve");
  }

  const portText = flags.get("--port") ?? env.PORT;
  const config: Config = {
    help,
    model,
    servedModelName: flags.get("--served-model-name") ?? basename(model.replace(/[\\/]+$/, "")),
    host: flags.get("--host") ?? "127.0.0.1",
    port: portText === undefined ? 8000 : int(portText, flags.has("--port") ? "--port" : "PORT", 1, 65535),
    maxTokensDefault: optionalInt(flags, "--max-tokens-default", 1, Number.MAX_SAFE_INTEGER) ?? null,
    dtype: oneOf(flags.get("--dtype") ?? "auto", "--dtype", ["auto", "f32", "f16"] as const),
    decodeActivations: oneOf(
      flags.get("--decode-activations") ?? "q8",
      "--decode-activations",
      ["q8", "f32"] as const,
    ),
    quant: parseQuant(flags),
    serving: parseServing(flags),
    auth: parseAuth(flags, env),
    limits: {
      maxBodyBytes: optionalInt(flags, "--max-body-bytes", 1, 2 ** 40) ?? DEFAULT_MAX_BODY_BYTES,
      maxPromptTokens: optionalInt(flags, "--max-prompt-tokens", 1, Number.MAX_SAFE_INTEGER) ?? null,
    },
    logRequests: !flags.has("--disable-log-requests"),
    shutdownGraceSeconds: optionalInt(flags, "--shutdown-grace-seconds", 0, 3600) ?? 10,
  };
  if (config.host === "") throw new ConfigError('Cannot use --host "": expected an address');
  if (!help && config.servedModelName === "") {
    throw new ConfigError('Cannot use --served-model-name "": expected a name');
  }
  return Object.freeze({
    ...config,
    quant: config.quant && Object.freeze(config.quant),
    serving: Object.freeze(config.serving),
    auth: Object.freeze(config.auth),
    limits: Object.freeze(config.limits),
  });
}

function parseServing(flags: Map<string, string>): ServingConfig {
  const maxNumSeqs = optionalInt(flags, "--max-num-seqs", 1, 4096) ?? 64;
  const maxNumBatchedTokens = optionalInt(flags, "--max-num-batched-tokens", 1, 1 << 20) ??
    Math.max(512, maxNumSeqs);
  if (maxNumBatchedTokens < maxNumSeqs) {
    throw new ConfigError(
      `Cannot use --max-num-batched-tokens ${maxNumBatchedTokens}: a forward must hold a row of each of ` +
        `--max-num-seqs ${maxNumSeqs} sequences`,
    );
  }
  return {
    maxNumSeqs,
    maxNumBatchedTokens,
    maxModelLen: optionalInt(flags, "--max-model-len", 2, 1 << 24) ?? null,
    kvCacheMemory: parseMemory(flags.get("--kv-cache-memory")),
    kvCacheDtype: oneOf(flags.get("--kv-cache-dtype") ?? "f16", "--kv-cache-dtype", ["f16", "f32"] as const),
    maxQueuedRequests: optionalInt(flags, "--max-queued-requests", 0, 1 << 24) ?? 1024,
  };
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
};

/** `--kv-cache-memory`: "8GiB", "512MiB", "2e9" (bytes) or "0.5" (a fraction in (0, 1]). */
function parseMemory(text: string | undefined): ServingConfig["kvCacheMemory"] {
  if (text === undefined) return null;
  const m = /^\s*([0-9.]+(?:e[0-9]+)?)\s*([a-z]*)\s*$/i.exec(text);
  const value = m ? Number(m[1]) : NaN;
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!(Number.isFinite(value) && value > 0) || unit === undefined) {
    throw new ConfigError(
      `Cannot use --kv-cache-memory "${text}": expected bytes (e.g. 8GiB, 512MiB, 2e9) or a fraction in (0, 1]`,
    );
  }
  if (m![2] === "" && value <= 1) return { fraction: value };
  return { bytes: Math.floor(value * unit) };
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

function parseQuant(flags: Map<string, string>): QuantConfig | null {
  const methodText = flags.get("--quantize");
  if (methodText === undefined) {
    const stray = QUANT_ONLY.find((f) => flags.has(f));
    if (stray) throw new ConfigError(`Cannot use ${stray} without --quantize`);
    return null;
  }
  const method = oneOf(methodText, "--quantize", QUANT_METHODS);
  const unused = NOT_FOR[method].find((f) => flags.has(f));
  if (unused) throw new ConfigError(`Cannot use ${unused} with --quantize ${method}: it has no effect there`);
  const calib = flags.get("--calib") ?? (method === "rtn" ? null : "builtin");
  if (calib === "") throw new ConfigError('Cannot use --calib "": expected a file');
  const lmHeadBits = Number(flags.get("--quantize-lm-head") ?? "0");
  if (![0, 4, 6, 8].includes(lmHeadBits)) {
    throw new ConfigError(
      `Invalid --quantize-lm-head "${flags.get("--quantize-lm-head")}": expected 0, 4, 6 or 8`,
    );
  }
  const bits = int(flags.get("--bits") ?? "4", "--bits", 2, 4) as 2 | 3 | 4;
  return {
    method,
    bits,
    groupSize: optionalInt(flags, "--group-size", 0, 1 << 20) ?? 128,
    calib,
    lmHeadBits: lmHeadBits as 0 | 4 | 6 | 8,
    nsamples: optionalInt(flags, "--nsamples", 1, 1 << 20) ?? 128,
    seed: optionalInt(flags, "--seed", 0, 0xffffffff) ?? 0,
  };
}

/** Flag → its last value, plus every value of the repeatable flags in `lists`. */
class FlagMap extends Map<string, string> {
  readonly lists = new Map<string, string[]>();
}

/** `--flag value` and `--flag=value` into a map; the last repeat wins. `--help` and switches map to "". */
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
