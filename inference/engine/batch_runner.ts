/**
 * The GPU side of continuous batching for one model: records chunks of batched forwards into one submit
 * each and reads back what they sampled.
 *
 * A chunk is a list of steps; each step is one forward over rows of several sequences (decode rows,
 * and pieces of prompts: chunked prefill) followed by sampling for the rows whose logits are wanted and,
 * in one prefill step of a chunk at most, the logprobs of prompt rows (StepSpec.score). The
 * host writes every step's rows into a program buffer (kernels/ops/batch_rows.ts), so all steps go into
 * one submit and one readback (a readback costs ≥ 10 ms in Deno, docs/webgpu.md §3); decode rows embed the
 * id their sequence sampled in the previous step, which stays on the GPU. Sequences live in slots: each
 * slot has its sampling settings, RNG step, output counts (penalties), logit bias, ban list, token mask
 * (structured output) and block table (kernels/ops/batch_sample.ts, logits_process.ts, paged_kv.ts).
 *
 * Forwards run at a few fixed row counts (buckets; padding rows are no-ops), and {@link BatchRunner.prebuild}
 * binds every bucket's work when the model is installed, as vLLM captures its CUDA graphs at start: binding
 * a new bucket mid-serving took ~400 bind groups and compiled pipelines (row counts are shader constants),
 * which stalled every stream for up to 2 s on the H100. A step's plan is the layers over its rows (per kind
 * and row bucket) followed by the LM head and sampling over its logit rows (per logit bucket), so the set of
 * bound bodies stays small.
 */
