/**
 * The one definition of a quantization request, shared by `deno task quantize` (flags), the server's
 * `--quantize` (flags) and `POST /v1/quantize` (JSON): the fields, their defaults and their error messages.
 * Every front end builds a raw object with the JSON field names (flag values stay strings) and calls
 * {@link parseQuantizeRequest}; messages name the field the way its front end spells it ("group_size" or
 * "--group-size"), and {@link QuantizeOptionsError.field} always carries the JSON path for a 400's `param`.
 */
import { QUANTIZE_DEFAULTS, type QuantizeOptions, type QuantMethod } from "../../quant/mod.ts";
import { DEFAULT_NSAMPLES } from "./calibration.ts";
import type { HiddenStorageChoice } from "./quantize_model.ts";
import { SELF_CALIBRATION } from "./self_calibration.ts";

/** The methods, in the order help texts list them. */
export const QUANT_METHODS: readonly QuantMethod[] = ["leanquant-aff", "leanquant-nu", "gptq", "rtn"];

/** Largest inline `calibration.text` / `eval.text`, in UTF-8 bytes. */
export const MAX_INLINE_TEXT_BYTES = 2 * 1024 * 1024;

/** Affine group width when none is given (the fused kernels' sweet spot, AutoGPTQ's usual 128). */
export const DEFAULT_GROUP_SIZE = 128;

/** The dataset name that maps to the built-in calibration source (calibration.ts `builtinCalibration`). */
export const BUILTIN_DATASET = "builtin";

/** The dataset name that samples the calibration text from the model itself (self_calibration.ts). */
export const SELF_DATASET = SELF_CALIBRATION;

/** LM head bit widths: 0 keeps it full precision (lm_head.ts). */
export const LM_HEAD_BITS: readonly number[] = [0, 4, 6, 8];

/** How the calibration hidden states are stored (quantize_model.ts `chooseHiddenStorage`). */
const STORAGE_CHOICES: readonly HiddenStorageChoice[] = ["auto", "f32", "f16"];

/** Bytes per unit of a size flag (`--calib-gpu-memory` here, `--kv-cache-memory` in config.ts). */
const SIZE_UNITS: Readonly<Record<string, number>> = Object.freeze({
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
});

/**
 * A size such as "8GiB", "512MiB", "2e9" or "0", as a number and its unit's bytes; null when it is not one.
 * @param text the flag's value
 */
export function parseSize(text: string): { value: number; unit: string; bytes: number } | null {
  const m = /^\s*([0-9.]+(?:e[0-9]+)?)\s*([a-z]*)\s*$/i.exec(text);
  const value = m ? Number(m[1]) : NaN;
  const unit = m ? m[2].toLowerCase() : "";
  if (!m || !Number.isFinite(value) || value < 0 || !Object.hasOwn(SIZE_UNITS, unit)) return null;
  return { value, unit, bytes: Math.floor(value * SIZE_UNITS[unit]) };
}

/**
 * `--calib-gpu-memory` of the quantize task and the server: bytes of calibration hidden states kept on the GPU
 * ("all", or a size: "4GiB", "1792MiB", "0" streams every window from host memory). An execution setting, not
 * part of a request: the results are the same bits whatever it is (hidden_windows.ts), so it is not in an
 * artifact's name either. More is faster (BENCHMARKS.md "Quantization speed").
 * @param text the flag's value
 * @param flag the flag's name, for the message
 * @returns bytes, or Infinity for "all"
 */
export function parseCalibGpuMemory(text: string, flag = "--calib-gpu-memory"): number {
  if (text.trim().toLowerCase() === "all") return Infinity;
  const size = parseSize(text);
  if (!size) {
    throw new QuantizeOptionsError(
      `Cannot use ${flag} "${text}": expected "all" or a size (e.g. 4GiB, 1792MiB, 2e9, 0)`,
      "calib_gpu_memory",
    );
  }
  return size.bytes;
}

/** Where calibration or evaluation text comes from; paths and names are resolved later (inference/jobs). */
export type TextSource =
  | { kind: "file"; path: string }
  | { kind: "text"; text: string }
  | { kind: "dataset"; name: string };

