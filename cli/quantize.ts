/**
 * `deno task quantize`: quantizes a Hugging Face Llama folder true-sequentially and writes a folder the server
 * can load, through the same pipeline and options as the server's quantization jobs (inference/jobs,
 * inference/quantize/options.ts). Progress goes to stderr, the summary to stdout.
 *
 *   deno task quantize --model <dir> --method leanquant-aff|leanquant-nu|gptq|rtn [--bits 4] [--group-size 128]
 *     [--calib <file>] [--nsamples 128] [--seqlen 2048] [--seed 0] [--percdamp 0.01] [--no-act-order]
 *     [--aff-t 2048] [--exponent 4] --out <dir>
 *
 * The per-layer quantizer runs on the GPU (quant/gpu_quantizer.ts); `--quantizer reference` swaps in the f64
 * reference (single-threaded: practical for stories260K-sized layers, and a cross-check), and
 * `--quantizer exact` LeanQuant-Exact (spec §2.5: greedy OBQ order per row, f64, for small networks).
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { describeGpu, type Gpu, requestGpu } from "../kernels/core/mod.ts";
import { createExactQuantizer, exactOptions, QUANTIZE_DEFAULTS } from "../quant/mod.ts";
import { createReferenceQuantizer } from "../quant/reference/mod.ts";
import {
  DEFAULT_GPU_HIDDEN_BYTES,
  DEFAULT_GROUP_SIZE,
  DEFAULT_NSAMPLES,
  FLAG_LABELS,
  parseCalibGpuMemory,
  parseQuantizeRequest,
  QuantizeOptionsError,
  type QuantizeRequest,
  rawFromFlags,
} from "../inference/quantize/mod.ts";
import { type QuantizeRunResult, resolveTextSource, runQuantization } from "../inference/jobs/mod.ts";
import { createProgressBar, formatBytes, formatSeconds } from "./progress.ts";

export const QUANTIZE_HELP = `Usage: deno task quantize --model <dir> --method <m> --out <dir> [options]

  --model <dir>          Hugging Face Llama folder (safetensors + config.json + tokenizer.json)
  --method <m>           leanquant-aff | leanquant-nu | gptq | rtn
  --bits <b>             2, 3 or 4 (default 4)
  --group-size <g>       columns per affine group, 0 or a multiple of 32; 0 = one grid per row
                         (default ${DEFAULT_GROUP_SIZE}; leanquant-nu always 0)
  --calib <file>         calibration text, held out from evaluation (default: the built-in source, the
                         Book of Genesis kept in the repository; rtn without act-order reads none)
  --calib-dataset <name> calibration text by name: "builtin"; "self" samples nsamples × seqlen tokens from
                         the model at temperature 1 first (slow on a CPU); or <name>[.txt] in a --calib-dir
  --calib-dir <dir>      where --calib-dataset names are looked up (repeatable)
  --nsamples <n>         calibration windows (default ${DEFAULT_NSAMPLES})
  --seqlen <n>           tokens per window (default min(context, 2048))
  --seed <n>             seed of the window draw (default 0)
  --percdamp <x>         relative damping λ = x · mean(diag H) (default ${QUANTIZE_DEFAULTS.percdamp})
  --no-act-order         quantize columns in their stored order (default for rtn)
  --aff-t <T>            leanquant-aff range steps (default ${QUANTIZE_DEFAULTS.affT})
  --exponent <p>         LeanQuant importance exponent (default ${QUANTIZE_DEFAULTS.exponent})
  --quantize-lm-head <b> 0 (default: full precision) | 4 | 6 | 8: the LM head in affine groups of 128 by
                         GPTQ (RTN for rtn) on the final norm's output; 4 bits runs the fused kernels, 6 and
                         8 bits are served dequantized (same quality, no memory or speed gain)
  --calib-storage <s>    auto (default: f32 unless the calibration hidden states exceed 4 GiB) | f32
                         | f16 (half the memory, LOSSY: +5 % perplexity for leanquant-nu 2-bit on stories260K)
  --calib-gpu-memory <s> how much of those states stays on the GPU: a size (default 1792MiB: an 8B model in
                         under 6 GB) or "all" (faster); the rest streams from host memory, same results
  --quantizer <q>        gpu (default) | reference (the f64 spec implementation; small models only)
                         | exact (LeanQuant-Exact greedy OBQ, f64, O(R·C³); leanquant-nu/aff row-wise, small models)
  --out <dir>            output folder (must not exist); written with a checksum manifest, like the server's
                         artifacts, so \`deno task start --model <dir>\` verifies it`;

/** Parsed command line of the quantize task. */
export interface QuantizeArgs {
  model: string;
  out: string;
  quantizer: "gpu" | "reference" | "exact";
  /** The validated options (inference/quantize/options.ts, shared with the server). */
  request: QuantizeRequest;
  calibDirs: string[];
  /** `--calib-gpu-memory`: bytes of calibration hidden states kept on the GPU (Infinity: all; default 1.75 GiB). */
  calibGpuMemory?: number;
}

