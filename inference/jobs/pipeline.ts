/**
 * One quantization, start to finish, shared by `deno task quantize`, the server's `--quantize` and
 * `POST /v1/quantize`: calibration windows → the true-sequential pipeline reading the source weights from
 * disk (inference/quantize) → the quantized folder (inference/model's writer) → optional perplexity of the
 * served and the new model on the same windows → checksum manifest → publish by rename.
 *
 * Everything is written under a hidden sibling `.<name>.partial-XXXX/` of the destination and renamed into
 * place only once complete and checksummed, so a failed, cancelled or killed run leaves no loadable or
 * listed folder and touches nothing published before.
 */
import { basename, dirname, join } from "node:path";
import type { Gpu } from "../../kernels/core/mod.ts";
import { createGpuQuantizer, type LinearQuantizer } from "../../quant/mod.ts";
import type { ModelLease } from "../engine/mod.ts";
import { writeManifest } from "../formats/mod.ts";
import {
  createQuantizedWriter,
  type GpuWeights,
  gpuWeightsBuffers,
  loadModelConfig,
  type ModelConfig,
  openLlamaWeights,
} from "../model/mod.ts";
import {
  builtinCalibration,
  calibrationFromText,
  type CalibrationSet,
  chooseHiddenStorage,
  defaultSeqLen,
  evaluatePerplexity,
  type LinearReport,
  lmHeadOptions,
  loadEvalModel,
  quantizeModel,
  type QuantizeModelResult,
  type QuantizeProgress,
  type QuantizeRequest,
  requestToJson,
  sampleCalibration,
  sourceToJson,
} from "../quantize/mod.ts";
import { loadTokenizer, type Tokenizer } from "../text/mod.ts";
import { PARTIAL_MARK } from "./artifacts.ts";
import { readSourceText, type ResolvedText } from "./sources.ts";

/** The phases a run reports (the job's states between queued and activating). */
export type RunPhase = "calibrating" | "quantizing" | "evaluating";

/** What a run needs. */
export interface QuantizeRunInput {
  gpu: Gpu;
  /** The full-precision model folder: the weights are read from here, never from a served model. */
  sourceDir: string;
  request: Pick<QuantizeRequest, "quantize" | "calibration" | "eval">;
  /** Resolved sources (null: none, rtn without act-order / no eval). */
  calibration: ResolvedText | null;
  evalText: ResolvedText | null;
  /** The folder to publish (must not exist). */
  dest: string;
  /** Extra manifest fields (name, source revision, ...). */
  record?: Record<string, unknown>;
  /** The per-linear quantizer (default: the GPU one) and what the folder records about it. */
  quantizer?: LinearQuantizer;
  quantizerName?: string;
  /** The served model, for the perplexity before (held only while it is evaluated). */
  served?: () => ModelLease | null;
  /** Windows drawn elsewhere (benchmarks comparing sources): used instead of `calibration`'s. */
  windows?: Uint32Array[];
  /** Bytes of calibration hidden states kept on the GPU (`--calib-gpu-memory`; same results either way). */
  gpuHiddenBytes?: number;
}

/** What a run reports while it goes. */
export interface RunEvents {
  phase?(phase: RunPhase): void;
  progress?(p: QuantizeProgress): void;
  linear?(r: LinearReport): void;
  /** Perplexity windows done of the served ("before") or new ("after") model. */
  evalProgress?(which: "before" | "after", done: number, total: number): void;
  /** GPU bytes the run holds now outside the pipeline's own accounting (the evaluated model's weights). */
  gpuBytes?(bytes: number): void;
  log?(line: string): void;
}

/** Cancellation and the server's turn on the GPU queue (both optional). */
export interface RunControl {
  signal?: AbortSignal;
  yieldToServing?: () => Promise<void>;
}

/** Perplexity of the served and the new model on the same windows. */
export interface RunEval {
  pplBefore: number | null;
  pplAfter: number;
  windows: number;
  ctx: number;
}