/** The calibration draw; `source` null only for rtn without act-order, which never reads H. */
export interface CalibrationSpec {
  source: TextSource | null;
  nsamples: number;
  /** Tokens per window; null means min(context, 2048). */
  seqlen: number | null;
  seed: number;
  /** Storage of the calibration hidden states: "auto" (f32 unless they exceed 4 GiB), "f32" or "f16" (lossy). */
  storage: HiddenStorageChoice;
}

/** Perplexity of the served and the new model on the same windows. */
export interface EvalSpec {
  source: TextSource;
  /** Tokens per window; null means the model context. */
  ctx: number | null;
  /** null means every window of the text. */
  maxWindows: number | null;
}

/** A validated request: what to quantize with, plus the job's extras (HTTP only: eval, activate, name). */
export interface QuantizeRequest {
  quantize: QuantizeOptions;
  calibration: CalibrationSpec;
  eval: EvalSpec | null;
  activate: boolean;
  /** Artifact name; null means the deterministic one (inference/jobs `artifactName`). */
  name: string | null;
  /**
   * Which calibration budget fields the input left out and so hold the GPU defaults: the server's startup job
   * replaces those by its adapter's budget ({@link withAdapterBudget}). Absent means none (all given).
   */
  budgetDefaulted?: Readonly<{ nsamples: boolean; seqlen: boolean }>;
}

/** How much calibration text the quantizer runs through the model: windows × tokens per window. */
export interface CalibrationBudget {
  nsamples: number;
  /** null means min(context, 2048). */
  seqlen: number | null;
}

/** The budget on a GPU adapter, and of every request that names none: the paper's 128 × min(context, 2048). */
export const GPU_CALIBRATION_BUDGET: Readonly<CalibrationBudget> = Object.freeze({
  nsamples: DEFAULT_NSAMPLES,
  seqlen: null,
});

/**
 * The server's startup budget on a CPU adapter (llvmpipe/lavapipe): 32 × 512 tokens, 1/16 of the GPU budget's
 * tokens and 1/64 of its attention work, which dominate there. Even so a 360M model takes hours on two cores,
 * a third of it in the quantizer itself, which no budget shrinks (BENCHMARKS.md "First start of the default
 * model", with the perplexity this budget costs).
 */
export const CPU_CALIBRATION_BUDGET: Readonly<CalibrationBudget> = Object.freeze({
  nsamples: 32,
  seqlen: 512,
});

/**
 * The startup calibration budget for an adapter.
 * @param adapter the GPU (kernels/core `Gpu`), or anything telling whether it is a CPU adapter
 * @returns {@link CPU_CALIBRATION_BUDGET} on a CPU adapter, else {@link GPU_CALIBRATION_BUDGET}
 */
export function calibrationBudgetFor(adapter: { readonly isCpu: boolean }): Readonly<CalibrationBudget> {
  return adapter.isCpu ? CPU_CALIBRATION_BUDGET : GPU_CALIBRATION_BUDGET;
}

/**
 * The request with the adapter's budget in the calibration fields it left out (an explicit --nsamples or
 * --seqlen is kept). The budget is part of {@link requestToJson}, hence of the artifact name: a GPU host does
 * not serve an artifact calibrated on a CPU host's smaller budget.
 * @param request a validated request
 * @param adapter where the startup job runs
 * @param contextLength the model's context: a fixed window length is capped to it, as min(context, 2048) is
 * @returns a new request (the same one when nothing changes or it reads no calibration)
 */
export function withAdapterBudget(
  request: QuantizeRequest,
  adapter: { readonly isCpu: boolean },
  contextLength = Infinity,
): QuantizeRequest {
  const d = request.budgetDefaulted;
  if (!d || request.calibration.source === null) return request;
  const budget = calibrationBudgetFor(adapter);
  const seqlen = budget.seqlen === null ? null : Math.min(budget.seqlen, contextLength);
  const calibration = {
    ...request.calibration,
    ...(d.nsamples ? { nsamples: budget.nsamples } : {}),
    ...(d.seqlen ? { seqlen } : {}),
  };
  return { ...request, calibration };
}

/** A field at fault; `field` is the JSON path (e.g. "calibration.nsamples"). */
export class QuantizeOptionsError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = "QuantizeOptionsError";
  }
}

