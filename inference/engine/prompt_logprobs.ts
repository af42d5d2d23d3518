/**
 * Log probabilities of a prompt's own tokens (the completions API's `echo` with `logprobs`, what
 * lm-evaluation-harness scores continuations with): one forward over the prompt as a single sequence, then
 * the LM head in row chunks, each chunk's rows through the sampler's logprobs kernel (kernels/ops/logprobs.ts)
 * with the next prompt id as the "chosen" token: entry t is log p(ids[t + 1] | ids ≤ t) and the `top` most
 * likely ids there, as generation reports them (raw logits, ties to the lower id).
 *
 * It runs beside the scheduler on the same queue, with its own activations (forwards of at most 256 rows)
 * and an f32 cache as long as the prompt, one prompt at a time (the engine serializes the calls), all freed
 * at the end: at the 8B shape 256 KiB of cache per id, so prompts are capped at 4 GiB of it (16K ids).
 * Forwards are padded to the engine's prefill row counts (row_buckets.ts): kernels take their row count as
 * a build constant, so scoring prompts of every length (an evaluation harness's) would otherwise build new
 * pipelines for each, a stall of the whole GPU queue each time; the padding rows (id 0, after the prompt)
 * are read by no real row (causal attention) and their records are dropped.
 */
import {
  checkPipelines,
  createStorage,
  type Encodable,
  type Gpu,
  readU32,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import {
  createLogprobs,
  createRmsNorm,
  GREEDY_SLOT,
  LOGPROB_RECORD_WORDS,
  packSlotParams,
  SLOT_PARAMS_BYTES,
} from "../../kernels/ops/mod.ts";
import { bucketOf, prefillBuckets } from "./row_buckets.ts";
import {
  bindForward,
  bindLmHead,
  createForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type ModelConfig,
} from "../model/mod.ts";

/** Most bytes of logits computed at once (the LM head runs over at most this many rows' logits). */
const MAX_LOGITS_BYTES = 64 * 2 ** 20;
/** Most prompt rows per forward: activations stay ~100 MB at the 8B shape, whatever the prompt's length. */
const MAX_FORWARD_ROWS = 256;
/** Most bytes of the f32 K/V cache a scored prompt may hold (its length is refused beyond). */
export const MAX_SCORE_CACHE_BYTES = 4 * 2 ** 30;

/** The longest prompt {@link scorePrompt} takes for a model: its f32 cache within MAX_SCORE_CACHE_BYTES. */
export function maxScoredPrompt(config: ModelConfig): number {
  return Math.floor(MAX_SCORE_CACHE_BYTES / (2 * config.nLayers * config.kvDim * 4));
}

/**
 * Scores a prompt in forwards of at most MAX_FORWARD_ROWS rows over a cache as long as the prompt.
 * @param gpu the device
 * @param config the model
 * @param weights its weights as served
 * @param ids the prompt (all in the vocabulary, at most maxScoredPrompt(config) ids)
 * @param top alternatives per position, 0..20
 * @param options `rowsPerForward`: most rows per forward (default MAX_FORWARD_ROWS; tests make it small)
 * @returns (ids.length − 1, LOGPROB_RECORD_WORDS) u32: record t, for ids[t + 1], in the sampler's layout
 *   (kernels/ops/logprobs.ts; choice.ts readLogprob reads one)
 */
export async function scorePrompt(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  ids: readonly number[],
  top: number,
  { rowsPerForward = MAX_FORWARD_ROWS }: { rowsPerForward?: number } = {},
): Promise<Uint32Array> {
  const n = ids.length;
  const preds = n - 1;
  if (preds < 1) return new Uint32Array(0);
  if (n > maxScoredPrompt(config)) {
    throw new Error(`Cannot score a prompt of ${n} ids: at most ${maxScoredPrompt(config)}`);
  }
  const fit = Math.floor(Math.min(MAX_LOGITS_BYTES, gpu.maxBindingBytes) / (config.vocabSize * 4));
  const rowsPer = Math.max(1, Math.min(rowsPerForward, fit));
  const buckets = prefillBuckets(rowsPer);
  const lastOff = Math.floor((preds - 1) / rowsPer) * rowsPer;
  // The cache holds this prompt only (a model's context can be 128K positions), and the last forward's
  // padding rows.
  const c: ModelConfig = { ...config, seqLen: Math.max(n, lastOff + bucketOf(preds - lastOff, buckets)) };
  const widest = bucketOf(Math.min(preds, rowsPer), buckets); // rows of the widest forward, padded
  const s = createForwardState(gpu, c, { maxRows: widest, maxLogitRows: widest });
  const u32 = (words: number, label: string) => createStorage(gpu, words * 4, label);
  const idBuf = u32(widest, "score ids"); // (rows) u32: this forward's prompt ids
  const targets = u32(widest, "score targets"); // (rows) u32: the next id of each row
  const rowIndex = u32(widest, "score rows"); // (rows) u32: 0, 1, …: row r is "slot" r
  const slotParams = createStorage(gpu, widest * SLOT_PARAMS_BYTES, "score slot params");
  const records = u32(widest * LOGPROB_RECORD_WORDS, "score records"); // (rows, REC) u32
  const all = u32(preds * LOGPROB_RECORD_WORDS, "score records all"); // (n − 1, REC) u32
  const owned = [idBuf, targets, rowIndex, slotParams, records, all, ...forwardStateBuffers(s)];
  try {
    writeBuffer(gpu, rowIndex, Uint32Array.from({ length: widest }, (_, r) => r));
    const params = new Uint8Array(packSlotParams({ ...GREEDY_SLOT, logprobs: true, nTop: top }, {
      maxBias: 0,
      maxBan: 0,
    }));
    const packed = new Uint8Array(widest * SLOT_PARAMS_BYTES);
    for (let r = 0; r < widest; r++) packed.set(params, r * SLOT_PARAMS_BYTES);
    writeBuffer(gpu, slotParams, packed);
    const logprobs = createLogprobs(gpu);
    const norm = createRmsNorm(gpu);
    // Positions [off, off + rows) predict ids (off, off + rows]; the last id is never a row.
    for (let off = 0; off < preds; off += rowsPer) {
      const rows = Math.min(rowsPer, preds - off);
      const padded = bucketOf(rows, buckets);
      const pad = (part: number[]) => Uint32Array.from({ length: padded }, (_, i) => part[i] ?? 0);
      writeBuffer(gpu, idBuf, pad(ids.slice(off, off + rows)));
      writeBuffer(gpu, targets, pad(ids.slice(off + 1, off + 1 + rows)));
      writeBuffer(gpu, s.state, Uint32Array.of(off, 0, 0, 0)); // pos = off, step 0
      const steps: Encodable[] = [
        bindForward(gpu, c, weights, s, { ids: idBuf, rows: padded, logits: "none" }),
        norm.bind({ x: s.x, weight: weights.finalNorm, y: s.xn, rows: padded, dim: c.dim, eps: c.normEps }),
        ...bindLmHead(gpu, c, weights, { x: s.xn, y: s.logits, rows: padded }).map((h) => h.step),
        logprobs.bind({
          logits: s.logits,
          slotParams,
          gather: rowIndex,
          rowSlot: rowIndex,
          rows,
          vocabSize: c.vocabSize,
          maxSlots: widest,
          state: s.state,
          outTokens: targets,
          outLogprobs: records,
        }),
      ];
      if (off === 0) await checkPipelines(gpu);
      const enc = gpu.device.createCommandEncoder({ label: "score prompt" });
      const pass = enc.beginComputePass();
      steps.forEach((step) => step.encode(pass));
      pass.end();
      enc.copyBufferToBuffer(
        records,
        0,
        all,
        off * LOGPROB_RECORD_WORDS * 4,
        rows * LOGPROB_RECORD_WORDS * 4,
      );
      gpu.device.queue.submit([enc.finish()]);
    }
    return await readU32(gpu, all, preds * LOGPROB_RECORD_WORDS);
  } finally {
    owned.forEach((b) => b.destroy());
  }
}