import {
  createAdvance,
  createStorage,
  type Encodable,
  type Gpu,
  type Kernel,
  sequence,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import {
  createBatchPrepare,
  createBatchSample,
  createDispatchBuffer,
  createGatherRows,
  createLogitsProcess,
  createLogprobs,
  createPagedAttention,
  createPagedFlashAttention,
  createRmsNorm,
  GREEDY_SLOT,
  LOGPROB_RECORD_WORDS,
  maskWords,
  MAX_TOP_LOGPROBS,
  packSlotParams,
  type PagedAttentionArgs,
  pagedMaxSplits,
  ROW_ENTRY_WORDS,
  ROW_NONE,
  SLOT_PARAMS_BYTES,
  SLOT_STATE_WORDS,
  slotProcesses,
  type SlotSettings,
  SPLIT_CAP,
  SPLIT_SPAN,
} from "../../kernels/ops/mod.ts";
import {
  bindForwardSteps,
  bindLmHead,
  createForwardState,
  type ForwardState,
  forwardStateBuffers,
  type ForwardStep,
  forwardStep,
  type GpuWeights,
  type ModelConfig,
  type PagedKv,
} from "../model/mod.ts";
import type { KvCache } from "./kv_cache.ts";
import { bucketOf, decodeBuckets, logitBuckets, prefillBuckets } from "./row_buckets.ts";

/** Prefill forwards of at least this many rows attend their prompt rows tiled ({@link BatchRunner}). */
export const TILED_PROMPT_ROWS = 256;

/**
 * Prompt rows one pass of the LM head scores (StepSpec.score). A multiple of 64: each pass reads its rows'
 * indices at an offset of one index list, and storage offsets align to 256 bytes (WebGPU's default
 * minStorageBufferOffsetAlignment).
 */
export const SCORE_PASS_ROWS = 64;

/** One row of a step: a sequence slot, the position it fills, and its token (null: the slot's last pick). */
export interface RowSpec {
  slot: number;
  pos: number;
  token: number | null;
}

/**
 * One forward: its rows, and the indices of the rows whose logits are sampled (one per slot at most).
 * Decode forwards hold one row per running sequence; prefill forwards hold pieces of prompts and run every
 * layer linear as a GEMM (model.ts PagedKv.prefill). Keeping the two apart (rather than mixing them in one
 * forward) makes each row's numbers independent of the batch: batched greedy decode reproduces
 * one-at-a-time greedy decode bit for bit, whatever joins or leaves.
 */
export interface StepSpec {
  kind: "decode" | "prefill";
  rows: RowSpec[];
  gather: number[];
  /**
   * Prefill only, in at most one step of a chunk: the logprobs of rows [0, targets.length) (prompt
   * logprobs: the scored prompts' rows come first), record r for the id targets[r] after row r, with the
   * `top` likeliest ids (0..MAX_TOP_LOGPROBS), from the LM head over those rows in passes of
   * SCORE_PASS_ROWS after the step's sampling.
   */
  score?: { targets: readonly number[]; top: number };
  /**
   * In at most one step of a chunk: indices into `gather` whose final-normed hidden states (the LM head's
   * input: last-token embeddings) are read back, in this order.
   */
  embed?: readonly number[];
}

/** What a chunk sampled: tokens[step · maxSlots + slot], and logprob records when asked. */
export interface ChunkResult {
  tokens: Uint32Array;
  /** (steps, maxSlots, LOGPROB_RECORD_WORDS) u32 (f32 bits for logprobs), or null */
  logprobs: Uint32Array | null;
  /** the scoring step's records (StepSpec.score), (targets.length, LOGPROB_RECORD_WORDS) u32, or null */
  scores: Uint32Array | null;
  /** the embedding step's hidden states (StepSpec.embed), (embed.length, dim) f32, or null */
  embeds: Float32Array | null;
}

/** A submitted chunk whose readback has not started. */
interface PendingChunk {
  staging: GPUBuffer;
  tokenBytes: number;
  lpBytes: number;
  scoreBytes: number;
  embedBytes: number;
  result: Promise<ChunkResult>;
  resolve: (r: ChunkResult) => void;
  reject: (e: unknown) => void;
}

/** Sizes of a runner. */
export interface BatchRunnerOptions {
  /** sequence slots (--max-num-seqs) */
  maxSlots: number;
  /** rows per forward (--max-num-batched-tokens), ≥ maxSlots */
  maxRows: number;
  /** steps per chunk */
  maxChunk: number;
  /**
   * Prompt rows per prefill forward while other sequences decode (chunked prefill: a smaller piece
   * delays the decoding streams less and the new prompt's first token more); idle, a forward takes maxRows.
   */
  decodingPrefillRows?: number;
  /**
   * Decode forwards of every row count take the batched kernels (PagedKv.decodePath "gemv"), and prompt
   * rows of every piece size the tiled attention and their linears' one family (PagedKv.promptPath "gemm");
   * default false
   */
  batchInvariant?: boolean;
  /**
   * Decode attention stages each tile's K rows in workgroup memory with coalesced loads (kernels/ops
   * paged_attention.ts PagedAttentionOptions.stageKeys; the same bits); default false until timed
   */
  stagedKeys?: boolean;
  /** logit_bias entries and banned ids per slot */
  maxBias: number;
  maxBan: number;
}

/** A model's batched forwards over a shared KV cache. */
export class BatchRunner {
  readonly config: ModelConfig;
  readonly options: BatchRunnerOptions;
  readonly cache: KvCache;
  #gpu: Gpu;
  #weights: GpuWeights;
  #s: ForwardState;
  #b: Record<string, GPUBuffer>;
  #plans = new Map<string, Encodable>();
  #bodies = new Map<string, ForwardStep[]>();
  #heads = new Map<number, ForwardStep[]>();
  #tails = new Map<number, ForwardStep[]>();
  #scorePasses: ForwardStep[][] = [];
  /** the alternatives scoreParams asks for (-1: not written yet) */
  #scoreTop = -1;
  /** ends every step: the chunk's next step reads its program */
  #advance: ForwardStep;
  /** an embedding step's rows of xn (after the final norm) into embedOut, by embedMap */
  #keepEmbeds: ForwardStep;
  /** The latest submitted chunk, not mapped yet. */
  #pending: PendingChunk | null = null;
  #maxBlocks: number;
  /** decode rows: per-row workgroups and splits (paged_attention.ts) */
  #attention: Kernel<PagedAttentionArgs>;
  /** prompt rows: blocks of rows share each K/V tile (paged_flash_attention.ts) */
  #promptAttention: Kernel<PagedAttentionArgs>;
  /** PagedKv.decodePath of every decode forward and LM head */
  #decodePath: PagedKv["decodePath"];
  /** The row counts of decode and prefill forwards and of logit rows (row_buckets.ts), fixed by the options. */
  #decodeBuckets: readonly number[];
  #prefillBuckets: readonly number[];
  #logitBuckets: readonly number[];

  constructor(
    gpu: Gpu,
    config: ModelConfig,
    weights: GpuWeights,
    cache: KvCache,
    options: BatchRunnerOptions,
  ) {
    if (options.maxRows < options.maxSlots) {
      throw new Error(
        `Cannot batch: ${options.maxRows} rows per forward is fewer than ${options.maxSlots} slots`,
      );
    }
    this.#gpu = gpu;
    this.config = config;
    this.#weights = weights;
    this.cache = cache;
    this.options = options;
    const { maxSlots, maxRows, maxChunk, maxBias, maxBan } = options;
    this.#maxBlocks = cache.layout().maxBlocks;
    this.#decodeBuckets = decodeBuckets(maxSlots);
    this.#prefillBuckets = prefillBuckets(maxRows);
    this.#logitBuckets = logitBuckets(maxSlots);
    // Score passes read whole passes of rows: the last one may reach past maxRows.
    const scoreRows = Math.ceil(maxRows / SCORE_PASS_ROWS) * SCORE_PASS_ROWS;
    this.#s = createForwardState(gpu, config, {
      maxRows: scoreRows,
      maxLogitRows: Math.max(maxSlots, SCORE_PASS_ROWS),
      paged: true,
    });
    const buf = (words: number, label: string) => createStorage(gpu, words * 4, label);
    const vocab = config.vocabSize;
    this.#b = {
      ids: buf(maxRows, "batch ids"),
      rowPos: buf(maxRows, "batch rowPos"),
      rowSlot: buf(maxRows, "batch rowSlot"),
      gather: buf(maxSlots, "batch gather"),
      progRows: buf(maxChunk * maxRows * ROW_ENTRY_WORDS, "batch progRows"),
      progGather: buf(maxChunk * maxSlots, "batch progGather"),
      slots: buf(maxSlots * SLOT_STATE_WORDS, "batch slots"),
      slotParams: createStorage(gpu, maxSlots * SLOT_PARAMS_BYTES, "batch slotParams"),
      bias: buf(maxSlots * maxBias * 2, "batch logit bias"),
      ban: buf(maxSlots * Math.max(maxBan, 1), "batch ban"),
      mask: buf(maxSlots * maskWords(vocab), "batch token mask"),
      counts: buf(maxSlots * vocab, "batch counts"),
      blockTable: buf(maxSlots * this.#maxBlocks, "batch block table"),
      procLogits: buf(maxSlots * vocab, "batch processed logits"),
      outTokens: buf(maxChunk * maxSlots, "batch sampled ids"),
      outLogprobs: buf(maxChunk * maxSlots * LOGPROB_RECORD_WORDS, "batch logprobs"),
      rowSplits: buf(maxRows, "batch rowSplits"),
      dispatch: createDispatchBuffer(gpu, "batch attention grid"),
      // prompt scoring (StepSpec.score): row r is "slot" r of its own params, target and record
      scoreRows: buf(scoreRows, "score rows"), // 0, 1, 2, …
      scoreParams: createStorage(gpu, scoreRows * SLOT_PARAMS_BYTES, "score params"),
      scoreTargets: buf(scoreRows, "score targets"),
      scoreOut: buf(scoreRows * LOGPROB_RECORD_WORDS, "score records"),
      scoreStep: buf(4, "score step"), // step 0: the records are the scoring step's alone
      // embeddings (StepSpec.embed): out row i is logit row embedMap[i] of xn
      embedMap: buf(maxSlots, "embed rows"),
      embedOut: buf(maxSlots * config.dim, "embeddings"),
    };
    writeBuffer(gpu, this.#b.scoreRows, Uint32Array.from({ length: scoreRows }, (_, r) => r));
    this.#advance = forwardStep(
      "advance",
      createAdvance(gpu).bind({ state: this.#s.state, nTokens: 0, stepInc: 1 }),
    );
    this.#keepEmbeds = forwardStep(
      "embed",
      createGatherRows(gpu).bind({
        gather: this.#b.embedMap,
        x: this.#s.xn,
        out: this.#b.embedOut,
        rows: maxSlots,
        dim: config.dim,
      }),
    );
    this.#attention = createPagedAttention(gpu, { stageKeys: options.stagedKeys ?? false });
    this.#promptAttention = createPagedFlashAttention(gpu);
    this.#decodePath = options.batchInvariant ? "gemv" : "decode";
    writeBuffer(gpu, this.#b.blockTable, new Uint32Array(maxSlots * this.#maxBlocks).fill(ROW_NONE));
  }

  /** Bytes of the runner's own buffers (activations, logits, slot state, programs). */
  get scratchBytes(): number {
    const all = [...forwardStateBuffers(this.#s), ...Object.values(this.#b)];
    return all.reduce((n, b) => n + b.size, 0);
  }

  /**
   * Installs a sequence in a slot: its settings, RNG step, output counts (prompt ids flagged for the
   * repetition penalty, earlier output counted) when it penalises, and its whole block table.
   */
  setSlot(
    slot: number,
    settings: SlotSettings,
    { step, prompt, output, blocks }: {
      step: number;
      prompt: readonly number[];
      output: readonly number[];
      blocks: readonly number[];
    },
  ): void {
    const { maxBias, maxBan } = this.options;
    const gpu = this.#gpu;
    writeBuffer(
      gpu,
      this.#b.slotParams,
      new Uint8Array(packSlotParams(settings, { maxBias, maxBan })),
      slot * SLOT_PARAMS_BYTES,
    );
    writeBuffer(gpu, this.#b.slots, Uint32Array.of(ROW_NONE, step, 0, 0), slot * SLOT_STATE_WORDS * 4);
    if (settings.bias.length > 0) {
      const bias = new Uint32Array(settings.bias.length * 2);
      const f = new Float32Array(bias.buffer);
      settings.bias.forEach(([id, v], j) => {
        bias[2 * j] = id;
        f[2 * j + 1] = v;
      });
      writeBuffer(gpu, this.#b.bias, bias, slot * maxBias * 8);
    }
    if (settings.ban.length > 0) {
      writeBuffer(gpu, this.#b.ban, Uint32Array.from(settings.ban), slot * maxBan * 4);
    }
    if (slotProcesses(settings)) {
      const vocab = this.config.vocabSize;
      const counts = new Uint32Array(vocab);
      for (const id of prompt) if (id < vocab) counts[id] |= 0x80000000;
      for (const id of output) if (id < vocab) counts[id]++;
      writeBuffer(gpu, this.#b.counts, counts, slot * vocab * 4);
    }
    const table = new Uint32Array(this.#maxBlocks).fill(ROW_NONE);
    table.set(blocks);
    writeBuffer(gpu, this.#b.blockTable, table, slot * this.#maxBlocks * 4);
  }

  /**
   * Writes a slot's token mask, which the next chunk applies while the slot's settings say `masked`.
   * @param slot the sequence slot
   * @param words maskWords(vocabSize) u32: bit (id & 31) of word id >> 5 set = id allowed
   */
  setMask(slot: number, words: Uint32Array): void {
    const n = maskWords(this.config.vocabSize);
    if (words.length !== n) {
      throw new Error(`Cannot set the token mask of slot ${slot}: expected ${n} words, got ${words.length}`);
    }
    writeBuffer(this.#gpu, this.#b.mask, words, slot * n * 4);
  }

  /** Writes block table entries [from, from + blocks.length) of a slot. */
  setBlocks(slot: number, from: number, blocks: readonly number[]): void {
    if (blocks.length === 0) return;
    if (from + blocks.length > this.#maxBlocks) {
      throw new Error(
        `Cannot map ${from + blocks.length} blocks: a sequence holds at most ${this.#maxBlocks}`,
      );
    }
    writeBuffer(this.#gpu, this.#b.blockTable, Uint32Array.from(blocks), (slot * this.#maxBlocks + from) * 4);
  }

  /**
   * Records and submits a chunk now; the promise resolves when its ids (and logprobs) are read back, which
   * starts when the next chunk is submitted or on {@link flush}. Chunks complete in submission order.
   */
  submit(steps: readonly StepSpec[], wantLogprobs: boolean): Promise<ChunkResult> {
    const { maxSlots, maxChunk } = this.options;
    if (steps.length < 1 || steps.length > maxChunk) throw new Error(`Cannot submit ${steps.length} steps`);
    const scoring = steps.filter((st) => st.score);
    if (scoring.length > 1) throw new Error("Cannot score prompt rows in more than one step of a chunk");
    const scored = scoring[0]?.score?.targets.length ?? 0;
    const embedding = steps.filter((st) => st.embed?.length);
    if (embedding.length > 1) throw new Error("Cannot read embeddings in more than one step of a chunk");
    const embedded = embedding[0]?.embed?.length ?? 0;
    const gpu = this.#gpu;
    // Each step: its forward and sampling, then (before score passes overwrite xn) its embeddings kept,
    // then its score passes.
    const plans = steps.map((st, k) => {
      const { rows, logits } = this.#writeProgram(st, k);
      const keep = st.embed?.length ? [this.#writeEmbed(st.embed, logits)] : [];
      const passes = st.score ? this.#writeScore(st.score, rows) : 0;
      return [
        this.#plan(st.kind, rows, logits),
        ...[...keep, ...this.#scorePasses.slice(0, passes).flat()].map((s) => s.step),
      ];
    });
    writeBuffer(gpu, this.#s.state, new Uint32Array(4));
    const encoder = gpu.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const plan of plans) {
      plan.forEach((p) => p.encode(pass));
      this.#advance.step.encode(pass);
    }
    pass.end();
    const tokenBytes = steps.length * maxSlots * 4;
    const lpBytes = wantLogprobs ? tokenBytes * LOGPROB_RECORD_WORDS : 0;
    const scoreBytes = scored * LOGPROB_RECORD_WORDS * 4;
    const embedBytes = embedded * this.config.dim * 4;
    const staging = gpu.device.createBuffer({
      label: "batch readback",
      size: tokenBytes + lpBytes + scoreBytes + embedBytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.copyBufferToBuffer(this.#b.outTokens, 0, staging, 0, tokenBytes);
    if (lpBytes > 0) encoder.copyBufferToBuffer(this.#b.outLogprobs, 0, staging, tokenBytes, lpBytes);
    if (scoreBytes > 0) {
      encoder.copyBufferToBuffer(this.#b.scoreOut, 0, staging, tokenBytes + lpBytes, scoreBytes);
    }
    if (embedBytes > 0) {
      encoder.copyBufferToBuffer(this.#b.embedOut, 0, staging, tokenBytes + lpBytes + scoreBytes, embedBytes);
    }
    const commands = encoder.finish();
    // Deno's mapAsync blocks the JS thread until every submitted command has finished (docs/webgpu.md §3),
    // so mapping a chunk when it is submitted would leave the GPU idle while the host plans and records the
    // next one. Instead the previous chunk is mapped now, before this one is submitted: the host waits for
    // the previous chunk while this one is already recorded, and submits it the moment the GPU is free.
    this.#mapPending();
    gpu.device.queue.submit([commands]);
    let settle!: { resolve: (r: ChunkResult) => void; reject: (e: unknown) => void };
    const result = new Promise<ChunkResult>((resolve, reject) => (settle = { resolve, reject }));
    this.#pending = { staging, tokenBytes, lpBytes, scoreBytes, embedBytes, result, ...settle };
    return result;
  }

  /** Writes an embedding step's rows (indices into its `logits` gathered rows); returns the step keeping them. */
  #writeEmbed(embed: readonly number[], logits: number): ForwardStep {
    if (embed.some((i) => i < 0 || i >= logits)) {
      throw new Error("Cannot keep an embedding of an ungathered row");
    }
    const map = new Uint32Array(this.options.maxSlots).fill(ROW_NONE);
    map.set(embed);
    writeBuffer(this.#gpu, this.#b.embedMap, map);
    return this.#keepEmbeds;
  }

  /**
   * Writes a scoring step's targets (and its alternatives' count when it changed); returns its passes of
   * the LM head, bound on first use.
   */
  #writeScore(score: NonNullable<StepSpec["score"]>, rows: number): number {
    const n = score.targets.length;
    if (n > rows) throw new Error(`Cannot score ${n} rows of a step of ${rows}`);
    if (score.top < 0 || score.top > MAX_TOP_LOGPROBS) {
      throw new Error(`Cannot score ${score.top} alternatives`);
    }
    const gpu = this.#gpu;
    writeBuffer(gpu, this.#b.scoreTargets, Uint32Array.from(score.targets));
    if (score.top !== this.#scoreTop) {
      const one = new Uint8Array(packSlotParams({ ...GREEDY_SLOT, logprobs: true, nTop: score.top }, {
        maxBias: this.options.maxBias,
        maxBan: this.options.maxBan,
      }));
      const all = new Uint8Array(this.#b.scoreParams.size);
      for (let at = 0; at < all.length; at += SLOT_PARAMS_BYTES) all.set(one, at);
      writeBuffer(gpu, this.#b.scoreParams, all);
      this.#scoreTop = score.top;
    }
    const passes = Math.ceil(n / SCORE_PASS_ROWS);
    for (let j = this.#scorePasses.length; j < passes; j++) this.#scorePasses.push(this.#scorePass(j));
    return passes;
  }

  /**
   * Score pass j: rows [64j, 64j + 64) gathered, normed and through the LM head as logit rows 0..63, then
   * the logprobs kernel with row r as its own "slot" (scoreParams[r], scoreTargets[r], record r).
   */
  #scorePass(j: number): ForwardStep[] {
    const gpu = this.#gpu;
    const b = this.#b;
    const s = this.#s;
    const rows = SCORE_PASS_ROWS;
    const slice = { buffer: b.scoreRows, offset: j * rows * 4, size: rows * 4 };
    return [
      forwardStep(
        "score_gather",
        createGatherRows(gpu).bind({ gather: slice, x: s.x, out: s.xg!, rows, dim: this.config.dim }),
      ),
      ...this.#tail(rows),
      forwardStep(
        "score_logprobs",
        createLogprobs(gpu).bind({
          logits: s.logits,
          slotParams: b.scoreParams,
          gather: slice,
          rowSlot: b.scoreRows,
          rows,
          vocabSize: this.config.vocabSize,
          maxSlots: b.scoreRows.size / 4,
          state: b.scoreStep,
          outTokens: b.scoreTargets,
          outLogprobs: b.scoreOut,
        }),
      ),
    ];
  }

  /**
   * One step's work as labelled steps (with its score passes), its program written as chunk step 0, for
   * bench/profile.ts to time each in a pass of its own. "advance" is left out: it moves the chunk on, so the
   * steps can be run again and again. Not for serving (nothing is read back).
   */
  profileSteps(st: StepSpec): ForwardStep[] {
    const { rows, logits } = this.#writeProgram(st, 0);
    writeBuffer(this.#gpu, this.#s.state, new Uint32Array(4));
    const passes = st.score ? this.#writeScore(st.score, rows) : 0;
    return [...this.#planSteps(st.kind, rows, logits), ...this.#scorePasses.slice(0, passes).flat()];
  }

  /** Writes a step's rows and logit rows as chunk step `k`'s program; returns its buckets. */
  #writeProgram(st: StepSpec, k: number): { rows: number; logits: number } {
    const { maxSlots, maxRows } = this.options;
    const gpu = this.#gpu;
    const rows = bucketOf(st.rows.length, this.rowBuckets(st.kind));
    const logits = st.kind === "decode" ? rows : bucketOf(Math.max(st.gather.length, 1), this.#logitBuckets);
    if (st.gather.length > logits || logits > maxSlots) throw new Error("Cannot fit a step's logit rows");
    const prog = new Uint32Array(rows * ROW_ENTRY_WORDS).fill(ROW_NONE);
    st.rows.forEach((r, i) => prog.set([r.slot, r.pos, r.token ?? ROW_NONE, 0], i * ROW_ENTRY_WORDS));
    writeBuffer(gpu, this.#b.progRows, prog, k * maxRows * ROW_ENTRY_WORDS * 4);
    const gather = new Uint32Array(logits).fill(ROW_NONE);
    gather.set(st.gather);
    writeBuffer(gpu, this.#b.progGather, gather, k * maxSlots * 4);
    return { rows, logits };
  }

  /**
   * Starts reading a submitted chunk back if it is still waiting for its mapping (the latest one is mapped
   * only when the next is submitted); call before awaiting its result.
   */
  flush(result: Promise<ChunkResult>): void {
    if (this.#pending?.result === result) this.#mapPending();
  }

  #mapPending(): void {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    p.staging.mapAsync(GPUMapMode.READ).then(() => {
      const data = p.staging.getMappedRange().slice(0);
      p.staging.destroy();
      p.resolve({
        tokens: new Uint32Array(data, 0, p.tokenBytes / 4),
        logprobs: p.lpBytes > 0 ? new Uint32Array(data, p.tokenBytes, p.lpBytes / 4) : null,
        scores: p.scoreBytes > 0 ? new Uint32Array(data, p.tokenBytes + p.lpBytes, p.scoreBytes / 4) : null,
        embeds: p.embedBytes > 0
          ? new Float32Array(data, p.tokenBytes + p.lpBytes + p.scoreBytes, p.embedBytes / 4)
          : null,
      });
    }, (err) => {
      p.staging.destroy();
      p.reject(err);
    });
  }

  /** Step plans bound so far (all of them after {@link prebuild}). */
  get boundPlans(): number {
    return this.#plans.size;
  }

  /** The row counts forwards of `kind` run at. */
  rowBuckets(kind: StepSpec["kind"]): readonly number[] {
    return kind === "decode" ? this.#decodeBuckets : this.#prefillBuckets;
  }

  /**
   * Binds the work of every bucket now (compiling the pipelines it needs), so no step binds or compiles
   * mid-serving. It yields to the event loop after each plan, so on a hot swap the model being replaced
   * keeps serving while this one binds (the whole set is seconds of host work: BENCHMARKS.md, "First
   * start"). Resolves to the number of step plans.
   */
  async prebuild(): Promise<number> {
    const specs: [StepSpec["kind"], number, number][] = [];
    for (const rows of this.#decodeBuckets) specs.push(["decode", rows, rows]);
    for (const rows of this.#prefillBuckets) {
      for (const logits of this.#logitBuckets) if (logits <= rows) specs.push(["prefill", rows, logits]);
    }
    for (const [kind, rows, logits] of specs) {
      this.#plan(kind, rows, logits);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    // every score pass a prefill forward can need
    const passes = Math.ceil(this.options.maxRows / SCORE_PASS_ROWS);
    for (let j = this.#scorePasses.length; j < passes; j++) {
      this.#scorePasses.push(this.#scorePass(j));
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    return specs.length;
  }

  /**
   * The bound work of one step of a kind with `rows` rows and `logits` logit rows (cached): the forward and
   * its sampling; a scoring step's passes and every step's "advance" are encoded after it.
   */
  #plan(kind: StepSpec["kind"], rows: number, logits: number): Encodable {
    const key = `${kind}:${rows}:${logits}`;
    const hit = this.#plans.get(key);
    if (hit) return hit;
    const plan = sequence(this.#planSteps(kind, rows, logits).map((st) => st.step));
    this.#plans.set(key, plan);
    return plan;
  }

  /** {@link #plan}'s work as labelled steps (bodies and heads cached, the rest bound anew). */
  #planSteps(kind: StepSpec["kind"], rows: number, logits: number): ForwardStep[] {
    const gpu = this.#gpu;
    const c = this.config;
    const b = this.#b;
    const { maxSlots, maxRows } = this.options;
    const split = this.#attentionOf(kind, rows); // how #body's attention splits its rows
    const rowsArgs = {
      slotParams: b.slotParams,
      gather: b.gather,
      rowSlot: b.rowSlot,
      rows: logits,
      vocabSize: c.vocabSize,
      maxSlots,
    };
    return [
      forwardStep(
        "prepare",
        createBatchPrepare(gpu).bind({
          state: this.#s.state,
          progRows: b.progRows,
          progGather: b.progGather,
          slots: b.slots,
          ids: b.ids,
          rowPos: b.rowPos,
          rowSlot: b.rowSlot,
          gather: b.gather,
          rows,
          logitRows: logits,
          rowStride: maxRows,
          gatherStride: maxSlots,
          rowSplits: b.rowSplits,
          dispatch: b.dispatch,
          nKvHeads: c.nKvHeads,
          splitSpan: SPLIT_SPAN[split],
          maxSplits: SPLIT_CAP[split],
        }),
      ),
      ...this.#body(kind, rows),
      ...this.#head(logits),
      forwardStep(
        "process",
        createLogitsProcess(gpu).bind({
          ...rowsArgs,
          logits: this.#s.logits,
          slots: b.slots,
          counts: b.counts,
          bias: b.bias,
          ban: b.ban,
          maxBias: this.options.maxBias,
          maxBan: this.options.maxBan,
          out: b.procLogits,
          mask: b.mask,
        }),
      ),
      forwardStep(
        "sample",
        createBatchSample(gpu).bind({
          ...rowsArgs,
          logits: b.procLogits,
          state: this.#s.state,
          slots: b.slots,
          outTokens: b.outTokens,
          counts: b.counts,
        }),
      ),
      forwardStep(
        "logprobs",
        createLogprobs(gpu).bind({
          ...rowsArgs,
          logits: this.#s.logits,
          state: this.#s.state,
          outTokens: b.outTokens,
          outLogprobs: b.outLogprobs,
        }),
      ),
    ];
  }

  /**
   * The attention of a forward's rows: decode rows per row; prompt rows tiled (paged_flash_attention.ts) in
   * forwards of TILED_PROMPT_ROWS or more, or in all with `batchInvariant` (a row's bits must not depend on
   * the size of the piece it falls in), else per row too. Under load prompts come in pieces of ~2 decode
   * steps' rows, where the tiled kernel's few blocks were slower (BENCHMARKS.md, "tiled attention").
   */
  #attentionOf(kind: StepSpec["kind"], rows: number): keyof typeof SPLIT_SPAN {
    if (kind === "decode") return "decode";
    return this.options.batchInvariant || rows >= TILED_PROMPT_ROWS ? "tiled" : "prefill";
  }

  /** The embedding and every layer over `rows` rows of a kind (cached; the LM head is {@link #head}). */
  #body(kind: StepSpec["kind"], rows: number): ForwardStep[] {
    const key = `${kind}:${rows}`;
    const hit = this.#bodies.get(key);
    if (hit) return hit;
    const b = this.#b;
    const split = this.#attentionOf(kind, rows);
    const steps = bindForwardSteps(this.#gpu, this.config, this.#weights, this.#s, {
      ids: b.ids,
      rows,
      logits: "none",
      paged: {
        rowPos: b.rowPos,
        rowSlot: b.rowSlot,
        blockTable: b.blockTable,
        kPool: this.cache.kPool,
        vPool: this.cache.vPool,
        layout: this.cache.layout(),
        rowSplits: b.rowSplits,
        dispatch: b.dispatch,
        maxSplits: pagedMaxSplits(this.cache.shape.maxModelLen, SPLIT_SPAN[split], SPLIT_CAP[split]),
        attention: split === "tiled" ? this.#promptAttention : this.#attention,
        gather: b.gather,
        logitRows: 1,
        prefill: kind === "prefill",
        promptPath: this.options.batchInvariant ? "gemm" : "prompt",
        decodePath: this.#decodePath,
      },
    });
    // The paged forward ends with gather, final norm and LM head over its logit rows: bound per logit
    // bucket instead.
    const cut = steps.findLastIndex((st) => st.label === "gather");
    if (cut < 0) throw new Error("Cannot split the paged forward: it has no gather step");
    const body = steps.slice(0, cut);
    this.#bodies.set(key, body);
    return body;
  }

  /** Gather, final norm and LM head over `n` logit rows, as the paged forward binds them (cached). */
  #head(n: number): ForwardStep[] {
    const hit = this.#heads.get(n);
    if (hit) return hit;
    const s = this.#s;
    const head = [
      forwardStep(
        "gather",
        createGatherRows(this.#gpu).bind({
          gather: this.#b.gather,
          x: s.x,
          out: s.xg!,
          rows: n,
          dim: this.config.dim,
        }),
      ),
      ...this.#tail(n),
    ];
    this.#heads.set(n, head);
    return head;
  }

  /** Final norm and LM head over `n` gathered rows (cached). */
  #tail(n: number): ForwardStep[] {
    const hit = this.#tails.get(n);
    if (hit) return hit;
    const gpu = this.#gpu;
    const c = this.config;
    const s = this.#s;
    const tail = [
      forwardStep(
        "final_norm",
        createRmsNorm(gpu).bind({
          x: s.xg!,
          weight: this.#weights.finalNorm,
          y: s.xn,
          rows: n,
          dim: c.dim,
          eps: c.normEps,
        }),
      ),
      // The layers' decode path (PagedKv.decodePath) for prompt and decode steps alike: head rows come one
      // per sequence, so their count is a decode row count.
      ...bindLmHead(gpu, c, this.#weights, { x: s.xn, y: s.logits, rows: n, path: this.#decodePath }),
    ];
    this.#tails.set(n, tail);
    return tail;
  }

  /** Frees the runner's buffers (not the weights, not the cache). */
  destroy(): void {
    const p = this.#pending;
    this.#pending = null;
    p?.staging.destroy();
    p?.reject(new Error("Cannot read a chunk back: its runner was destroyed"));
    this.#plans.clear();
    this.#bodies.clear();
    this.#heads.clear();
    this.#tails.clear();
    this.#scorePasses = [];
    [...forwardStateBuffers(this.#s), ...Object.values(this.#b)].forEach((b) => b.destroy());
  }
}
