/**
 * Token sampling on the GPU, so that a decode step never waits for the host (docs/webgpu.md §3): one
 * workgroup per row of logits, each row with the settings and RNG stream of its sequence's slot. The
 * continuous-batching runner samples many rows; the one-sequence runner (inference/engine/generate.ts) one.
 *
 * Row i of `logits` belongs to forward row gather[i] and so to slot rowSlot[gather[i]] (batch_rows.ts);
 * rows whose gather entry or slot is NONE are skipped. The pick goes to
 *   outTokens[state.step · maxSlots + slot]  (read back by the host once per chunk),
 *   slots[slot].token (the next forward's input id), slots[slot].step += 1, counts[slot, token] += 1
 * (the output counts that presence and frequency penalties read; logits_process.ts).
 * The per-slot settings live in `slotParams` (struct SlotParams, {@link packSlotParams}).
 *
 * Semantics per row (kernels/core/reference.ts `sampleRef` implements exactly this, in f64):
 * - temperature == 0: greedy argmax; the lowest index wins ties.
 * - otherwise p_i = exp((l_i − max) / T), unnormalised (p_max = 1), Z = Σ p_i. A token is kept iff it
 *   passes every enabled filter:
 *   - top-k (topK = 0 or ≥ vocab: off): keep the k largest;
 *   - top-p (topP = 1: off): keep the smallest set of largest tokens whose mass is ≥ topP · Z;
 *   - min-p (minP = 0: off): keep p_i ≥ minP · p_max, i.e. l_i ≥ max + T · ln(minP).
 * - Top-k and top-p use a threshold search instead of a sort. Probabilities are monotone in the
 *   logits, so the threshold τ is a logit: the kept set is {i : l_i ≥ τ}, where τ is the largest
 *   threshold with count(l ≥ τ) ≥ k (top-k on) or mass(l ≥ τ) ≥ topP · Z (top-p on), and count ≥ 1.
 *   The kernel finds τ by a 4-way bisection over f32 values: a bracket [lo, hi) from [min, max]
 *   (the first step tests max itself), each step one pass that counts and sums the mass at three
 *   candidates (midpoints computed as fl32(a/2 + b/2), identical in the reference) with one
 *   workgroup reduction. It stops once at most one token lies in [lo, hi), since the kept set can no
 *   longer change, when no candidate falls strictly inside the bracket (ties), or after 24 steps.
 *   Once the bracket holds ≤ poolSize tokens they are copied to workgroup memory and later steps
 *   read only those. Every token tied with the boundary logit is kept (top-k keeps more than k on
 *   exact ties); taking the larger of the two thresholds intersects the two sets, and the argmax
 *   always survives.
 * - Draw: u = uniform(seed, step) · keptMass, with step = slots[slot].step (the ids the slot has sampled
 *   so far), and the pick is the first index (in index order) whose cumulative kept mass exceeds u.
 *   Groups of 32 invocations own contiguous segments of the row (a blocked prefix sum with coalesced
 *   reads), a scan over the segment masses finds the segment, and a scan over that segment's vec4s finds
 *   the vec4, which one invocation walks.
 * - RNG: uniform(seed, step) = (h >> 8) / 2^24 with h = pcg(pcg(seed) + step), where pcg is the
 *   PCG-RXS-M-XS output permutation (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering").
 *   It is a bijection of u32, so one seed gives a distinct draw at every step.
 * - −inf logits are never kept, counted or taken as the argmax (a logit mask may use them); other
 *   logits must be finite.
 * The GPU accumulates in f32, so a draw within ~1e-6 (relative) of a boundary, or a top-p mass
 * within ~1e-6 of topP · Z, may differ from the f64 reference; the tests use logits where that
 * never happens.
 */
