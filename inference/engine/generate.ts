/**
 * Runs one sequence on the GPU: chunked prefill, then decode steps recorded many per submit, with
 * tokens sampled on the GPU and read back a chunk at a time (a readback costs ≥ 10 ms in Deno,
 * docs/webgpu.md §3). Up to three chunks are submitted ahead of the host's reads, so the GPU keeps working
 * while the host waits for a mapping and encodes the next chunk; after a stop the GPU finishes at most
 * two chunks nobody reads (their tokens are dropped).
 */
import {
  createAdvance,
  createStorage,
  type Encodable,
  type Gpu,
  sequence,
  uploadStorage,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import {
  createBatchSample,
  GREEDY_SLOT,
  packSlotParams,
  SLOT_PARAMS_BYTES,
  SLOT_STATE_WORDS,
} from "../../kernels/ops/mod.ts";
import {
  bindForward,
  createForwardState,
  type ForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type LinearPath,
  type ModelConfig,
} from "../model/mod.ts";
import type { SamplingParams } from "./types.ts";

/**
 * Chunks submitted but not yet read. With two, an 8B-shaped decode spent ~30 % of its wall time with the
 * GPU idle (5.2 ms of GPU work per token, 7.5 ms per token end to end on the H100).
 */
const READ_AHEAD = 3;

export interface RunOptions {
  /** Most tokens to sample (the caller has already capped it by the context length). */
  maxNewTokens: number;
  sampling: SamplingParams & { seed: number };
}

/** A sequence runner bound to one model and one set of activation buffers. */
export interface SequenceRunner {
  readonly forwardState: ForwardState;
  /**
   * Prefills `promptIds` and yields sampled ids in chunks until `maxNewTokens`. Stop early by
   * leaving the loop (the iterator's return() waits for outstanding readbacks).
   */
  run(promptIds: readonly number[], options: RunOptions): AsyncGenerator<number[]>;
  /** Frees the activations, KV cache and sampling buffers (the runner is unusable afterwards). */
  destroy(): void;
}

/**
 * Builds the runner. Decode plans are bound once here; prefill plans per chunk size, cached.
 * @param options maxPrefillRows bounds activation memory; maxChunk bounds decode steps per submit
 */
export function createSequenceRunner(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  { maxPrefillRows = 256, maxChunk = 16, promptPath }: {
    maxPrefillRows?: number;
    maxChunk?: number;
    /** Pin the prompt forwards' kernels as the engine does ("gemm": q8 affine prompts on the batched q8 path). */
    promptPath?: LinearPath;
  } = {},
): SequenceRunner {
  const s = createForwardState(gpu, config, { maxRows: Math.min(maxPrefillRows, config.seqLen) });
  const promptIds = createStorage(gpu, s.maxRows * 4, "prompt ids"); // (maxRows) u32
  // The sampler is the batch one with one row and one slot: logit row 0 is forward row 0 of slot 0.
  // The slot's first word is the id it sampled last, which the decode forward embeds; its second counts the
  // ids sampled (the RNG step). state.step counts them too, and indexes outTokens, which holds a whole run.
  const b = {
    zero: uploadStorage(gpu, new Uint32Array(1), "row 0 of slot 0"), // gather and rowSlot
    slot: createStorage(gpu, SLOT_STATE_WORDS * 4, "slot state"),
    slotParams: createStorage(gpu, SLOT_PARAMS_BYTES, "sampling params"),
    outTokens: createStorage(gpu, config.seqLen * 4, "sampled ids"), // (seqLen) u32
    // The sampler counts each pick for the penalties (logits_process.ts); this runner has none, so
    // nothing reads the counts.
    counts: createStorage(gpu, config.vocabSize * 4, "output counts"),
  };
  const sample = createBatchSample(gpu).bind({
    logits: s.logits,
    slotParams: b.slotParams,
    gather: b.zero,
    rowSlot: b.zero,
    state: s.state,
    slots: b.slot,
    outTokens: b.outTokens,
    counts: b.counts,
    rows: 1,
    vocabSize: config.vocabSize,
    maxSlots: 1,
  });
  const advance = createAdvance(gpu);
  const decodeStep = sequence([
    bindForward(gpu, config, weights, s, { ids: b.slot, rows: 1, logits: "last" }),
    sample,
    advance.bind({ state: s.state, nTokens: 1, stepInc: 1 }),
  ]);
  const prefillPlans = new Map<string, Encodable>();
  function prefillPlan(rows: number, last: boolean): Encodable {
    const key = `${rows}:${last}`;
    let plan = prefillPlans.get(key);
    if (!plan) {
      if (prefillPlans.size > 32) prefillPlans.clear();
      const forward = bindForward(gpu, config, weights, s, {
        ids: promptIds,
        rows,
        logits: last ? "last" : "none",
        ...(promptPath ? { path: promptPath } : {}),
      });
      plan = last
        ? sequence([forward, sample, advance.bind({ state: s.state, nTokens: rows, stepInc: 1 })])
        : sequence([forward, advance.bind({ state: s.state, nTokens: rows, stepInc: 0 })]);
      prefillPlans.set(key, plan);
    }
    return plan;
  }

  async function* run(ids: readonly number[], o: RunOptions): AsyncGenerator<number[]> {
    if (ids.length === 0 || ids.length >= config.seqLen) {
      throw new Error(`Cannot run a prompt of ${ids.length} tokens with context ${config.seqLen}`);
    }
    const { temperature, topP, topK, minP, seed } = o.sampling;
    const settings = { ...GREEDY_SLOT, temperature, topP, topK, minP, seed };
    writeBuffer(gpu, b.slotParams, new Uint8Array(packSlotParams(settings, { maxBias: 0, maxBan: 0 })));
    writeBuffer(gpu, s.state, new Uint32Array(4));
    writeBuffer(gpu, b.slot, new Uint32Array(SLOT_STATE_WORDS));
    for (let start = 0; start < ids.length; start += s.maxRows) {
      const chunk = ids.slice(start, start + s.maxRows);
      writeBuffer(gpu, promptIds, Uint32Array.from(chunk));
      submit(prefillPlan(chunk.length, start + chunk.length === ids.length), 1);
    }
    // The prefill sampled token 0; each decode step samples one more.
    const total = Math.min(o.maxNewTokens, config.seqLen - ids.length);
    if (total < 1) return;
    const reads = new Readbacks(gpu, b.outTokens);
    try {
      let sampled = 1;
      let chunk = 1;
      reads.queue(0, 1);
      for (let delivered = 0; delivered < total;) {
        while (sampled < total && reads.pending < READ_AHEAD) {
          const n = Math.min(chunk, total - sampled);
          submit(decodeStep, n);
          reads.queue(sampled, n);
          sampled += n;
          chunk = Math.min(chunk * 2, maxChunk);
        }
        const got = await reads.next();
        delivered += got.length;
        yield got;
      }
    } finally {
      await reads.drain();
    }
  }

  function submit(plan: Encodable, times: number): void {
    const encoder = gpu.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < times; i++) plan.encode(pass);
    pass.end();
    gpu.device.queue.submit([encoder.finish()]);
  }

  function destroy(): void {
    [...forwardStateBuffers(s), promptIds, ...Object.values(b)].forEach((buffer) => buffer.destroy());
  }
  return { forwardState: s, run, destroy };
}

