/**
 * Calibration data for the quantizer (docs/quantization.md §4, ../shared/data/calib/README.md): the whole text file is
 * tokenized once (with the tokenizer's special tokens, so a Llama text starts with BOS as GPTQ's datautils
 * does), then N windows of seqLen consecutive tokens start at seeded random offsets. The reference draws
 * with Python's `random.seed(0)`; we use our own seeded generator, so windows are reproducible here but not
 * the reference's windows.
 */
import { fileURLToPath } from "node:url";
import type { Tokenizer } from "../text/mod.ts";

/**
 * The calibration source that needs no file from the user: the Book of Genesis (King James Version, public
 * domain), kept in the repository (data/README.md has its provenance). `--calib builtin` names it; it is
 * the default of gptq and leanquant-* when no `--calib` is given. Measured against text sampled from the
 * model itself (`--calib self`, self_calibration.ts; BENCHMARKS.md, "Calibration without a user file"):
 * on lq-49m self-sampled text quantizes about 1.2 % better (perplexity, 3 seeds), but sampling is batch-1 decoding of
 * nsamples·seqLen tokens (204–391 s for 8 × 256 tokens of a 49M model on a CPU adapter, minutes on a GPU at
 * the paper's 128 × 2048), while this text costs nothing: it stays the default for a fast first start.
 */
export const BUILTIN_CALIBRATION = "builtin";

/** Path of the built-in calibration text. */
export function builtinCalibrationPath(): string {
  return fileURLToPath(new URL("./data/kjv_genesis.txt", import.meta.url));
}

/** Most tokens per calibration window by default (the paper's 2048), capped by the model context. */
export const MAX_DEFAULT_SEQ_LEN = 2048;

/** The default number of calibration windows (the paper's 128). */
export const DEFAULT_NSAMPLES = 128;

/** Options of {@link drawWindows} and {@link loadCalibration}. */
export interface CalibrationOptions {
  /** Windows to draw (default 128). */
  nsamples?: number;
  /** Tokens per window. */
  seqLen: number;
  /** Seed of the window offsets (default 0). */
  seed?: number;
}

/** Calibration windows ready for the quantizer. */
export interface CalibrationSet {
  /** nsamples windows, each (seqLen) token ids */
  windows: Uint32Array[];
  seqLen: number;
  /** Tokens in the whole text, for the summary. */
  textTokens: number;
}

/**
 * The default window length for a model: min(context length, 2048).
 * @param contextLength the model's max_position_embeddings
 * @returns tokens per window
 */
export function defaultSeqLen(contextLength: number): number {
  return Math.min(contextLength, MAX_DEFAULT_SEQ_LEN);
}

/**
 * A seeded uniform generator on [0, 1) (mulberry32): small, fast and reproducible across platforms.
 * @param seed any integer
 * @returns a function drawing the next value
 */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Draws `nsamples` windows of `seqLen` consecutive tokens at seeded random starts in [0, n − seqLen].
 * Windows may overlap, as the reference's do.
 * @param ids the tokenized text
 * @param options window count, length and seed
 * @returns the windows (copies)
 */
export function drawWindows(
  ids: ArrayLike<number>,
  { nsamples = DEFAULT_NSAMPLES, seqLen, seed = 0 }: CalibrationOptions,
): Uint32Array[] {
  if (!Number.isInteger(nsamples) || nsamples < 1) {
    throw new Error(`Cannot draw calibration windows: nsamples ${nsamples} is not a positive integer`);
  }
  if (!Number.isInteger(seqLen) || seqLen < 2) {
    throw new Error(`Cannot draw calibration windows: seqLen ${seqLen} must be an integer ≥ 2`);
  }
  if (ids.length < seqLen) {
    throw new Error(
      `Cannot draw calibration windows of ${seqLen} tokens: the text has only ${ids.length} tokens`,
    );
  }
  const rand = seededUniform(seed);
  const all = Uint32Array.from(ids);
  const starts = ids.length - seqLen + 1;
  return Array.from({ length: nsamples }, () => {
    const start = Math.min(Math.floor(rand() * starts), starts - 1);
    return all.slice(start, start + seqLen);
  });
}

/**
 * Reads and tokenizes a calibration text file and draws the windows.
 * @param tokenizer the model's tokenizer
 * @param path a UTF-8 text file (held out from evaluation), or "builtin" for {@link builtinCalibrationPath}
 * @param options window count, length and seed
 * @returns the windows and the text's token count
 * @example
 * ```ts ignore
 * const calib = await loadCalibration(tokenizer, "../shared/data/calib/tinystories_calib_second_half.txt", {
 *   nsamples: 128,
 *   seqLen: defaultSeqLen(config.seqLen),
 * });
 * ```
 */
export async function loadCalibration(
  tokenizer: Tokenizer,
  path: string,
  options: CalibrationOptions,
): Promise<CalibrationSet> {
  let text: string;
  if (path === BUILTIN_CALIBRATION) path = builtinCalibrationPath();
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`Cannot read calibration text "${path}": ${(err as Error).message}`);
  }
  return calibrationFromText(tokenizer, text, `calibration text "${path}"`, options);
}

/**
 * Tokenizes a calibration text already in memory (an inline `calibration.text`, or a file read by the
 * caller) and draws the windows.
 * @param tokenizer the model's tokenizer
 * @param text the text
 * @param label how errors name the text
 * @param options window count, length and seed
 * @returns the windows and the text's token count
 */
export function calibrationFromText(
  tokenizer: Tokenizer,
  text: string,
  label: string,
  options: CalibrationOptions,
): CalibrationSet {
  const ids = tokenizer.encode(text, { addSpecialTokens: true });
  try {
    return { windows: drawWindows(ids, options), seqLen: options.seqLen, textTokens: ids.length };
  } catch (err) {
    throw new Error(`${(err as Error).message} (${label})`);
  }
}

/**
 * Version of the built-in source; it is part of every cached artifact's name (inference/jobs), so a new
 * built-in source re-quantizes instead of serving an artifact made with the old one.
 */
export const BUILTIN_CALIBRATION_VERSION = "kjv-genesis-v1";

/** What the built-in source may use: the model's tokenizer and vocabulary, and its folder. */
export interface BuiltinCalibrationContext {
  tokenizer: Tokenizer;
  vocabSize: number;
  modelDir: string;
}

/**
 * The calibration source that needs no file from the user (`calibration: {dataset: "builtin"}`, `--calib
 * builtin`, and the default of every method that reads calibration): {@link builtinCalibrationPath}'s text,
 * tokenized by the model's tokenizer.
 * @param ctx the model's tokenizer, vocabulary size and folder
 * @param options window count, length and seed
 * @returns the windows
 */
export async function builtinCalibration(
  ctx: BuiltinCalibrationContext,
  options: CalibrationOptions,
): Promise<CalibrationSet> {
  return await loadCalibration(ctx.tokenizer, builtinCalibrationPath(), options);
}
