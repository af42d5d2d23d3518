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
  writeBuffer,
} from "../../kernels/core/mod.ts";
import { createSample, SAMPLE_PARAMS_BYTES, writeSampleParams } from "../../kernels/ops/mod.ts";
import {
  bindForward,
  createForwardState,
  type ForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type ModelConfig,
} from "../model/mod.ts";
import type { SamplingParams } from "./types.ts";

/** Size of the GPU ring of sampled ids; must exceed READ_AHEAD chunks. */
const HISTORY_LEN = 1024;
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
  { maxPrefillRows = 256, maxChunk = 16 }: { maxPrefillRows?: number; maxChunk?: number } = {},
): SequenceRunner {
  const s = createForwardState(gpu, config, { maxRows: Math.min(maxPrefillRows, config.seqLen) });
  const promptIds = createStorage(gpu, s.maxRows * 4, "prompt ids"); // (maxRows) u32
  const tokenOut = createStorage(gpu, 4, "next token"); // (1) u32, the decode forward's input id
  const history = createStorage(gpu, HISTORY_LEN * 4, "sampled ids"); // (HISTORY_LEN) u32 ring
  const sampleParams = createStorage(gpu, SAMPLE_PARAMS_BYTES, "sample params");
  const sample = createSample(gpu).bind({
    logits: s.logits,
    params: sampleParams,
    state: s.state,
    tokenOut,
    history,
    vocabSize: config.vocabSize,
    historyLen: HISTORY_LEN,
  });
  const advance = createAdvance(gpu);
  const decodeStep = sequence([
    bindForward(gpu, config, weights, s, { ids: tokenOut, rows: 1, logits: "last" }),
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
    writeBuffer(gpu, s.state, new Uint32Array(4));
    writeSampleParams(gpu, sampleParams, o.sampling);
    for (let start = 0; start < ids.length; start += s.maxRows) {
      const chunk = ids.slice(start, start + s.maxRows);
      writeBuffer(gpu, promptIds, Uint32Array.from(chunk));
      submit(prefillPlan(chunk.length, start + chunk.length === ids.length), 1);
    }
    // The prefill sampled token 0; each decode step samples one more.
    const total = Math.min(o.maxNewTokens, config.seqLen - ids.length);
    if (total < 1) return;
    const reads = new Readbacks(gpu, history);
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
    [...forwardStateBuffers(s), promptIds, tokenOut, history, sampleParams].forEach((b) => b.destroy());
  }
  return { forwardState: s, run, destroy };
}

/** Queued copies of ranges of the history ring into staging buffers, read in order. */
class Readbacks {
  #pending: { staging: GPUBuffer; count: number; mapped: Promise<void> }[] = [];
  #gpu: Gpu;
  #history: GPUBuffer;
  constructor(gpu: Gpu, history: GPUBuffer) {
    this.#gpu = gpu;
    this.#history = history;
  }

  /** Ranges queued and not yet read. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Copies ids [start, start+count) (ring indices) to a fresh staging buffer and starts mapping it. */
  queue(start: number, count: number): void {
    const device = this.#gpu.device;
    const staging = device.createBuffer({
      label: "sampled ids readback",
      size: count * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder();
    for (let i = 0; i < count;) {
      const ring = (start + i) % HISTORY_LEN;
      const n = Math.min(count - i, HISTORY_LEN - ring);
      encoder.copyBufferToBuffer(this.#history, ring * 4, staging, i * 4, n * 4);
      i += n;
    }
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
