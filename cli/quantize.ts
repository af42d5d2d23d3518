/**
 * `deno task quantize`: quantizes a Hugging Face Llama folder true-sequentially and writes a folder the server
 * can load (inference/quant_folder.ts). Progress goes to stderr, the summary to stdout.
 *
 *   deno task quantize --model <dir> --method leanquant-aff|leanquant-nu|gptq|rtn --bits 4 [--group-size 128]
 *     --calib <file> [--nsamples 128] [--seqlen 2048] [--seed 0] [--percdamp 0.01] [--no-act-order]
 *     [--aff-t 2048] [--exponent 4] --out <dir>
 *
 * The per-layer quantizer runs on the GPU (quant/gpu_quantizer.ts); `--quantizer reference` swaps in the f64
 * reference (single-threaded: practical for stories260K-sized layers, and a cross-check), and
 * `--quantizer exact` LeanQuant-Exact (spec §2.5: greedy OBQ order per row, f64, for small networks).
 */
import { parseArgs } from "node:util";
import { basename } from "node:path";
import { describeGpu, type Gpu, requestGpu } from "../kernels/core/mod.ts";
import {
  createExactQuantizer,
  createGpuQuantizer,
  exactOptions,
  QUANTIZE_DEFAULTS,
  type QuantizeOptions,
  type QuantMethod,
} from "../quant/mod.ts";
import { createReferenceQuantizer } from "../quant/reference/mod.ts";
import { createQuantizedWriter, loadModelConfig, openLlamaWeights } from "../inference/model/mod.ts";
import { loadTokenizer } from "../inference/text/mod.ts";
import {
  BUILTIN_CALIBRATION,
  chooseHiddenStorage,
  DEFAULT_NSAMPLES,
  defaultSeqLen,
  type HiddenStorageChoice,
  lmHeadOptions,
  loadCalibration,
  quantizeModel,
  type QuantizeModelResult,
  sampleCalibration,
  SELF_CALIBRATION,
} from "../inference/quantize/mod.ts";
import { createProgressBar, formatBytes, formatSeconds } from "./progress.ts";

export const QUANTIZE_HELP =
  `Usage: deno task quantize --model <dir> --method <m> --bits <b> [--calib <file>] --out <dir> [options]

  --model <dir>        Hugging Face Llama folder (safetensors + config.json + tokenizer.json)
  --method <m>         leanquant-aff | leanquant-nu | gptq | rtn
  --bits <b>           2, 3 or 4
  --group-size <g>     columns per affine group (default 0: one grid per row; ignored by leanquant-nu)
  --calib <file>       calibration text, held out from evaluation; "builtin" (the default) is the Book of
                       Genesis kept in the repository (inference/quantize/data/README.md); "self" samples
                       nsamples × seqlen tokens from the model at temperature 1 first (slow on a CPU)
  --nsamples <n>       calibration windows (default ${DEFAULT_NSAMPLES})
  --seqlen <n>         tokens per window (default min(context, 2048))
  --seed <n>           seed of the window draw (default 0)
  --percdamp <x>       relative damping λ = x · mean(diag H) (default ${QUANTIZE_DEFAULTS.percdamp})
  --no-act-order       quantize columns in their stored order
  --aff-t <T>          leanquant-aff range steps (default ${QUANTIZE_DEFAULTS.affT})
  --exponent <p>       LeanQuant importance exponent (default ${QUANTIZE_DEFAULTS.exponent})
  --quantize-lm-head <b>  0 (default: full precision) | 4 | 6 | 8: the LM head in affine groups of 128 by GPTQ
                       (RTN for rtn) on the final norm's output; 4 bits runs the fused kernels, 6 and 8 bits
                       are served dequantized (same quality, no memory or speed gain)
  --calib-storage <s>  auto (default: f32 unless the calibration hidden states exceed 4 GiB) | f32
                       | f16 (half the memory, LOSSY: +5 % perplexity for leanquant-nu 2-bit on stories260K)
  --quantizer <q>      gpu (default) | reference (the f64 spec implementation; small models only)
                       | exact (LeanQuant-Exact greedy OBQ, f64, O(R·C³); leanquant-nu/aff row-wise, small models)
  --out <dir>          output folder (must not exist)`;