/** The run's result. */
export interface QuantizeRunResult {
  dir: string;
  pipeline: QuantizeModelResult;
  calibration: { windows: number; seqLen: number; textTokens: number } | null;
  eval: RunEval | null;
  /** Bytes of tensors written. */
  bytes: number;
  wrappedZeros: number;
  seconds: number;
}

/**
 * Runs one quantization and publishes its folder.
 * @param input source, request, sources, destination
 * @param events progress callbacks
 * @param control cancellation and interleaving with serving
 * @returns the summary; throws (leaving nothing published) on failure or cancellation
 */
export async function runQuantization(
  input: QuantizeRunInput,
  events: RunEvents = {},
  control: RunControl = {},
): Promise<QuantizeRunResult> {
  const started = performance.now();
  const { sourceDir, request, signal } = { ...input, ...control };
  await Deno.mkdir(dirname(input.dest), { recursive: true });
  if (await exists(input.dest)) throw new Error(`Cannot write "${input.dest}": it already exists`);
  const tmp = await Deno.makeTempDir({
    dir: dirname(input.dest),
    prefix: `.${basename(input.dest)}${PARTIAL_MARK}`,
  });
  try {
    events.phase?.("calibrating");
    const config = await loadModelConfig(sourceDir);
    const tokenizer = await loadTokenizer(sourceDir);
    const calib = await calibrate(input, config, tokenizer);
    signal?.throwIfAborted();
    events.phase?.("quantizing");
    const out = join(tmp, "model");
    const { pipeline, bytes, wrappedZeros } = await quantizeInto(input, out, calib, events, control);
    let evalResult: RunEval | null = null;
    if (request.eval && input.evalText) {
      events.phase?.("evaluating");
      evalResult = await evaluate(input, out, tokenizer, events, control);
    }
    signal?.throwIfAborted();
    await writeManifest(out, {
      ...input.record,
      created_at: Math.floor(Date.now() / 1000),
      source: { model: sourceDir, ...(input.record?.source as object | undefined) },
      options: requestToJson(request),
      quantization: {
        method: request.quantize.method,
        bits: request.quantize.bits,
        group_size: request.quantize.groupSize,
      },
      calibration: calib &&
        { label: input.calibration?.label, tokens: calib.textTokens, seqlen: calib.seqLen },
      eval: evalResult && {
        ppl_before: evalResult.pplBefore,
        ppl_after: evalResult.pplAfter,
        windows: evalResult.windows,
        ctx: evalResult.ctx,
      },
      losses: pipeline.linears.map((l) => ({ layer: l.layer, sublayer: l.name, loss: l.loss })),
    });
    signal?.throwIfAborted();
    if (await exists(input.dest)) throw new Error(`Cannot write "${input.dest}": it appeared meanwhile`);
    await Deno.rename(out, input.dest);
    return {
      dir: input.dest,
      pipeline,
      calibration: calib &&
        { windows: calib.windows.length, seqLen: calib.seqLen, textTokens: calib.textTokens },
      eval: evalResult,
      bytes,
      wrappedZeros,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** The calibration windows; null for rtn without act-order, which reads no H. */
async function calibrate(
  input: QuantizeRunInput,
  config: ModelConfig,
  tokenizer: Tokenizer,
): Promise<CalibrationSet | null> {
  const { request, calibration, sourceDir } = input;
  const c = request.calibration;
  const seqLen = c.seqlen ?? defaultSeqLen(config.seqLen);
  if (seqLen > config.seqLen) {
    throw new Error(`Cannot use calibration.seqlen ${seqLen}: the model context is ${config.seqLen}`);
  }
  if (calibration === null) return null;
  const options = { nsamples: c.nsamples, seqLen, seed: c.seed };
  if (input.windows) return { windows: input.windows, seqLen: input.windows[0].length, textTokens: 0 };
  if (calibration.kind === "self") {
    const windows = await sampleCalibration(input.gpu, sourceDir, options);
    return { windows, seqLen, textTokens: 0 };
  }
  if (calibration.kind === "builtin") {
    return await builtinCalibration({ tokenizer, vocabSize: config.vocabSize, modelDir: sourceDir }, options);
  }
  return calibrationFromText(tokenizer, await readSourceText(calibration), calibration.label, options);
}

/** The pipeline over the source read from disk, each layer written as soon as it is done. */
async function quantizeInto(
  input: QuantizeRunInput,
  out: string,
  calib: CalibrationSet | null,
  events: RunEvents,
  control: RunControl,
) {
  const { gpu, request } = input;
  const q = request.quantize;
  const config = await loadModelConfig(input.sourceDir);
  const source = await openLlamaWeights(input.sourceDir, config);
  // rtn without act-order never reads H: one short window of arbitrary ids stands in for calibration.
  const windows = calib?.windows ?? [Uint32Array.from({ length: 16 }, (_, i) => i)];
  const hiddenStorage = chooseHiddenStorage(request.calibration.storage, {
    windows: windows.length,
    rows: windows[0].length,
    dim: config.dim,
  });
  const head = q.lmHeadBits > 0 ? lmHeadOptions(q) : null;
  const info = {
    method: q.method,
    bits: q.bits,
    groupSize: q.groupSize,
    actOrder: q.actOrder,
    percdamp: q.percdamp,
    extra: {
      calibration: request.calibration.source && {
        ...sourceToJson(request.calibration.source),
        nsamples: request.calibration.nsamples,
        seqlen: calib?.seqLen ?? null,
        seed: request.calibration.seed,
        hidden_storage: hiddenStorage,
      },
      exponent: q.exponent,
      ...(q.method === "leanquant-aff" ? { aff_T: q.affT } : {}),
      quantizer: input.quantizerName ?? "leanserve-webgpu",
    },
    ...(head ? { lmHead: { bits: q.lmHeadBits, groupSize: head.groupSize, method: head.method } } : {}),
  };
  const writer = await createQuantizedWriter(source, { srcDir: input.sourceDir, outDir: out, info });
  try {
    const pipeline = await quantizeModel(gpu, source, {
      quantize: q,
      quantizer: input.quantizer ?? createGpuQuantizer(gpu, { onRetry: (m) => events.log?.(m) }),
      windows,
      hiddenStorage,
      ...(input.gpuHiddenBytes === undefined ? {} : { gpuHiddenBytes: input.gpuHiddenBytes }),
      onProgress: (p) => events.progress?.(p),
      onLinear: (r) => events.linear?.(r),
      onLayer: (i, layer) => writer.writeLayer(i, layer),
      ...control,
    });
    if (pipeline.lmHead) writer.writeLmHead(pipeline.lmHead);
    const written = await writer.finish();
    return { pipeline, ...written };
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    source.close();
  }
}

/** Perplexity of the served model (if any) and of the new folder, through the fused kernels, same windows. */
async function evaluate(
  input: QuantizeRunInput,
  out: string,
  tokenizer: Tokenizer,
  events: RunEvents,
  control: RunControl,
): Promise<RunEval> {
  const spec = input.request.eval!;
  const ids = tokenizer.encode(await readSourceText(input.evalText!), { addSpecialTokens: true });
  const fresh = await loadEvalModel(input.gpu, out);
  const bytes = gpuWeightsBuffers(fresh.weights).reduce((s, b) => s + b.size, 0);
  events.gpuBytes?.(bytes);
  try {
    const ctx = spec.ctx ?? fresh.config.seqLen;
    const run = (config: ModelConfig, weights: GpuWeights, which: "before" | "after") =>
      evaluatePerplexity(input.gpu, config, weights, ids, {
        ctx,
        ...(spec.maxWindows !== null ? { maxWindows: spec.maxWindows } : {}),
        onProgress: (done, total) => events.evalProgress?.(which, done, total),
        ...control,
      });
    let pplBefore: number | null = null;
    const lease = input.served?.() ?? null;
    if (lease) {
      try {
        pplBefore = (await run(lease.model.config, lease.model.weights, "before")).perplexity;
      } finally {
        lease.release();
      }
    }
    const after = await run(fresh.config, fresh.weights, "after");
    return { pplBefore, pplAfter: after.perplexity, windows: after.windows, ctx: after.ctx };
  } finally {
    gpuWeightsBuffers(fresh.weights).forEach((b) => b.destroy());
    events.gpuBytes?.(0);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
