/**
 * What happens to a batch's logits around sampling (batch_sample.ts), each row with its slot's settings
 * (struct SlotParams):
 *
 * `process` (before sampling; workgroups of PROCESS_CHUNK ids of one row) writes out = f(logits) and leaves
 * the raw logits for `logprobs`:
 *   seen = token in the prompt (bit 31 of counts) or in the output (counts & 0x7fffffff = n > 0);
 *   l ← seen ? (l > 0 ? l / repetition : l · repetition) : l       (vLLM's repetition_penalty)
 *   l ← l − frequency · n − presence · [n > 0]                      (OpenAI's penalties, output tokens only)
 *   l ← l + bias[token]                                             (logit_bias)
 *   l ← −inf for the `ban` ids while the slot has sampled fewer than minTokens ids (vLLM's min_tokens).
 * Slots without any of these copy the row unchanged.
 *
 * `logprobs` (after sampling; one workgroup per row) reads the raw logits (the model's distribution, as vLLM reports by default,
 * not the processed one): lse = max + ln Σ e^(l − max), the chosen token's l − lse and the nTop most likely
 * tokens (ties: lower id first), into outLogprobs[state.step · maxSlots + slot] = [logprob, n, (id, logprob) ×
 * MAX_TOP_LOGPROBS] (f32 bits and u32). Slots that asked for none are skipped.
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
import { MAX_TOP_LOGPROBS, SLOT_PARAMS_STRUCT } from "./batch_sample.ts";

/** u32 words of one logprob record: the chosen token's logprob, n, then n (id, logprob) pairs (padded). */
export const LOGPROB_RECORD_WORDS = 2 + 2 * MAX_TOP_LOGPROBS;

const HEAD = /* wgsl */ `
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
${HEAD}
@group(0) @binding(5) var<storage, read> slots: array<SlotState>;
@group(0) @binding(6) var<storage, read> counts: array<u32>;       // (maxSlots, vocab)
@group(0) @binding(7) var<storage, read> bias: array<vec2<u32>>;   // (maxSlots, maxBias): id, f32 bits
@group(0) @binding(8) var<storage, read> ban: array<u32>;          // (maxSlots, maxBan)
@group(0) @binding(9) var<storage, read_write> out: array<f32>;    // (rows, vocab)

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
}
`;

const LOGPROBS_WGSL = /* wgsl */ `
${STATE_STRUCT}
${SLOT_PARAMS_STRUCT}
${HEAD}
const REC = ${LOGPROB_RECORD_WORDS}u;
@group(0) @binding(5) var<storage, read> state: StepState;
@group(0) @binding(6) var<storage, read> outTokens: array<u32>;        // (steps, maxSlots)
@group(0) @binding(7) var<storage, read_write> outLogprobs: array<u32>; // (steps, maxSlots, REC)

const K = ${MAX_TOP_LOGPROBS}u;

var<workgroup> redV: array<f32, WG>;
var<workgroup> redI: array<u32, WG>;
var<workgroup> redS: array<f32, WG>;

// (value, id) pairs order by value, then lower id first; (−inf, NONE) is below everything.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool { return v > w || (v == w && i < j); }

// Tree argmax (in that order) of the invocations' (redV, redI); uniform result.
fn bestOf(lid: u32, v: f32, i: u32) -> vec2<u32> {
  workgroupBarrier(); // earlier reads of redV/redI are done
  redV[lid] = v;
  redI[lid] = i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && better(redV[lid + s], redI[lid + s], redV[lid], redI[lid])) {
      redV[lid] = redV[lid + s];
      redI[lid] = redI[lid + s];
    }
    workgroupBarrier();
  }
  return vec2(bitcast<u32>(workgroupUniformLoad(&redV[0])), workgroupUniformLoad(&redI[0]));
}

// One pass over the row: each invocation keeps its own nTop best (value, id) in order and an online
// log-sum-exp (max m, Σ e^(v − m)); the invocations' sums then merge by tree, and the nTop best of the row
// are drawn one at a time from the heads of the invocations' lists. (Walking the row once per alternative
// cost ~0.2 ms each on the H100, ~4.6 ms a step for top_logprobs = 20.)
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= dims.rows) { return; }
  let slot = slotOf(row);
  if (slot == NONE) { return; }
  let p = slotParams[slot];
  if (p.logprobs == 0u) { return; }
  let base = row * dims.vocab;
  let n = min(p.nTop, K);
  var topV: array<f32, K>;
  var topI: array<u32, K>;
  for (var k = 0u; k < K; k++) { topV[k] = dims.negInf; topI[k] = NONE; }
  var m = dims.negInf;
  var sum = 0.0;
  for (var i = lid; i < dims.vocab; i += WG) {
    let v = logits[base + i];
    if (v <= dims.negInf) { continue; }
    if (v > m) {
      sum = select(0.0, sum * exp(m - v), m > dims.negInf) + 1.0; // no infinities in the arithmetic
      m = v;
    } else {
      sum += exp(v - m);
    }
    // ids rise along the walk, so an equal value never displaces a kept one: lower ids stay first
    if (n > 0u && v > topV[n - 1u]) {
      var j = n - 1u;
      while (j > 0u && v > topV[j - 1u]) {
        topV[j] = topV[j - 1u];
        topI[j] = topI[j - 1u];
        j--;
      }
      topV[j] = v;
      topI[j] = i;
    }
  }
  // log-sum-exp: the largest m, then Σ sum · e^(m − M) by tree
  let mx = bitcast<f32>(bestOf(lid, m, lid).x);
  workgroupBarrier();
  redS[lid] = select(0.0, sum * exp(m - mx), m > dims.negInf);
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { redS[lid] += redS[lid + s]; }
    workgroupBarrier();
  }
  let lse = mx + log(workgroupUniformLoad(&redS[0]));
  let rec = (state.step * dims.maxSlots + slot) * REC;
  if (lid == 0u) {
    let tok = outTokens[state.step * dims.maxSlots + slot];
    outLogprobs[rec] = bitcast<u32>(logits[base + min(tok, dims.vocab - 1u)] - lse);
    outLogprobs[rec + 1u] = p.nTop;
  }
  var head = 0u;
  for (var k = 0u; k < n; k++) {
    let hv = select(dims.negInf, topV[min(head, K - 1u)], head < n);
    let hi = select(NONE, topI[min(head, K - 1u)], head < n);
    let best = bestOf(lid, hv, hi);
    if (best.y == hi && hi != NONE) { head++; } // ids are unique: only the owner pops
    if (lid == 0u) {
      outLogprobs[rec + 2u + 2u * k] = best.y;
      outLogprobs[rec + 3u + 2u * k] = bitcast<u32>(bitcast<f32>(best.x) - lse);
    }
  }
}
`;