import {
  bindBuffers,
  createStorage,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";
import { SLOT_STRUCT } from "./batch_rows.ts";
import BATCH_SAMPLE_WGSL from "./batch_sample.wgsl" with { type: "text" };

/** WGSL of one slot's settings: sampling, penalties, logit bias, min-tokens ban, token mask, logprobs. */
export const SLOT_PARAMS_STRUCT = /* wgsl */ `
struct SlotParams {
  temperature: f32, topP: f32, topK: u32, minP: f32,
  seed: u32, presence: f32, frequency: f32, repetition: f32,
  nBias: u32, minTokens: u32, nBan: u32, nTop: u32,
  logprobs: u32, process: u32, masked: u32, reserved1: u32,
}
`;

/** Bytes of one `struct SlotParams`. */
export const SLOT_PARAMS_BYTES = 64;
/** Most top logprobs per token (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** One sequence's settings, as the batched kernels read them. */
export interface SlotSettings {
  /** ≥ 0; 0 means greedy */
  temperature: number;
  /** (0, 1]; 1 disables */
  topP: number;
  /** integer ≥ 0; 0 disables */
  topK: number;
  /** [0, 1]; 0 disables */
  minP: number;
  /** u32 RNG seed */
  seed: number;
  /** subtracted from a token's logit once it appeared in the output (OpenAI presence_penalty) */
  presence: number;
  /** subtracted per appearance in the output (OpenAI frequency_penalty) */
  frequency: number;
  /** > 0; 1 disables; divides positive and multiplies negative logits of tokens seen in prompt or output */
  repetition: number;
  /** logit_bias entries (≤ maxBias) */
  bias: readonly (readonly [token: number, value: number])[];
  /** until this many ids are sampled, the `ban` ids get −inf (vLLM min_tokens) */
  minTokens: number;
  ban: readonly number[];
  /** compute the chosen token's logprob (and nTop alternatives) */
  logprobs: boolean;
  /** top logprobs per token, 0..MAX_TOP_LOGPROBS */
  nTop: number;
  /** the slot's token mask (logits_process.ts) is applied: ids whose bit is clear get −inf */
  masked: boolean;
}

/** Greedy decoding with every filter and penalty off: the settings that change nothing but pick the argmax. */
export const GREEDY_SLOT: Readonly<SlotSettings> = Object.freeze({
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: 0,
  presence: 0,
  frequency: 0,
  repetition: 1,
  bias: [],
  minTokens: 0,
  ban: [],
  logprobs: false,
  nTop: 0,
  masked: false,
});

/** Whether the settings change any logit before sampling (logits_process.ts runs its slow path). */
export function slotProcesses(s: SlotSettings): boolean {
  return s.presence !== 0 || s.frequency !== 0 || s.repetition !== 1 || s.bias.length > 0 ||
    (s.minTokens > 0 && s.ban.length > 0) || s.masked;
}

/**
 * Validates a slot's settings and packs its `struct SlotParams`.
 * @throws Error naming the first out-of-range field
 */
export function packSlotParams(
  s: SlotSettings,
  { maxBias, maxBan }: { maxBias: number; maxBan: number },
): ArrayBuffer {
  const bad = (what: string, value: unknown) =>
    new Error(`Cannot set slot params: expected ${what}, got ${JSON.stringify(value)}`);
  if (!(Number.isFinite(s.temperature) && s.temperature >= 0)) throw bad("temperature ≥ 0", s.temperature);
  if (!(s.topP > 0 && s.topP <= 1)) throw bad("topP in (0, 1]", s.topP);
  if (!(Number.isInteger(s.topK) && s.topK >= 0 && s.topK < 2 ** 32)) throw bad("integer topK ≥ 0", s.topK);
  if (!(s.minP >= 0 && s.minP <= 1)) throw bad("minP in [0, 1]", s.minP);
  if (!(Number.isInteger(s.seed) && s.seed >= 0 && s.seed < 2 ** 32)) throw bad("seed a u32", s.seed);
  if (!(Number.isFinite(s.presence) && Number.isFinite(s.frequency))) throw bad("finite penalties", s);
  if (!(s.repetition > 0 && Number.isFinite(s.repetition))) throw bad("repetition > 0", s.repetition);
  if (s.bias.length > maxBias) throw bad(`at most ${maxBias} logit_bias entries`, s.bias.length);
  if (s.ban.length > maxBan) throw bad(`at most ${maxBan} banned ids`, s.ban.length);
  if (!(Number.isInteger(s.nTop) && s.nTop >= 0 && s.nTop <= MAX_TOP_LOGPROBS)) {
    throw bad("nTop in 0..20", s.nTop);
  }
  const view = new DataView(new ArrayBuffer(SLOT_PARAMS_BYTES));
  const f = (i: number, v: number) => view.setFloat32(i * 4, v, true);
  const u = (i: number, v: number) => view.setUint32(i * 4, v, true);
  f(0, s.temperature);
  f(1, s.topP);
  u(2, s.topK);
  f(3, s.minP);
  u(4, s.seed);
  f(5, s.presence);
  f(6, s.frequency);
  f(7, s.repetition);
  u(8, s.bias.length);
  u(9, s.minTokens);
  u(10, s.ban.length);
  u(11, s.nTop);
  u(12, s.logprobs ? 1 : 0);
  u(13, slotProcesses(s) ? 1 : 0);
  u(14, s.masked ? 1 : 0);
  return view.buffer;
}

export interface BatchSampleArgs {
  /** logits: (rows, vocabSize) f32, row i for gather[i] (the processed logits, logits_process.ts) */
  logits: GPUBuffer;
  /** slotParams: (maxSlots) struct SlotParams */
  slotParams: GPUBuffer;
  /** gather: (rows) forward row of each logit row; rowSlot: forward row → slot (batch_rows.ts) */
  gather: GPUBuffer;
  rowSlot: GPUBuffer;
  /** state: [STATE_WORDS] u32; state.step is the chunk's step */
  state: GPUBuffer;
  /** slots: (maxSlots) struct SlotState */
  slots: GPUBuffer;
  /** outTokens: (steps, maxSlots) u32 */
  outTokens: GPUBuffer;
  /** counts: (maxSlots, vocabSize) u32; the low 31 bits count the token in the output */
  counts: GPUBuffer;
  rows: number;
  vocabSize: number;
  maxSlots: number;
}

/** Variants of the sampler; the defaults fit the device, smaller ones let tests reach every path. */
export interface BatchSampleSpec {
  /** invocations per workgroup, a power of two; default the largest ≤ 512 that fits */
  workgroupSize?: number;
  /** tokens the workgroup pool holds (a multiple of 4); default what workgroup memory leaves, ≤ 4096 */
  poolSize?: number;
}

/** Workgroup memory of one variant: reductions (36 B per invocation), fixed scratch, the pool. */
function workgroupBytes(wg: number, pool: number): number {
  return 36 * wg + 1040 + 4 * pool;
}

/** Picks the workgroup size and pool size that fit the device's workgroup memory. */
function sampleVariant(gpu: Gpu, spec: BatchSampleSpec): { wg: number; pool: number } {
  const budget = gpu.maxWorkgroupStorageBytes;
  let wg = spec.workgroupSize ?? Math.min(512, gpu.maxInvocationsPerWorkgroup);
  while (spec.workgroupSize === undefined && wg > 64 && workgroupBytes(wg, 1024) > budget) wg /= 2;
  const fit = Math.floor((budget - workgroupBytes(wg, 0)) / 16) * 4;
  const pool = spec.poolSize ?? Math.min(4096, fit);
  const ok = Number.isInteger(wg) && wg >= 1 && (wg & (wg - 1)) === 0 && wg <= gpu.maxInvocationsPerWorkgroup;
  if (!ok || !(Number.isInteger(pool) && pool >= 4 && pool % 4 === 0 && pool <= fit)) {
    throw new Error(
      `Cannot build kernel "batch_sample": workgroupSize ${wg} (a power of two ≤ ` +
        `${gpu.maxInvocationsPerWorkgroup}) and poolSize ${pool} (a multiple of 4 ≤ ${fit}) must fit ` +
        `${budget} bytes of workgroup memory`,
    );
  }
  return { wg, pool };
}

/**
 * Builds the sampler.
 * @param gpu the device
 * @param spec workgroup and pool size (tests only; the defaults fit the device)
 * @returns a kernel whose `bind` fixes buffers and the row count (one workgroup per row)
 * @example
 * ```ts ignore
 * const sample = createBatchSample(gpu).bind({ logits, slotParams, gather, rowSlot, state, slots,
 *   outTokens, counts, rows: 1, vocabSize, maxSlots: 1 });
 * sample.encode(pass); // then advance.encode(pass) and the next step's forward
 * ```
 */
export function createBatchSample(gpu: Gpu, spec: BatchSampleSpec = {}): Kernel<BatchSampleArgs> {
  const { wg, pool } = sampleVariant(gpu, spec);
  const RO = "read-only-storage" as const;
  const pipeline = getPipeline(gpu, {
    name: "batch_sample",
    code: STATE_STRUCT + SLOT_STRUCT + SLOT_PARAMS_STRUCT + BATCH_SAMPLE_WGSL,
    constants: { WG: wg, GS: Math.min(32, wg), POOL4: pool / 4 },
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, "storage", "storage", "storage"],
    spec: { wg, pool },
  });
  return {
    bind(a: BatchSampleArgs): Encodable {
      if (a.logits.size < a.rows * a.vocabSize * 4) {
        throw new Error(`Cannot bind batch_sample: logits hold fewer than ${a.rows} rows of ${a.vocabSize}`);
      }
      const dims = uniformParams(gpu, [
        ["u32", a.vocabSize],
        ["u32", a.rows],
        ["u32", a.maxSlots],
        ["f32", -Infinity],
        ["f32", Infinity],
      ], "batch_sample dims");
      // The vec4 view holds only whole vec4s; logits shorter than one get a stand-in it never reads.
      const whole = Math.floor(a.logits.size / 16) * 16;
      const logits4 = whole > 0
        ? { buffer: a.logits, offset: 0, size: whole }
        : createStorage(gpu, 16, "unused");
      const bindGroup = bindBuffers(gpu, pipeline, [
        dims,
        logits4,
        a.logits,
        a.slotParams,
        a.gather,
        a.rowSlot,
        a.state,
        a.slots,
        a.outTokens,
        a.counts,
      ]);
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(a.rows);
        },
      };
    },
  };
}