/**
 * Parses and validates the quantize task's arguments; throws an Error naming the bad flag.
 * @param args the command-line arguments
 * @returns the settings
 */
export function parseQuantizeArgs(args: string[]): QuantizeArgs {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    model: { type: "string" },
    out: { type: "string" },
    quantizer: { type: "string" },
    "calib-dir": { type: "string", multiple: true },
    "calib-gpu-memory": { type: "string" },
  };
  for (const flag of Object.values(FLAG_LABELS)) {
    options[flag.slice(2)] = { type: flag === "--no-act-order" ? "boolean" : "string" };
  }
  const { values } = parseArgs({ args, strict: true, options });
  const need = (key: "model" | "out") => {
    const v = values[key];
    if (typeof v !== "string" || v === "") throw new Error(`Missing --${key}`);
    return v;
  };
  const quantizer = (values.quantizer ?? "gpu") as string;
  if (quantizer !== "gpu" && quantizer !== "reference" && quantizer !== "exact") {
    throw new Error(`Cannot use --quantizer ${JSON.stringify(quantizer)}: expected gpu, reference or exact`);
  }
  let request: QuantizeRequest;
  let calibGpuMemory = DEFAULT_GPU_HIDDEN_BYTES;
  try {
    const raw = rawFromFlags((flag) => values[flag.slice(2)] as string | boolean | undefined);
    request = parseQuantizeRequest(raw, { labels: FLAG_LABELS, strings: true });
    const memory = values["calib-gpu-memory"];
    if (typeof memory === "string") calibGpuMemory = parseCalibGpuMemory(memory);
  } catch (err) {
    if (err instanceof QuantizeOptionsError) throw new Error(err.message);
    throw err;
  }
  // LeanQuant-Exact supports nu and row-wise aff only: fail at parse time, not on the first layer.
  if (quantizer === "exact") exactOptions(request.quantize);
  return {
    model: need("model"),
    out: need("out"),
    quantizer,
    request,
    calibDirs: (values["calib-dir"] ?? []) as string[],
    calibGpuMemory,
  };
}

/**
 * Runs the whole task through the jobs' pipeline (inference/jobs `runQuantization`): calibration,
 * quantization, writing, the manifest, publishing.
 * @param a the parsed arguments
 * @returns the run's summary
 */
