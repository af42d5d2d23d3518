/**
 * `deno task eval`: perplexity of a model folder (full precision, or quantized and dequantized at load) on a
 * text file, with non-overlapping windows of the model context and the tail dropped (inference/perplexity.ts).
 *
 *   deno task eval --model <dir> --text <file> [--ctx N] [--max-windows N] [--kernels runner|engine]
 *     [--decode-activations q8|f32] [--json]
 *
 * Progress goes to stderr; stdout ends with `perplexity: <value>` (preceded by one JSON line with --json).
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import { evaluatePerplexity, loadEvalModel, type PerplexityResult } from "../inference/quantize/mod.ts";
import { createProgressBar, formatSeconds } from "./progress.ts";

export const EVAL_HELP =
  `Usage: deno task eval --model <dir> --text <file> [--ctx N] [--max-windows N] [--json]

  --model <dir>       model folder: full precision, or written by \`deno task quantize\`
  --text <file>       evaluation text (UTF-8), tokenized whole with the model's tokenizer
  --ctx <N>           tokens per window (default: the model context)
  --max-windows <N>   evaluate only the first N windows
  --json              also print the result as one JSON line`;

/** Parsed command line of the eval task. */
export interface EvalArgs {
  model: string;
  text: string;
  /** null: the model context */
  ctx: number | null;
  maxWindows: number | null;
  kernels: "runner" | "engine";
  decodeActivations: "q8" | "f32";
  json: boolean;
}

/**
 * Parses and validates the eval task's arguments; throws an Error naming the bad flag.
 * @param args the command-line arguments
 * @returns the settings
 */
export function parseEvalArgs(args: string[]): EvalArgs {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      text: { type: "string" },
      ctx: { type: "string" },
      "max-windows": { type: "string" },
      kernels: { type: "string", default: "runner" },
      "decode-activations": { type: "string", default: "q8" },
      json: { type: "boolean", default: false },
    },
  });
  if (!values.model) throw new Error("Missing --model");
  if (!values.text) throw new Error("Missing --text");
  const int = (key: string, v: string | undefined, min: number) => {
    if (v === undefined) return null;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new Error(`Invalid --${key} "${v}": expected an integer ≥ ${min}`);
    }
    return n;
  };
  const oneOf = <T extends string>(key: string, v: string, allowed: readonly T[]): T => {
    if (!(allowed as readonly string[]).includes(v)) {
      throw new Error(`Invalid --${key} "${v}": expected ${allowed.join(" or ")}`);
    }
    return v as T;
  };
  return {
    model: values.model,
    text: values.text,
    kernels: oneOf("kernels", values.kernels, ["runner", "engine"] as const),
    decodeActivations: oneOf("decode-activations", values["decode-activations"], ["q8", "f32"] as const),
    ctx: int("ctx", values.ctx, 2),
    maxWindows: int("max-windows", values["max-windows"], 1),
    json: values.json,
  };
}

/**
 * Loads the model, tokenizes the text and evaluates.
 * @param a the parsed arguments
 * @returns the result plus the seconds the evaluation took
 */
export async function runEval(a: EvalArgs): Promise<PerplexityResult & { seconds: number }> {
  const gpu = await requestGpu();
  console.error(`[eval] ${describeGpu(gpu)}`);
  try {
    const m = await loadEvalModel(gpu, a.model, { decodeActivations: a.decodeActivations });
    if (m.quantization) {
      console.error(
        `[eval] quantized folder (${m.quantization.method}, ${m.quantization.bits} bits): dequantized at load`,
      );
    }
    const ids = m.tokenizer.encode(await Deno.readTextFile(a.text), { addSpecialTokens: true });
    const bar = createProgressBar(Deno.stderr);
    const started = performance.now();
    const r = await evaluatePerplexity(gpu, m.config, m.weights, ids, {
      ctx: a.ctx ?? m.config.seqLen,
      ...(a.maxWindows !== null ? { maxWindows: a.maxWindows } : {}),
      ...(a.kernels === "engine" ? { path: "gemm" as const } : {}),
      onProgress: (done, total) => bar.update(done / total, `window ${done}/${total}`),
    });
    bar.done();
    const seconds = (performance.now() - started) / 1000;
    console.error(
      `[eval] ${r.windows} windows × ${r.ctx} tokens (${ids.length} in the text) in ${
        formatSeconds(seconds)
      }`,
    );
    return { ...r, seconds };
  } finally {
    gpu.device.destroy();
  }
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(EVAL_HELP);
    Deno.exit(0);
  }
  let args: EvalArgs;
  try {
    args = parseEvalArgs(Deno.args);
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n\n${EVAL_HELP}`);
    Deno.exit(2);
  }
  try {
    const r = await runEval(args);
    if (args.json) {
      const { tokenNll: _, ...rest } = r;
      console.log(JSON.stringify({ model: args.model, text: args.text, ...rest }));
    }
    console.log(`perplexity: ${r.perplexity.toFixed(4)}`);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