const METHODS: readonly QuantMethod[] = ["rtn", "gptq", "leanquant-nu", "leanquant-aff"];

/** Parsed command line of the quantize task. */
export interface QuantizeArgs {
  model: string;
  /** Calibration text; null only for rtn without act-order, whose result does not depend on H. */
  calib: string | null;
  out: string;
  nsamples: number;
  /** null: min(context, 2048) */
  seqLen: number | null;
  seed: number;
  quantizer: "gpu" | "reference" | "exact";
  /** Windows drawn elsewhere (benchmarks comparing sources); `calib` then only names them in the summary. */
  calibWindows?: Uint32Array[];
  /** Storage of the calibration hidden states (quantize_model.ts `chooseHiddenStorage`). */
  hiddenStorage: HiddenStorageChoice;
  quantize: QuantizeOptions;
}

/**
 * Parses and validates the quantize task's arguments; throws an Error naming the bad flag.
 * @param args the command-line arguments
 * @returns the settings
 */
export function parseQuantizeArgs(args: string[]): QuantizeArgs {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      method: { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string", default: "0" },
      calib: { type: "string" },
      nsamples: { type: "string", default: String(DEFAULT_NSAMPLES) },
      seqlen: { type: "string" },
      seed: { type: "string", default: "0" },
      percdamp: { type: "string", default: String(QUANTIZE_DEFAULTS.percdamp) },
      "no-act-order": { type: "boolean", default: false },
      "aff-t": { type: "string", default: String(QUANTIZE_DEFAULTS.affT) },
      exponent: { type: "string", default: String(QUANTIZE_DEFAULTS.exponent) },
      out: { type: "string" },
      quantizer: { type: "string", default: "gpu" },
      "calib-storage": { type: "string", default: "auto" },
      "quantize-lm-head": { type: "string", default: "0" },
    },
  });
  const need = (key: "model" | "method" | "bits" | "out") => {
    const v = values[key];
    if (v === undefined || v === "") throw new Error(`Missing --${key}`);
    return v;
  };
  const int = (key: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new Error(`Invalid --${key} "${v}": expected an integer ≥ ${min}`);
    }
    return n;
  };
  const num = (key: string, v: string, ok: (x: number) => boolean, what: string) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || !ok(n)) {
      throw new Error(`Invalid --${key} "${v}": expected ${what}`);
    }
    return n;
  };
  const method = need("method") as QuantMethod;
  if (!METHODS.includes(method)) {
    throw new Error(`Invalid --method "${method}": expected ${METHODS.join(", ")}`);
  }
  const bits = int("bits", need("bits"), 2);
  const quantizer = values.quantizer;
  if (quantizer !== "gpu" && quantizer !== "reference" && quantizer !== "exact") {
    throw new Error(`Invalid --quantizer "${quantizer}": expected gpu, reference or exact`);
  }
  if (bits !== 2 && bits !== 3 && bits !== 4) throw new Error(`Invalid --bits "${bits}": expected 2, 3 or 4`);
  const hiddenStorage = values["calib-storage"];
  if (hiddenStorage !== "auto" && hiddenStorage !== "f32" && hiddenStorage !== "f16") {
    throw new Error(`Invalid --calib-storage "${hiddenStorage}": expected auto, f32 or f16`);
  }
  const lmHeadBits = Number(values["quantize-lm-head"]);
  if (lmHeadBits !== 0 && lmHeadBits !== 4 && lmHeadBits !== 6 && lmHeadBits !== 8) {
    throw new Error(`Invalid --quantize-lm-head "${values["quantize-lm-head"]}": expected 0, 4, 6 or 8`);
  }
  // LeanQuant-Exact supports nu and row-wise aff only: fail at parse time, not on the first layer.
  if (quantizer === "exact") {
    exactOptions({
      ...QUANTIZE_DEFAULTS,
      method,
      bits,
      groupSize: int("group-size", values["group-size"], 0),
    });
  }
  return {
    model: need("model"),
    // Without --calib: the built-in text, except for rtn without act-order, which never reads H.
    calib: values.calib ?? (method === "rtn" && values["no-act-order"] ? null : BUILTIN_CALIBRATION),
    out: need("out"),
    nsamples: int("nsamples", values.nsamples, 1),
    seqLen: values.seqlen === undefined ? null : int("seqlen", values.seqlen, 2),
    seed: int("seed", values.seed, 0),
    quantizer,
    hiddenStorage,
    quantize: {
      ...QUANTIZE_DEFAULTS,
      method,
      bits,
      groupSize: int("group-size", values["group-size"], 0),
      actOrder: !values["no-act-order"],
      percdamp: num("percdamp", values.percdamp, (x) => x >= 0, "a number ≥ 0"),
      affT: int("aff-t", values["aff-t"], 1),
      exponent: num("exponent", values.exponent, (x) => x > 0, "a number > 0"),
      lmHeadBits,
    },
  };
}