export async function runQuantize(
  a: QuantizeArgs,
  { gpu: shared, quiet = false, calibWindows }: {
    /** A device to reuse; by default the task opens and closes its own. */
    gpu?: Gpu;
    /** No progress bar and no summary (benchmarks and tests that quantize many times). */
    quiet?: boolean;
    /** Windows drawn elsewhere (benchmarks comparing sources); the calibration source then only names them. */
    calibWindows?: Uint32Array[];
  } = {},
): Promise<QuantizeRunResult> {
  const rules = { calibDirs: a.calibDirs, confine: false };
  const source = a.request.calibration.source;
  const calibration = source && await resolveTextSource(source, "calibration", rules);
  const gpu = shared ?? await requestGpu();
  if (!quiet) console.error(`[quantize] ${describeGpu(gpu)}`);
  const bar = quiet ? { update() {}, log() {}, done() {} } : createProgressBar(Deno.stderr);
  const onRetry = (m: string) => bar.log(`[quantize] ${m}`);
  try {
    const result = await runQuantization({
      gpu,
      sourceDir: resolve(a.model),
      request: a.request,
      calibration,
      evalText: null,
      dest: resolve(a.out),
      record: { name: null, quantizer: a.quantizer },
      ...(a.calibGpuMemory === undefined ? {} : { gpuHiddenBytes: a.calibGpuMemory }),
      ...(calibWindows ? { windows: calibWindows } : {}),
      ...(a.quantizer === "exact"
        ? { quantizer: createExactQuantizer(gpu, { onRetry }), quantizerName: "exact-f64" }
        : {}),
      ...(a.quantizer === "reference"
        ? { quantizer: createReferenceQuantizer(gpu, { onRetry }), quantizerName: "reference-f64" }
        : {}),
    }, {
      progress: (p) => bar.update(p.fraction, `layer ${p.layer + 1}/${p.nLayers} ${p.step}`),
      log: (line) => bar.log(`[quantize] ${line}`),
    });
    bar.done();
    if (!quiet) printSummary(a, result, calibration?.label ?? null);
    return result;
  } finally {
    bar.done();
    if (!shared) gpu.device.destroy();
  }
}

function printSummary(a: QuantizeArgs, r: QuantizeRunResult, calibLabel: string | null): void {
  const q = a.request.quantize;
  const grid = q.method === "leanquant-nu"
    ? "per-row LUT"
    : q.groupSize > 0
    ? `group ${q.groupSize}`
    : "row-wise";
  console.log(`quantized ${a.model} → ${a.out}`);
  console.log(
    `method ${q.method}, ${q.bits} bits, ${grid}, act-order ${
      q.actOrder ? "on" : "off"
    }, percdamp ${q.percdamp}`,
  );
  const c = r.calibration;
  console.log(
    c === null
      ? "calibration: none (rtn without act-order)"
      : `calibration: ${c.windows} × ${c.seqLen} tokens from ${calibLabel} (${c.textTokens} tokens, seed ${a.request.calibration.seed})`,
  );
  console.log(`calibration hidden states stored as ${r.pipeline.hiddenStorage}`);
  const head = r.pipeline.lmHead;
  if (head) {
    console.log(`lm_head: ${head.bits}-bit affine g128 (${head.method}), loss ${head.loss.toExponential(3)}`);
  }
  console.log(
    `time: ${formatSeconds(r.seconds)} total, ${formatSeconds(r.pipeline.seconds)} in the layer pipeline`,
  );
  console.log(`peak GPU memory held by the pipeline: ${formatBytes(r.pipeline.peakGpuBytes)}`);
  console.log(`wrote ${formatBytes(r.bytes)} of tensors`);
  if (r.wrappedZeros > 0) {
    console.log(
      `note: ${r.wrappedZeros} zero-points of 0 stored wrapped (AutoGPTQ v1 cannot store 0; our reader handles it)`,
    );
  }
  const names = [...new Set(r.pipeline.linears.map((l) => l.name))];
  console.log(["layer", "loss", ...names].join("\t"));
  r.pipeline.layerLoss.forEach((loss, i) => {
    const cells = names.map((n) =>
      r.pipeline.linears.find((l) => l.layer === i && l.name === n)?.loss.toExponential(3) ?? "-"
    );
    console.log([String(i), loss.toExponential(3), ...cells].join("\t"));
  });
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(QUANTIZE_HELP);
    Deno.exit(0);
  }
  let args: QuantizeArgs;
  try {
    args = parseQuantizeArgs(Deno.args);
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n\n${QUANTIZE_HELP}`);
    Deno.exit(2);
  }
  try {
    await runQuantize(args);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
