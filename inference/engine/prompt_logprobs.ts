/**
 * Log probabilities of a prompt's own tokens (the completions API's `echo` with `logprobs`, what
 * lm-evaluation-harness scores continuations with): one forward over the prompt as a single sequence, then
 * the LM head in row chunks, each chunk's rows through the sampler's logprobs kernel (kernels/ops/logprobs.ts)
 * with the next prompt id as the "chosen" token: entry t is log p(ids[t + 1] | ids ≤ t) and the `top` most
 * likely ids there, as generation reports them (raw logits, ties to the lower id).
 *
 * It runs beside the scheduler on the same queue, with its own activations (forwards of at most 256 rows)
 * and an f32 cache as long as the longest prompt, for a group of prompts at a time ({@link ScoreQueue}: the
 * prompts that arrived while the last group ran), all freed at the end: at the 8B shape 256 KiB of cache
 * per id, so prompts are capped at 4 GiB of it (16K ids).
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

/** The longest prompt {@link scorePrompts} takes for a model: its f32 cache within MAX_SCORE_CACHE_BYTES. */
export function maxScoredPrompt(config: ModelConfig): number {
  return Math.floor(MAX_SCORE_CACHE_BYTES / (2 * config.nLayers * config.kvDim * 4));
}

/**
 * Scores prompts, one after another, in forwards of at most MAX_FORWARD_ROWS rows over a cache as long as
 * the longest: one set of activations and one readback for them all (a readback costs ≥ 10 ms in Deno,
 * docs/webgpu.md; an evaluation harness sends many short prompts, whose forwards take less on a small model).
 * A prompt's forwards overwrite the cache from position 0, after the previous prompt's on the same queue.
 * @param gpu the device
 * @param config the model
 * @param weights its weights as served
 * @param prompts the prompts (ids all in the vocabulary, each at most maxScoredPrompt(config) ids)
 * @param top alternatives per position, 0..20
 * @param options `rowsPerForward`: most rows per forward (default MAX_FORWARD_ROWS; tests make it small);
 *   `next[p]`: also the distribution after prompt p's last id (the next token's: a greedy one-token
 *   request's answer, engine.ts), as one more record whose chosen id is 0
 * @returns per prompt, (ids.length − 1, LOGPROB_RECORD_WORDS) u32: record t, for ids[t + 1], in the
 *   sampler's layout (kernels/ops/logprobs.ts; choice.ts readLogprob reads one); one more with `next`
 */
export async function scorePrompts(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  prompts: readonly (readonly number[])[],
  top: number,
  { rowsPerForward = MAX_FORWARD_ROWS, next = [] }: { rowsPerForward?: number; next?: readonly boolean[] } =
    {},
): Promise<Uint32Array[]> {
  const most = maxScoredPrompt(config);
  const long = prompts.find((ids) => ids.length > most);
  if (long) throw new Error(`Cannot score a prompt of ${long.length} ids: at most ${most}`);
  // rows scored per prompt: every position but the last, which has no next prompt id unless `next` asks
  const predsOf = prompts.map((ids, p) => Math.max(0, ids.length - 1) + (next[p] && ids.length > 0 ? 1 : 0));
  const firstRecord: number[] = []; // prompt p's records start at firstRecord[p] in `all`
  let total = 0;
  for (const preds of predsOf) {
    firstRecord.push(total);
    total += preds;
  }
  if (total === 0) return prompts.map(() => new Uint32Array(0));
  const fit = Math.floor(Math.min(MAX_LOGITS_BYTES, gpu.maxBindingBytes) / (config.vocabSize * 4));
  const rowsPer = Math.max(1, Math.min(rowsPerForward, fit));
  const buckets = prefillBuckets(rowsPer);
  // The cache holds one prompt at a time (a model's context can be 128K positions), and the last forward's
  // padding rows.
  const cacheLen = (preds: number) => {
    const lastOff = Math.floor((preds - 1) / rowsPer) * rowsPer;
    return Math.max(preds + 1, lastOff + bucketOf(preds - lastOff, buckets));
  };
  const longest = Math.max(...predsOf);
  const c: ModelConfig = { ...config, seqLen: Math.max(...predsOf.filter((p) => p > 0).map(cacheLen)) };
  const widest = bucketOf(Math.min(longest, rowsPer), buckets); // rows of the widest forward, padded
  const s = createForwardState(gpu, c, { maxRows: widest, maxLogitRows: widest });
  const u32 = (words: number, label: string) => createStorage(gpu, words * 4, label);
  const idBuf = u32(widest, "score ids"); // (rows) u32: this forward's prompt ids
  const targets = u32(widest, "score targets"); // (rows) u32: the next id of each row
  const rowIndex = u32(widest, "score rows"); // (rows) u32: 0, 1, …: row r is "slot" r
  const slotParams = createStorage(gpu, widest * SLOT_PARAMS_BYTES, "score slot params");
  const records = u32(widest * LOGPROB_RECORD_WORDS, "score records"); // (rows, REC) u32
  const all = u32(total * LOGPROB_RECORD_WORDS, "score records all"); // every prompt's, end to end
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
    // The forward, final norm and LM head over `padded` rows, bound once per row bucket for the whole group
    // (a forward binds hundreds of bind groups; the group's prompts reuse a few buckets).
    const bound = new Map<number, Encodable[]>();
    const forward = (padded: number) => {
      let steps = bound.get(padded);
      if (!steps) {
        steps = [
          bindForward(gpu, c, weights, s, { ids: idBuf, rows: padded, logits: "none" }),
          norm.bind({ x: s.x, weight: weights.finalNorm, y: s.xn, rows: padded, dim: c.dim, eps: c.normEps }),
          ...bindLmHead(gpu, c, weights, { x: s.xn, y: s.logits, rows: padded }).map((h) => h.step),
        ];
        bound.set(padded, steps);
      }
      return steps;
    };
    let checked = false;
    for (const [p, ids] of prompts.entries()) {
      // Positions [off, off + rows) predict ids (off, off + rows]; the last id is never a row.
      for (let off = 0; off < predsOf[p]; off += rowsPer) {
        const rows = Math.min(rowsPer, predsOf[p] - off);
        const padded = bucketOf(rows, buckets);
        const pad = (part: readonly number[]) => Uint32Array.from({ length: padded }, (_, i) => part[i] ?? 0);
        writeBuffer(gpu, idBuf, pad(ids.slice(off, off + rows)));
        writeBuffer(gpu, targets, pad(ids.slice(off + 1, off + 1 + rows)));
        writeBuffer(gpu, s.state, Uint32Array.of(off, 0, 0, 0)); // pos = off, step 0
        const steps: Encodable[] = [
          ...forward(padded),
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
        if (!checked) await checkPipelines(gpu);
        checked = true;
        const enc = gpu.device.createCommandEncoder({ label: "score prompt" });
        const pass = enc.beginComputePass();
        steps.forEach((step) => step.encode(pass));
        pass.end();
        const at = (firstRecord[p] + off) * LOGPROB_RECORD_WORDS * 4;
        enc.copyBufferToBuffer(records, 0, all, at, rows * LOGPROB_RECORD_WORDS * 4);
        gpu.device.queue.submit([enc.finish()]);
      }
    }
    const words = await readU32(gpu, all, total * LOGPROB_RECORD_WORDS);
    return predsOf.map((preds, p) =>
      words.subarray(firstRecord[p] * LOGPROB_RECORD_WORDS, (firstRecord[p] + preds) * LOGPROB_RECORD_WORDS)
    );
  } finally {
    owned.forEach((b) => b.destroy());
  }
}