/** How the raw values arrive: JSON values, or flag strings with each field's flag name. */
export interface ParseStyle {
  /** Field → how messages name it (e.g. "group_size" → "--group-size"); others keep their JSON name. */
  labels?: Readonly<Record<string, string>>;
  /** Values are strings from a command line (numbers parsed from text). */
  strings?: boolean;
}

/** The flags of the quantize task and of the server's --quantize, by field. */
export const FLAG_LABELS: Readonly<Record<string, string>> = {
  method: "--method",
  bits: "--bits",
  group_size: "--group-size",
  act_order: "--no-act-order",
  percdamp: "--percdamp",
  exponent: "--exponent",
  aff_t: "--aff-t",
  lm_head_bits: "--quantize-lm-head",
  "calibration.file": "--calib",
  "calibration.dataset": "--calib-dataset",
  "calibration.nsamples": "--nsamples",
  "calibration.seqlen": "--seqlen",
  "calibration.seed": "--seed",
  "calibration.storage": "--calib-storage",
};

const TOP_FIELDS = [
  "method",
  "bits",
  "group_size",
  "act_order",
  "percdamp",
  "exponent",
  "aff_t",
  "lm_head_bits",
];
const REQUEST_FIELDS = [...TOP_FIELDS, "calibration", "eval", "activate", "name"];
const SOURCE_FIELDS = ["text", "file", "dataset"];
const CALIBRATION_FIELDS = [...SOURCE_FIELDS, "nsamples", "seqlen", "seed", "storage"];
const EVAL_FIELDS = [...SOURCE_FIELDS, "ctx", "max_windows"];
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Builds the raw request from flag values (absent flags stay absent).
 * @param get the value of a flag, or undefined
 * @param labels field → flag (default FLAG_LABELS; the server names method `--quantize`)
 * @returns the raw object for {@link parseQuantizeRequest} with `{ strings: true }`
 */
export function rawFromFlags(
  get: (flag: string) => string | boolean | undefined,
  labels: Readonly<Record<string, string>> = FLAG_LABELS,
): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  const calibration: Record<string, unknown> = {};
  for (const [field, flag] of Object.entries(labels)) {
    const value = get(flag);
    if (value === undefined || value === false) continue;
    const v = field === "act_order" ? false : value; // --no-act-order is a switch
    if (field.startsWith("calibration.")) calibration[field.slice(12)] = v;
    else raw[field] = v;
  }
  if (Object.keys(calibration).length > 0) raw.calibration = calibration;
  return raw;
}

/**
 * Validates a request and fills the defaults: bits 4; group_size 128 (0 = one grid per row; leanquant-nu
 * always 0); act_order on except for rtn; percdamp 0.01, exponent 4, aff_t 2048; calibration from the
 * built-in source unless rtn without act-order (which reads none and refuses any), nsamples 128, seqlen
 * min(context, 2048), seed 0, storage auto; lm_head_bits 0 (full-precision head); no eval; activate false;
 * the deterministic name. `budgetDefaulted` records whether nsamples and seqlen took their defaults.
 * @param input the JSON body, or {@link rawFromFlags}'s object
 * @param style how values arrive and how messages name fields
 * @returns the request; throws QuantizeOptionsError naming the field
 */