/**
 * Runs the whole task: calibration, quantization, writing.
 * @param a the parsed arguments
 * @returns the pipeline's summary
 */
export async function runQuantize(
  a: QuantizeArgs,
  { gpu: shared, onProgress, quiet = false }: {
    /** A device to reuse (the server's); by default the task opens and closes its own. */
    gpu?: Gpu;
    /** Progress as "layer i/n sublayer" lines, e.g. for /health while quantizing at startup. */
    onProgress?: (detail: string) => void;
    /** No progress bar and no summary (benchmarks that quantize many times). */
    quiet?: boolean;
  } = {},
): Promise<QuantizeModelResult> {
  const started = performance.now();
  const config = await loadModelConfig(a.model);
  const seqLen = a.seqLen ?? defaultSeqLen(config.seqLen);
  if (seqLen > config.seqLen) {
    throw new Error(`Invalid --seqlen ${seqLen}: the model context is ${config.seqLen}`);
  }
  if (a.calib === null && (a.quantize.method !== "rtn" || a.quantize.actOrder)) {
    throw new Error("Missing --calib: only rtn without act-order can quantize without calibration text");
  }
  // RTN without act-order never reads H, so one short window of arbitrary ids stands in for calibration.
  const gpu = shared ?? await requestGpu();
  const calib = a.calibWindows ? { windows: a.calibWindows, textTokens: 0 } : a.calib === SELF_CALIBRATION
    ? {
      windows: await sampleCalibration(gpu, a.model, { nsamples: a.nsamples, seqLen, seed: a.seed }),
      textTokens: 0,
    }
    : a.calib === null
    ? { windows: [Uint32Array.from({ length: 16 }, (_, i) => i)], textTokens: 0 }
    : await loadCalibration(await loadTokenizer(a.model), a.calib, {
      nsamples: a.nsamples,
      seqLen,
      seed: a.seed,
    });
  if (!quiet) console.error(`[quantize] ${describeGpu(gpu)}`);
  const source = await openLlamaWeights(a.model, config);
  const q = a.quantize;
  const hiddenStorage = chooseHiddenStorage(a.hiddenStorage, {
    windows: calib.windows.length,
    rows: calib.windows[0].length,
    dim: config.dim,
  });
  const info = {
    method: q.method,
    bits: q.bits,
    groupSize: q.method === "leanquant-nu" ? 0 : q.groupSize,
    actOrder: q.actOrder,
    percdamp: q.percdamp,
    extra: {
      calibration: a.calib === null ? null : {
        file: basename(a.calib),
        nsamples: a.nsamples,
        seqlen: seqLen,
        seed: a.seed,
        hidden_storage: hiddenStorage,
      },
      exponent: q.exponent,
      ...(q.method === "leanquant-aff" ? { aff_T: q.affT } : {}),
      quantizer: a.quantizer === "gpu"
        ? "leanserve-webgpu"
        : a.quantizer === "exact"
        ? "exact-f64"
        : "reference-f64",
    },
  };
  const head = q.lmHeadBits > 0 ? lmHeadOptions(q) : null;
  const lmHead = head
    ? { lmHead: { bits: q.lmHeadBits, groupSize: head.groupSize, method: head.method } }
    : {};
  const writer = await createQuantizedWriter(source, {
    srcDir: a.model,
    outDir: a.out,
    info: { ...info, ...lmHead },
  });
  const bar = quiet ? { update() {}, log() {}, done() {} } : createProgressBar(Deno.stderr);
  try {
    const result = await quantizeModel(gpu, source, {
      quantize: q,
      quantizer: a.quantizer === "gpu"
        ? createGpuQuantizer(gpu, { onRetry: (m) => bar.log(`[quantize] ${m}`) })
        : a.quantizer === "exact"
        ? createExactQuantizer(gpu, { onRetry: (m) => bar.log(`[quantize] ${m}`) })
        : createReferenceQuantizer(gpu, { onRetry: (m) => bar.log(`[quantize] ${m}`) }),
      windows: calib.windows,
      hiddenStorage,
      onProgress: (p) => {
        const detail = `layer ${p.layer + 1}/${p.nLayers} ${p.step}`;
        bar.update(p.fraction, detail);
        onProgress?.(`quantizing: ${(100 * p.fraction).toFixed(0)} %, ${detail}`);
      },
      onLayer: (i, layer) => writer.writeLayer(i, layer),
    });
    if (result.lmHead) writer.writeLmHead(result.lmHead);
    const written = await writer.finish();
    bar.done();
    if (quiet) return result;
    printSummary(a, result, {
      seqLen,
      textTokens: calib.textTokens,
      ...written,
      total: (performance.now() - started) / 1000,
    });
    return result;
  } catch (err) {
    bar.done();
    await writer.abort();
    throw err;
  } finally {
    source.close();
    if (!shared) gpu.device.destroy();
  }
}