/** Queued copies of ranges of the sampled ids into staging buffers, read in order. */
class Readbacks {
  #pending: { staging: GPUBuffer; count: number; mapped: Promise<void> }[] = [];
  #gpu: Gpu;
  #ids: GPUBuffer;
  constructor(gpu: Gpu, ids: GPUBuffer) {
    this.#gpu = gpu;
    this.#ids = ids;
  }

  /** Ranges queued and not yet read. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Copies ids [start, start+count) to a fresh staging buffer and starts mapping it. */
  queue(start: number, count: number): void {
    const device = this.#gpu.device;
    const staging = device.createBuffer({
      label: "sampled ids readback",
      size: count * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.#ids, start * 4, staging, 0, count * 4);
    device.queue.submit([encoder.finish()]);
    this.#pending.push({ staging, count, mapped: staging.mapAsync(GPUMapMode.READ) });
  }

  /** The ids of the oldest queued range. */
  async next(): Promise<number[]> {
    const head = this.#pending.shift();
    if (!head) throw new Error("Cannot read sampled ids: nothing queued");
    try {
      await head.mapped;
      return Array.from(new Uint32Array(head.staging.getMappedRange(), 0, head.count));
    } finally {
      head.staging.destroy();
    }
  }

  /** Waits for the outstanding copies, so no mapping outlives the run. */
  async drain(): Promise<void> {
    for (const p of this.#pending.splice(0)) {
      await p.mapped.catch(() => {});
      p.staging.destroy();
    }
  }
}