export function parseQuantizeRequest(input: unknown, style: ParseStyle = {}): QuantizeRequest {
  const v = new Reader(style);
  const raw = v.object(input, "", REQUEST_FIELDS);
  const method = v.oneOf(raw.method, "method", QUANT_METHODS);
  const bits = v.int(raw.bits, "bits", 2, 4, 4) as 2 | 3 | 4;
  const nu = method === "leanquant-nu";
  const groupSize = v.int(raw.group_size, "group_size", 0, 1 << 20, nu ? 0 : DEFAULT_GROUP_SIZE);
  if (groupSize % 32 !== 0) v.fail("group_size", raw.group_size, "expected 0 or a multiple of 32");
  if (nu && groupSize !== 0) {
    throw v.error(
      "group_size",
      `Cannot use ${v.show("group_size", raw.group_size)} with ${
        v.label("method")
      } leanquant-nu: it keeps one table per row`,
    );
  }
  const actOrder = v.bool(raw.act_order, "act_order", method !== "rtn");
  const quantize: QuantizeOptions = {
    ...QUANTIZE_DEFAULTS,
    method,
    bits,
    groupSize,
    actOrder,
    percdamp: v.num(raw.percdamp, "percdamp", (x) => x >= 0, "a number ≥ 0", QUANTIZE_DEFAULTS.percdamp),
    exponent: v.num(raw.exponent, "exponent", (x) => x > 0, "a number > 0", QUANTIZE_DEFAULTS.exponent),
    affT: v.int(raw.aff_t, "aff_t", 1, 1 << 20, QUANTIZE_DEFAULTS.affT),
    lmHeadBits: v.oneOfNumbers(
      raw.lm_head_bits,
      "lm_head_bits",
      LM_HEAD_BITS,
      0,
    ) as QuantizeOptions["lmHeadBits"],
  };
  const needsCalibration = method !== "rtn" || actOrder;
  const c = v.object(raw.calibration ?? {}, "calibration", CALIBRATION_FIELDS);
  if (!needsCalibration) {
    const given = CALIBRATION_FIELDS.find((f) => c[f] !== undefined && c[f] !== null);
    if (given) {
      throw v.error(
        `calibration.${given}`,
        `Cannot use ${v.label(`calibration.${given}`)} with ${
          v.label("method")
        } rtn: without act-order rtn reads no calibration`,
      );
    }
  }
  const calibration: CalibrationSpec = {
    source: needsCalibration
      ? v.source(c, "calibration") ?? { kind: "dataset", name: BUILTIN_DATASET }
      : null,
    nsamples: v.int(c.nsamples, "calibration.nsamples", 1, 1 << 20, DEFAULT_NSAMPLES),
    seqlen: v.optionalInt(c.seqlen, "calibration.seqlen", 2),
    seed: v.int(c.seed, "calibration.seed", 0, 0xffffffff, 0),
    storage: c.storage === undefined || c.storage === null
      ? "auto"
      : v.oneOf(c.storage, "calibration.storage", STORAGE_CHOICES),
  };
  let evalSpec: EvalSpec | null = null;
  if (raw.eval !== undefined && raw.eval !== null) {
    const e = v.object(raw.eval, "eval", EVAL_FIELDS);
    const source = v.source(e, "eval");
    if (!source) throw v.error("eval", "Missing eval.text, eval.file or eval.dataset: the evaluation text");
    evalSpec = {
      source,
      ctx: v.optionalInt(e.ctx, "eval.ctx", 2),
      maxWindows: v.optionalInt(e.max_windows, "eval.max_windows", 1),
    };
  }
  const name = raw.name === undefined || raw.name === null ? null : v.string(raw.name, "name");
  if (name !== null && !NAME_RE.test(name)) {
    v.fail(
      "name",
      name,
      "expected 1–128 letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'",
    );
  }
  const budgetDefaulted = {
    nsamples: c.nsamples === undefined || c.nsamples === null,
    seqlen: calibration.seqlen === null,
  };
  return {
    quantize,
    calibration,
    eval: evalSpec,
    activate: v.bool(raw.activate, "activate", false),
    name,
    budgetDefaulted,
  };
}

/**
 * The request as JSON (snake_case, every default filled): the job's `options`, the manifest's record and
 * the input of the artifact name's hash.
 * @param r a validated request
 * @returns a plain object
 */
export function requestToJson(r: Pick<QuantizeRequest, "quantize" | "calibration">): Record<string, unknown> {
  const q = r.quantize;
  const c = r.calibration;
  return {
    method: q.method,
    bits: q.bits,
    group_size: q.groupSize,
    act_order: q.actOrder,
    percdamp: q.percdamp,
    exponent: q.exponent,
    aff_t: q.affT,
    lm_head_bits: q.lmHeadBits,
    calibration: c.source === null ? null : {
      ...sourceToJson(c.source),
      nsamples: c.nsamples,
      seqlen: c.seqlen,
      seed: c.seed,
      storage: c.storage,
    },
  };
}

/** A text source as JSON; inline text is summarised by its length (it can be megabytes). */
export function sourceToJson(s: TextSource): Record<string, unknown> {
  if (s.kind === "file") return { file: s.path };
  if (s.kind === "dataset") return { dataset: s.name };
  return { text_chars: s.text.length };
}

/** Reads raw values for one parse, naming fields in the style's spelling. */
class Reader {
  constructor(private readonly style: ParseStyle) {}

