/**
 * What happens to a batch's logits before sampling (batch_sample.ts), each row with its slot's settings
 * (struct SlotParams); logprobs.ts reads the raw logits after it.
 *
 * `process` (workgroups of PROCESS_CHUNK ids of one row) writes out = f(logits) and leaves the raw logits for
 * `logprobs`:
 *   seen = token in the prompt (bit 31 of counts) or in the output (counts & 0x7fffffff = n > 0);
 *   l ← seen ? (l > 0 ? l / repetition : l · repetition) : l       (vLLM's repetition_penalty)
 *   l ← l − frequency · n − presence · [n > 0]                      (OpenAI's penalties, output tokens only)
 *   l ← l + bias[token]                                             (logit_bias)
 *   l ← −inf for the `ban` ids while the slot has sampled fewer than minTokens ids (vLLM's min_tokens)
 *   l ← −inf unless bit (id & 31) of mask[slot, id >> 5] is set, when the slot is `masked` (a grammar's
 *       allowed ids for structured output; applied last, so neither a bias nor a penalty lifts a masked id).
 * Slots without any of these copy the row unchanged.
 */
import {
  bindBuffers,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  uniformParams,
} from "../core/mod.ts";
import { SLOT_STRUCT } from "./batch_rows.ts";
import { SLOT_PARAMS_STRUCT } from "./batch_sample.ts";

/** Bindings 0–4 of both kernels (logprobs.ts too): dims, the raw logits, the slots' params, the rows. */
export const LOGIT_ROWS_WGSL = /* wgsl */ `
override WG: u32 = 256u;
const NONE = 0xffffffffu;
struct Dims { vocab: u32, rows: u32, maxSlots: u32, maxBias: u32, maxBan: u32, negInf: f32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // (rows, vocab) raw
@group(0) @binding(2) var<storage, read> slotParams: array<SlotParams>;
@group(0) @binding(3) var<storage, read> gather: array<u32>;
@group(0) @binding(4) var<storage, read> rowSlot: array<u32>;

// The slot of logit row i, or NONE.
fn slotOf(i: u32) -> u32 {
  let src = gather[i];
  if (src == NONE) { return NONE; }
  return rowSlot[src];
}
`;

/**
 * Logits of a row per workgroup of `process`. One workgroup per row walked the 128K logits of a Llama-3
 * row in ~500 dependent trips per invocation: 0.22 ms per decode step on the H100, whatever the batch.
 */
const PROCESS_CHUNK = 2048;

const PROCESS_WGSL = /* wgsl */ `
const CHUNK = ${PROCESS_CHUNK}u;
${SLOT_STRUCT}
${SLOT_PARAMS_STRUCT}
${LOGIT_ROWS_WGSL}
@group(0) @binding(5) var<storage, read> slots: array<SlotState>;
@group(0) @binding(6) var<storage, read> counts: array<u32>;       // (maxSlots, vocab)
@group(0) @binding(7) var<storage, read> bias: array<vec2<u32>>;   // (maxSlots, maxBias): id, f32 bits
@group(0) @binding(8) var<storage, read> ban: array<u32>;          // (maxSlots, maxBan)
@group(0) @binding(9) var<storage, read_write> out: array<f32>;    // (rows, vocab)
@group(0) @binding(10) var<storage, read> mask: array<u32>;        // (maxSlots, ceil(vocab / 32)) bits

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  if (row >= dims.rows) { return; }
  // This workgroup's ids [lo, hi) of the row: only it writes them, so the bias and the ban after the
  // penalties need only its own storage barrier.
  let lo = wid.x * CHUNK;
  let hi = min(lo + CHUNK, dims.vocab);
  let base = row * dims.vocab;
  let slot = slotOf(row);
  if (slot == NONE || slotParams[slot].process == 0u) {
    for (var i = lo + lid; i < hi; i += WG) { out[base + i] = logits[base + i]; }
    return;
  }
  let p = slotParams[slot];
  let cBase = slot * dims.vocab;
  for (var i = lo + lid; i < hi; i += WG) {
    var l = logits[base + i];
    let c = counts[cBase + i];
    let n = f32(c & 0x7fffffffu);
    if (c != 0u) { l = select(l * p.repetition, l / p.repetition, l > 0.0); }
    l = l - p.frequency * n - select(0.0, p.presence, n > 0.0);
    out[base + i] = l;
  }
  storageBarrier();
  for (var j = lid; j < p.nBias; j += WG) {
    let e = bias[slot * dims.maxBias + j];
    if (e.x >= lo && e.x < hi) { out[base + e.x] = out[base + e.x] + bitcast<f32>(e.y); }
  }
  storageBarrier();
  if (slots[slot].step < p.minTokens) {
    for (var j = lid; j < p.nBan; j += WG) {
      let id = ban[slot * dims.maxBan + j];
      if (id >= lo && id < hi) { out[base + id] = dims.negInf; }
    }
  }
  if (p.masked != 0u) {
    storageBarrier();
    let mBase = slot * ((dims.vocab + 31u) / 32u);
    for (var i = lo + lid; i < hi; i += WG) {
      if ((mask[mBase + (i >> 5u)] & (1u << (i & 31u))) == 0u) { out[base + i] = dims.negInf; }
    }
  }
}
`;

