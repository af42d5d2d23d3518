/**
 * Token sampling for a batch of sequences, on the GPU: one workgroup per row of logits, each row with the
 * settings and RNG stream of its sequence's slot. The draw is sample.ts's, row by row (same threshold
 * search, same uniform(seed, step) and the same f32 caveats; kernels/core/reference.ts `sampleRef` is its
 * reference), with the RNG step taken from the slot (the number of ids it has sampled so far).
 *
 * Row i of `logits` belongs to forward row gather[i] and so to slot rowSlot[gather[i]] (batch_rows.ts);
 * rows whose gather entry or slot is NONE are skipped. The pick goes to
 *   outTokens[state.step · maxSlots + slot]  (read back by the host once per chunk),
 *   slots[slot].token (the next forward's input id), slots[slot].step += 1, counts[slot, token] += 1
 * (the output counts that presence and frequency penalties read; logits_process.ts).
 * The per-slot settings live in `slotParams` (struct SlotParams, {@link writeSlotParams}).
 */
import {
  bindBuffers,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";
import { SLOT_STRUCT } from "./batch_rows.ts";
import BATCH_SAMPLE_WGSL from "./batch_sample.wgsl" with { type: "text" };

/** WGSL of one slot's settings: sampling, penalties, logit bias, min-tokens ban, logprobs. */
export const SLOT_PARAMS_STRUCT = /* wgsl */ `
struct SlotParams {
  temperature: f32, topP: f32, topK: u32, minP: f32,
  seed: u32, presence: f32, frequency: f32, repetition: f32,
  nBias: u32, minTokens: u32, nBan: u32, nTop: u32,
  logprobs: u32, process: u32, reserved0: u32, reserved1: u32,
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
});

/** Whether the settings change any logit before sampling (logits_process.ts runs its slow path). */
export function slotProcesses(s: SlotSettings): boolean {
  return s.presence !== 0 || s.frequency !== 0 || s.repetition !== 1 || s.bias.length > 0 ||
    (s.minTokens > 0 && s.ban.length > 0);
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

/** Workgroup memory of one variant (sample.ts's layout). */
function workgroupBytes(wg: number, pool: number): number {
  return 36 * wg + 1040 + 4 * pool;
}

/**
 * Builds the batched sampler.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers and the row count (one workgroup per row)
 */
export function createBatchSample(gpu: Gpu): Kernel<BatchSampleArgs> {
  const budget = gpu.maxWorkgroupStorageBytes;
  let wg = Math.min(512, gpu.maxInvocationsPerWorkgroup);
  while (wg > 64 && workgroupBytes(wg, 1024) > budget) wg /= 2;
  const pool = Math.min(4096, Math.floor((budget - workgroupBytes(wg, 0)) / 16) * 4);
  const RO = "read-only-storage" as const;
  const pipeline = getPipeline(gpu, {
    name: "batch_sample",
    code: STATE_STRUCT + SLOT_STRUCT + SLOT_PARAMS_STRUCT + BATCH_SAMPLE_WGSL,
    constants: { WG: wg, GS: Math.min(32, wg), POOL4: pool / 4 },
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, "storage", "storage", "storage"],
  });
  return {
    bind(a: BatchSampleArgs): Encodable {
      if (a.logits.size < Math.max(16, a.rows * a.vocabSize * 4)) {
        throw new Error(`Cannot bind batch_sample: logits hold fewer than ${a.rows} rows of ${a.vocabSize}`);
      }
      const dims = uniformParams(gpu, [
        ["u32", a.vocabSize],
        ["u32", a.rows],
        ["u32", a.maxSlots],
        ["f32", -Infinity],
        ["f32", Infinity],
      ], "batch_sample dims");
      const whole = Math.floor(a.logits.size / 16) * 16;
      const bindGroup = bindBuffers(gpu, pipeline, [
        dims,
        { buffer: a.logits, offset: 0, size: whole },
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
