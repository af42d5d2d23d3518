/**
 * Perplexity on the GPU with the protocol of docs/quantization.md §4 and ../shared/data/calib/README.md: the whole
 * text is tokenized once, cut into non-overlapping windows of the model context (the tail that does not fill
 * a window is dropped), each window runs as its own sequence from position 0, every position but the last
 * predicts the next token, and ppl = exp(total NLL / predicted tokens).
 *
 * Logits never leave the GPU: after the forward, the LM head runs in row chunks (a 2048 × 128256 f32 logits
 * block would exceed one binding) and kernels/nll.ts turns each chunk into per-row NLLs, so only
 * windows × (ctx − 1) floats are read back, once at the end.
 */
import {
  checkPipelines,
  createStorage,
  type Encodable,
  type Gpu,
  readF32,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import { createNll, createRmsNorm } from "../../kernels/ops/mod.ts";
import {
  bindForward,
  bindLmHead,
  createForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type LinearPath,
  loadModelConfig,
  type ModelConfig,
  type ParsedQuantization,
  parseQuantization,
  resolveWeightType,
  uploadModelWeights,
  type WeightType,
} from "../model/mod.ts";
import { loadTokenizer, type Tokenizer } from "../text/mod.ts";

/** Options of {@link evaluatePerplexity}. */
export interface PerplexityOptions {
  /** Tokens per window (default: the model context). */
  ctx?: number;
  /** Evaluate at most this many windows (default: all). */
  maxWindows?: number;
  /** Most logit rows computed at once (default: what fits 64 MiB); the LM head runs in chunks of it. */
  maxLogitRows?: number;
  /** Called as windows complete on the GPU. */
  onProgress?: (done: number, total: number) => void;
  /** Awaited after each window's submit, so a server's decode steps get the queue (inference/jobs). */
  yieldToServing?: () => Promise<void>;
  /** Cancels the evaluation between windows (throws the signal's reason). */
  signal?: AbortSignal;
  /**
   * Pin the linears' kernels (model/linear.ts `LinearPath`): "gemm" evaluates through the engine's prompt
   * kernels, the batched int8 paths for weights loaded with q8 activations. Default: chosen by rows, as the
   * single-sequence runner does.
   */
  path?: LinearPath;
}

/** The result of an evaluation. */
export interface PerplexityResult {
  perplexity: number;
  /** Σ NLL over predicted tokens (nats) */
  nll: number;
  /** Predicted tokens: windows · (ctx − 1) */
  tokens: number;
  windows: number;
  ctx: number;
  /** (windows, ctx − 1) per-token NLL; entry (w, t) is −log p(token t + 1 | tokens ≤ t) of window w */
  tokenNll: Float32Array;
}

/** Most bytes of logits computed at once (the LM head runs in row chunks of this size). */
const MAX_LOGITS_BYTES = 64 * 2 ** 20;

/**
 * Computes perplexity over `ids` with the model already on the GPU.
 * @param gpu the device
 * @param config the model
 * @param weights its weights (full precision or dequantized)
 * @param ids the tokenized evaluation text
 * @param options window length and limits
 * @returns perplexity, totals and per-token NLLs
 * @example
 * ```ts ignore
 * const { config, tokenizer, weights } = await loadEvalModel(gpu, dir);
 * const ids = tokenizer.encode(await Deno.readTextFile(textPath), { addSpecialTokens: true });
 * console.log((await evaluatePerplexity(gpu, config, weights, ids)).perplexity);
 * ```
 */
export async function evaluatePerplexity(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  ids: ArrayLike<number>,
  { ctx = config.seqLen, maxWindows = Infinity, maxLogitRows, onProgress, yieldToServing, signal, path }:
    PerplexityOptions = {},
): Promise<PerplexityResult> {
  if (!Number.isInteger(ctx) || ctx < 2 || ctx > config.seqLen) {
    throw new Error(
      `Cannot evaluate with ctx ${ctx}: expected an integer from 2 to the context length ${config.seqLen}`,
    );
  }
  const windows = Math.min(Math.floor(ids.length / ctx), maxWindows);
  if (windows < 1) {
    throw new Error(`Cannot evaluate: the text has ${ids.length} tokens, fewer than one window of ${ctx}`);
  }
  for (let i = 0; i < windows * ctx; i++) {
    if (!(ids[i] >= 0 && ids[i] < config.vocabSize)) {
      throw new Error(
        `Cannot evaluate: token ${ids[i]} at position ${i} is outside the vocabulary (${config.vocabSize})`,
      );
    }
  }
  const preds = ctx - 1;
  const fit = Math.floor(Math.min(MAX_LOGITS_BYTES, gpu.maxBindingBytes) / (config.vocabSize * 4));
  const chunk = Math.max(1, Math.min(preds, maxLogitRows ?? fit, fit));
  const s = createForwardState(gpu, config, { maxRows: ctx, maxLogitRows: chunk });
  const idBuf = createStorage(gpu, ctx * 4, "eval ids"); // (ctx) u32
  const nllBuf = createStorage(gpu, preds * 4, "eval nll"); // (ctx − 1) f32, one window
  const all = createStorage(gpu, windows * preds * 4, "eval nll all"); // (windows, ctx − 1) f32
  writeBuffer(gpu, s.state, new Uint32Array(4));
  const steps: Encodable[] = [
    bindForward(gpu, config, weights, s, {
      ids: idBuf,
      rows: ctx,
      logits: "none",
      ...(path ? { path } : {}),
    }),
    createRmsNorm(gpu).bind({
      x: s.x,
      weight: weights.finalNorm,
      y: s.xn,
      rows: ctx,
      dim: config.dim,
      eps: config.normEps,
    }),
  ];
  const nll = createNll(gpu);
  for (let off = 0; off < preds; off += chunk) {
    const rows = Math.min(chunk, preds - off);
    steps.push(
      ...bindLmHead(gpu, config, weights, { x: s.xn, y: s.logits, rows, xRowOffset: off }).map((h) => h.step),
      nll.bind({
        logits: s.logits,
        targets: idBuf,
        nll: nllBuf,
        rows,
        vocab: config.vocabSize,
        targetOffset: off + 1,
        outOffset: off,
      }),
    );
  }
  await checkPipelines(gpu);
  try {
    let synced = performance.now();
    for (let w = 0; w < windows; w++) {
      writeBuffer(gpu, idBuf, Uint32Array.from({ length: ctx }, (_, t) => ids[w * ctx + t]));
      const enc = gpu.device.createCommandEncoder({ label: "eval window" });
      const pass = enc.beginComputePass();
      steps.forEach((step) => step.encode(pass));
      pass.end();
      enc.copyBufferToBuffer(nllBuf, 0, all, w * preds * 4, preds * 4);
      gpu.device.queue.submit([enc.finish()]);
      if (onProgress && (performance.now() - synced > 1000 || w === windows - 1)) {
        await gpu.device.queue.onSubmittedWorkDone();
        synced = performance.now();
        onProgress(w + 1, windows);
      }
      signal?.throwIfAborted();
      await yieldToServing?.();
    }
    const tokenNll = await readF32(gpu, all, windows * preds);
    let total = 0;
    for (const v of tokenNll) total += v;
    const tokens = windows * preds;
    return { perplexity: Math.exp(total / tokens), nll: total, tokens, windows, ctx, tokenNll };
  } finally {
    [idBuf, nllBuf, all, ...forwardStateBuffers(s)].forEach((b) => b.destroy());
  }
}

/** A model ready for evaluation. */
export interface EvalModel {
  config: ModelConfig;
  tokenizer: Tokenizer;
  weights: GpuWeights;
  /** null for a full-precision folder */
  quantization: ParsedQuantization | null;
}

/**
 * Loads a full-precision folder, or a quantized one: through the fused quantized kernels as the server runs
 * it (default), or dequantized to dense weights at load (`fused: false`, the quantizer's own view).
 * @param gpu the device
 * @param dir the model folder
 * @param options dense storage ("auto": f32 for f32 checkpoints, else f16); fused or dequantized
 * @returns config, tokenizer and GPU weights
 */
export async function loadEvalModel(
  gpu: Gpu,
  dir: string,
  { weightType = "auto", fused = true, decodeActivations = "q8" }: {
    weightType?: WeightType | "auto";
    fused?: boolean;
    /** the quantized linears' activations on the engine's kernels (model/linear.ts) */
    decodeActivations?: "q8" | "f32";
  } = {},
): Promise<EvalModel> {
  const config = await loadModelConfig(dir);
  const tokenizer = await loadTokenizer(dir);
  const quantization = parseQuantization(config.quantization);
  const type = resolveWeightType(config, weightType);
  const weights = await uploadModelWeights(gpu, dir, config, { weightType: type, fused, decodeActivations });
  return { config, tokenizer, weights, quantization };
}