/**
 * Most prompt ids scored in one group of a {@link ScoreQueue}: every prompt of a group waits for the whole
 * group (about 4 s at the 8B shape's 2,000 prompt ids/s), and a few short prompts already share the readback.
 */
export const MAX_GROUP_IDS = 8192;

/** Scores a group of prompts (scorePrompts for the key's model): their ids, alternatives, `next` flags. */
export type ScoreGroup<K> = (
  key: K,
  prompts: readonly (readonly number[])[],
  top: number,
  next: readonly boolean[],
) => Promise<Uint32Array[]>;

/** A prompt waiting in a {@link ScoreQueue}. */
interface WaitingPrompt<K> {
  key: K;
  ids: readonly number[];
  top: number;
  /** also the next token's distribution (scorePrompts' `next`) */
  next: boolean;
  resolve: (records: Uint32Array | null) => void;
  reject: (err: unknown) => void;
}

/**
 * Prompts to score, one group at a time: those that arrive while a group runs go together in the next
 * (one {@link scorePrompts} call: one set of activations and one readback), so an evaluation harness's
 * concurrent requests share them and nothing waits for a group to fill. A group holds prompts of one key
 * (the served model), in arrival order, up to MAX_GROUP_IDS ids (always at least one prompt), scored with
 * the most alternatives any of them asks.
 */
export class ScoreQueue<K> {
  #waiting: WaitingPrompt<K>[] = [];
  #busy = false;
  #run: ScoreGroup<K>;
  #maxGroupIds: number;

  /**
   * @param run scores a group (scorePrompts for the key's model)
   * @param maxGroupIds most ids in a group
   */
  constructor(run: ScoreGroup<K>, maxGroupIds = MAX_GROUP_IDS) {
    this.#run = run;
    this.#maxGroupIds = maxGroupIds;
  }

  /** Prompts waiting for their group (not those being scored). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Scores a prompt with its group.
   * @param key the model it is scored on
   * @param ids the prompt
   * @param top alternatives per position
   * @param signal aborting it while the prompt waits takes it out of the queue (a client that went away)
   * @param next also the next token's distribution (with at least one alternative: its likeliest id)
   * @returns its records, as scorePrompts returns them; null if aborted before its group started
   */
  score(
    key: K,
    ids: readonly number[],
    top: number,
    signal?: AbortSignal,
    next = false,
  ): Promise<Uint32Array | null> {
    if (signal?.aborted) return Promise.resolve(null);
    const done = new Promise<Uint32Array | null>((resolve, reject) => {
      const w: WaitingPrompt<K> = { key, ids, top, next, resolve, reject };
      this.#waiting.push(w);
      signal?.addEventListener("abort", () => {
        if (!this.#waiting.includes(w)) return; // scored, or being scored: its answer comes
        this.#waiting = this.#waiting.filter((x) => x !== w);
        resolve(null);
      }, { once: true });
    });
    if (!this.#busy) this.#next();
    return done;
  }

  #next(): void {
    const first = this.#waiting[0];
    if (!first) {
      this.#busy = false;
      return;
    }
    this.#busy = true;
    const group: WaitingPrompt<K>[] = [];
    let ids = 0;
    this.#waiting = this.#waiting.filter((w) => {
      const joins = w.key === first.key && (group.length === 0 || ids + w.ids.length <= this.#maxGroupIds);
      if (!joins) return true;
      group.push(w);
      ids += w.ids.length;
      return false;
    });
    const top = Math.max(...group.map((w) => w.next ? Math.max(1, w.top) : w.top));
    this.#run(first.key, group.map((w) => w.ids), top, group.map((w) => w.next)).then(
      (records) => group.forEach((w, i) => w.resolve(records[i])),
      (err) => group.forEach((w) => w.reject(err)),
    ).finally(() => this.#next());
  }
}