function printSummary(
  a: QuantizeArgs,
  r: QuantizeModelResult,
  w: { seqLen: number; textTokens: number; wrappedZeros: number; bytes: number; total: number },
): void {
  const q = a.quantize;
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
  console.log(
    a.calib === null
      ? "calibration: none (rtn without act-order)"
      : `calibration: ${a.nsamples} × ${w.seqLen} tokens from ${a.calib} (${w.textTokens} tokens, seed ${a.seed})`,
  );
  console.log(`calibration hidden states stored as ${r.hiddenStorage}`);
  if (r.lmHead) {
    console.log(
      `lm_head: ${r.lmHead.bits}-bit affine g128 (${r.lmHead.method}), loss ${
        r.lmHead.loss.toExponential(3)
      }`,
    );
  }
  console.log(`time: ${formatSeconds(w.total)} total, ${formatSeconds(r.seconds)} in the layer pipeline`);
  console.log(`peak GPU memory held by the pipeline: ${formatBytes(r.peakGpuBytes)}`);
  console.log(`wrote ${formatBytes(w.bytes)} of tensors`);
  if (w.wrappedZeros > 0) {
    console.log(
      `note: ${w.wrappedZeros} zero-points of 0 stored wrapped (AutoGPTQ v1 cannot store 0; our reader handles it)`,
    );
  }
  const names = [...new Set(r.linears.map((l) => l.name))];
  console.log(["layer", "loss", ...names].join("\t"));
  r.layerLoss.forEach((loss, i) => {
    const cells = names.map((n) =>
      r.linears.find((l) => l.layer === i && l.name === n)?.loss.toExponential(3) ?? "-"
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