interface RowsArgs {
  /** logits: (rows, vocabSize) f32, the LM head's raw output */
  logits: GPUBuffer;
  /** slotParams: (maxSlots) struct SlotParams (batch_sample.ts) */
  slotParams: GPUBuffer;
  /** gather, rowSlot: the forward's rows (batch_rows.ts) */
  gather: GPUBuffer;
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
}

export interface LogprobsArgs extends RowsArgs {
  /** state: the chunk's step (state.step) */
  state: GPUBuffer;
  /** outTokens: (steps, maxSlots) u32 the sampler wrote */
  outTokens: GPUBuffer;
  /** outLogprobs: (steps, maxSlots, LOGPROB_RECORD_WORDS) u32 */
  outLogprobs: GPUBuffer;
}

function dims(gpu: Gpu, a: RowsArgs, maxBias = 0, maxBan = 0): GPUBuffer {
  return uniformParams(gpu, [
    ["u32", a.vocabSize],
    ["u32", a.rows],
    ["u32", a.maxSlots],
    ["u32", maxBias],
    ["u32", maxBan],
    ["f32", -Infinity],
  ], "logits dims");
}

function rowsDispatch(pipeline: GPUComputePipeline, group: GPUBindGroup, rows: number): Encodable {
  return {
    encode(pass) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(rows);
    },
  };
}

const RO = "read-only-storage" as const;

/**
 * Builds `process`: penalties, logit bias and the min-tokens ban, raw logits → out.
 * @param gpu the device
 */
export function createLogitsProcess(gpu: Gpu): Kernel<LogitsProcessArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "logits_process",
    code: PROCESS_WGSL,
    constants: { WG: wg },
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, RO, RO, "storage"],
  });
  return {
    bind(a: LogitsProcessArgs): Encodable {
      const group = bindBuffers(gpu, pipeline, [
        dims(gpu, a, a.maxBias, a.maxBan),
        a.logits,
        a.slotParams,
        a.gather,
        a.rowSlot,
        a.slots,
        a.counts,
        a.bias,
        a.ban,
        a.out,
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

/**
 * Builds `logprobs`: the chosen token's logprob and the top alternatives from the raw logits.
 * @param gpu the device
 */
export function createLogprobs(gpu: Gpu): Kernel<LogprobsArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "logprobs",
    code: LOGPROBS_WGSL,
    constants: { WG: wg },
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, "storage"],
  });
  return {
    bind(a: LogprobsArgs): Encodable {
      const group = bindBuffers(gpu, pipeline, [
        dims(gpu, a),
        a.logits,
        a.slotParams,
        a.gather,
        a.rowSlot,
        a.state,
        a.outTokens,
        a.outLogprobs,
      ]);
      return rowsDispatch(pipeline, group, a.rows);
    },
  };
}