/** The logit rows both kernels read (logprobs.ts too). */
export interface RowsArgs {
  /** logits: (rows, vocabSize) f32, the LM head's raw output */
  logits: GPUBuffer;
  /** slotParams: (maxSlots) struct SlotParams (batch_sample.ts) */
  slotParams: GPUBuffer;
  /** gather, rowSlot: the forward's rows (batch_rows.ts); gather may be a slice of a longer list */
  gather: GPUBuffer | GPUBufferBinding;
  rowSlot: GPUBuffer;
  rows: number;
  vocabSize: number;
  maxSlots: number;
}

export interface LogitsProcessArgs extends RowsArgs {
  /** slots: (maxSlots) struct SlotState (the RNG step counts sampled ids for min_tokens) */
  slots: GPUBuffer;
  /** counts: (maxSlots, vocabSize) u32: output count, bit 31 set for prompt tokens */
  counts: GPUBuffer;
  /** bias: (maxSlots, maxBias) (id, f32 bits) pairs; ban: (maxSlots, maxBan) ids */
  bias: GPUBuffer;
  ban: GPUBuffer;
  maxBias: number;
  maxBan: number;
  /** out: (rows, vocabSize) f32, what the sampler reads */
  out: GPUBuffer;
  /** mask: (maxSlots, maskWords(vocabSize)) u32; bit (id & 31) of word id >> 5 set = id allowed */
  mask: GPUBuffer;
}

/**
 * Words of one slot's token mask.
 * @param vocabSize the model's vocabulary
 * @returns ceil(vocabSize / 32): one bit per id, ids ≥ vocabSize in the last word ignored
 */
export function maskWords(vocabSize: number): number {
  return Math.ceil(vocabSize / 32);
}

/** The `dims` uniform of {@link LOGIT_ROWS_WGSL}. */
export function logitDims(gpu: Gpu, a: RowsArgs, maxBias = 0, maxBan = 0): GPUBuffer {
  return uniformParams(gpu, [
    ["u32", a.vocabSize],
    ["u32", a.rows],
    ["u32", a.maxSlots],
    ["u32", maxBias],
    ["u32", maxBan],
    ["f32", -Infinity],
  ], "logits dims");
}

const RO = "read-only-storage" as const;

/**
 * Builds `process`: penalties, logit bias, the min-tokens ban and the token mask, raw logits → out.
 * @param gpu the device
 */
export function createLogitsProcess(gpu: Gpu): Kernel<LogitsProcessArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "logits_process",
    code: PROCESS_WGSL,
    constants: { WG: wg },
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, RO, RO, "storage", RO],
  });
  return {
    bind(a: LogitsProcessArgs): Encodable {
      if (a.mask.size < a.maxSlots * maskWords(a.vocabSize) * 4) {
        throw new Error(
          `Cannot bind logits_process: mask holds fewer than ${a.maxSlots} rows of ` +
            `${maskWords(a.vocabSize)} words`,
        );
      }
      const group = bindBuffers(gpu, pipeline, [
        logitDims(gpu, a, a.maxBias, a.maxBan),
        a.logits,
        a.slotParams,
        a.gather,
        a.rowSlot,
        a.slots,
        a.counts,
        a.bias,
        a.ban,
        a.out,
        a.mask,
      ]);
      const chunks = Math.ceil(a.vocabSize / PROCESS_CHUNK);
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, group);
          pass.dispatchWorkgroups(chunks, a.rows);
        },
      };
    },
  };
}