  label(field: string): string {
    return this.style.labels?.[field] ?? field;
  }

  show(field: string, value: unknown): string {
    return `${this.label(field)} ${JSON.stringify(value)}`;
  }

  error(field: string, message: string): QuantizeOptionsError {
    return new QuantizeOptionsError(message, field);
  }

  fail(field: string, value: unknown, expected: string): never {
    throw this.error(field, `Cannot use ${this.show(field, value)}: ${expected}`);
  }

  object(value: unknown, path: string, fields: readonly string[]): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      if (path === "") throw this.error("", "Cannot parse the request: expected a JSON object");
      this.fail(path, value, "expected an object");
    }
    const o = value as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      const field = path ? `${path}.${key}` : key;
      if (!fields.includes(key)) throw this.error(field, `Cannot use unknown field ${JSON.stringify(field)}`);
    }
    return o;
  }

  oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
    if (value === undefined || value === null) {
      throw this.error(field, `Missing ${this.label(field)}: expected one of ${allowed.join(", ")}`);
    }
    if (!(allowed as readonly unknown[]).includes(value)) {
      this.fail(field, value, `expected one of ${allowed.join(", ")}`);
    }
    return value as T;
  }

  /** An integer from a fixed set (flag strings parsed). */
  oneOfNumbers(value: unknown, field: string, allowed: readonly number[], fallback: number): number {
    const n = this.int(value, field, Math.min(...allowed), Math.max(...allowed), fallback);
    if (!allowed.includes(n)) this.fail(field, value, `expected one of ${allowed.join(", ")}`);
    return n;
  }

  int(value: unknown, field: string, min: number, max: number, fallback: number): number {
    if (value === undefined || value === null) return fallback;
    const n = this.style.strings && typeof value === "string" && /^\s*-?\d+\s*$/.test(value)
      ? Number(value)
      : value;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
      this.fail(field, value, `expected an integer from ${min} to ${max}`);
    }
    return n;
  }

  optionalInt(value: unknown, field: string, min: number): number | null {
    if (value === undefined || value === null) return null;
    return this.int(value, field, min, 1 << 30, min);
  }

  num(value: unknown, field: string, ok: (x: number) => boolean, what: string, fallback: number): number {
    if (value === undefined || value === null) return fallback;
    const n = this.style.strings && typeof value === "string" && value.trim() !== "" ? Number(value) : value;
    if (typeof n !== "number" || !Number.isFinite(n) || !ok(n)) this.fail(field, value, `expected ${what}`);
    return n;
  }

  bool(value: unknown, field: string, fallback: boolean): boolean {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "boolean") this.fail(field, value, "expected true or false");
    return value;
  }

  string(value: unknown, field: string): string {
    if (typeof value !== "string" || value === "") this.fail(field, value, "expected a non-empty string");
    return value;
  }

  /** One of text, file, dataset (at most one), or null when none is given. */
  source(o: Record<string, unknown>, path: string): TextSource | null {
    const given = SOURCE_FIELDS.filter((f) => o[f] !== undefined && o[f] !== null);
    if (given.length > 1) {
      throw this.error(
        `${path}.${given[1]}`,
        `Cannot use ${this.label(`${path}.${given[1]}`)} with ${
          this.label(`${path}.${given[0]}`)
        }: give one source`,
      );
    }
    const field = `${path}.${given[0]}`;
    if (given[0] === "file") return { kind: "file", path: this.string(o.file, field) };
    if (given[0] === "dataset") {
      const name = this.string(o.dataset, field);
      if (!NAME_RE.test(name)) {
        this.fail(field, name, "expected a dataset name (letters, digits, '.', '_', '-')");
      }
      return { kind: "dataset", name };
    }
    if (given[0] === "text") {
      const text = this.string(o.text, field);
      const bytes = new TextEncoder().encode(text).length;
      if (bytes > MAX_INLINE_TEXT_BYTES) {
        throw this.error(
          field,
          `Cannot use ${this.label(field)}: ${bytes} bytes is over the limit of ${MAX_INLINE_TEXT_BYTES}; ` +
            "put the text in a calibration directory and name it with file or dataset",
        );
      }
      return { kind: "text", text };
    }
    return null;
  }
}
