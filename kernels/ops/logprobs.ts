/**
 * Log probabilities after sampling (batch_sample.ts), for the slots that ask (struct SlotParams `logprobs`,
 * `nTop`): from the raw logits (the model's distribution, as vLLM reports by default, not the processed one),
 * lse = max + ln Σ e^(l − max), the chosen token's l − lse, the nTop most likely tokens (ties: lower id
 * first) and the chosen token's rank (how many ids have a logit at least as high: 1 for the likeliest, ties
 * counted against it, as vLLM ranks prompt tokens), into outLogprobs[state.step · maxSlots + slot] =
 * [logprob, n, (id, logprob) × MAX_TOP_LOGPROBS, rank] (f32 bits and u32).
 *
 * Two dispatches, because one workgroup per row walked Llama-3's 128,256 logits serially (1.2 ms a step on
 * the H100 with 20 alternatives; 2.4 ms when it walked the row once per alternative, BENCHMARKS.md):
 * - `part`: workgroups of CHUNK ids of a row; each invocation holds 8 ids in registers. The workgroup's
 *   (max, Σ e^(l − max)) and its nTop best (value, id) go to a scratch record per chunk, the best drawn one
 *   at a time: each invocation's best strictly below the last pick, then a tree argmax. It also counts
 *   the chunk's ids whose logit is at least the chosen token's (the rank's share: the row is read once).
 * - `merge`: one workgroup per row combines the chunks' sums into lse and their counts into the rank, and
 *   draws the nTop best from the chunks' candidates the same way; every top id of the row is among its
 *   chunk's nTop best.
 * Order: (value, id) pairs compare by value, then lower id first; −inf logits never count.
 */
import {
  bindBuffers,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  sharedScratch,
  STATE_STRUCT,
} from "../core/mod.ts";
import { LOGIT_ROWS_WGSL, logitDims, type RowsArgs } from "./logits_process.ts";
import { MAX_TOP_LOGPROBS, SLOT_PARAMS_STRUCT } from "./batch_sample.ts";

/**
 * u32 words of one logprob record: the chosen token's logprob, n, then n (id, logprob) pairs (padded to
 * MAX_TOP_LOGPROBS), then the chosen token's rank.
 */
export const LOGPROB_RECORD_WORDS = 3 + 2 * MAX_TOP_LOGPROBS;
/** Where a logprob record holds the chosen token's rank (u32, ≥ 1). */
export const LOGPROB_RANK_WORD = LOGPROB_RECORD_WORDS - 1;

/** Logits per invocation of `part`: a chunk is this many times the workgroup. */
const PER_INVOCATION = 8;

/**
 * vec2<u32> per chunk record: MAX_TOP_LOGPROBS (value bits, id) candidates, then (max, sum) bits, then
 * (ids at least as likely as the chosen token, 0).
 */
const RECORD = MAX_TOP_LOGPROBS + 2;

const COMMON = /* wgsl */ `
${SLOT_PARAMS_STRUCT}
${LOGIT_ROWS_WGSL}
const K = ${MAX_TOP_LOGPROBS}u;
const RECORD = ${RECORD}u;
override CHUNK: u32 = ${PER_INVOCATION}u * WG;

var<workgroup> redV: array<f32, WG>;
var<workgroup> redI: array<u32, WG>;

// (value, id) pairs order by value, then lower id first; (−inf, NONE) is below everything.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool { return v > w || (v == w && i < j); }

// Tree argmax (in that order) of the invocations' (v, i); uniform result.
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

// Σ over the invocations of s · e^(m − mx), mx the largest m (the terms with m = −inf count 0); uniform.
fn sumScaled(lid: u32, m: f32, s: f32, mx: f32) -> f32 {
  return sumOf(lid, select(0.0, s * exp(m - mx), m > dims.negInf));
}

// Σ over the invocations of x; uniform.
fn sumOf(lid: u32, x: f32) -> f32 {
  workgroupBarrier();
  redV[lid] = x;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { redV[lid] += redV[lid + k]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&redV[0]);
}

// The slot's alternatives if it asks for logprobs, else NONE (uniform per workgroup).
fn wanted(slot: u32) -> u32 {
  if (slot == NONE || slotParams[slot].logprobs == 0u) { return NONE; }
  return min(slotParams[slot].nTop, K);
}
`;

const PART_WGSL = /* wgsl */ `
${STATE_STRUCT}
${COMMON}
@group(0) @binding(5) var<storage, read_write> part: array<vec2<u32>>; // (rows, chunks) × RECORD
@group(0) @binding(6) var<storage, read> state: StepState;
@group(0) @binding(7) var<storage, read> outTokens: array<u32>;        // (steps, maxSlots)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  if (row >= dims.rows) { return; }
  let n = wanted(slotOf(row));
  if (n == NONE) { return; }
  let lo = wid.x * CHUNK + lid;
  let base = row * dims.vocab;
  var v: array<f32, ${PER_INVOCATION}>;
  var m = dims.negInf;
  for (var e = 0u; e < ${PER_INVOCATION}u; e++) {
    let i = lo + e * WG;
    v[e] = select(dims.negInf, logits[base + min(i, dims.vocab - 1u)], i < dims.vocab);
    m = max(m, v[e]);
  }
  var s = 0.0;
  for (var e = 0u; e < ${PER_INVOCATION}u; e++) { if (v[e] > dims.negInf) { s += exp(v[e] - m); } }
  let mx = bitcast<f32>(bestOf(lid, m, lid).x);
  let sum = sumScaled(lid, m, s, mx);
  // the rank's share: this chunk's ids whose logit is at least the chosen one's (exact: ≤ CHUNK in f32)
  let tok = min(outTokens[state.step * dims.maxSlots + slotOf(row)], dims.vocab - 1u);
  let lt = logits[base + tok];
  var ge = 0.0;
  for (var e = 0u; e < ${PER_INVOCATION}u; e++) { if (lo + e * WG < dims.vocab && v[e] >= lt) { ge += 1.0; } }
  let count = sumOf(lid, ge);
  let rec = (row * nwg.x + wid.x) * RECORD;
  var prev = vec2(0u, 0u);
  for (var k = 0u; k < n; k++) {
    var bv = dims.negInf;
    var bi = NONE;
    for (var e = 0u; e < ${PER_INVOCATION}u; e++) {
      let i = lo + e * WG;
      if (v[e] > dims.negInf && (k == 0u || better(bitcast<f32>(prev.x), prev.y, v[e], i)) &&
          better(v[e], i, bv, bi)) {
        bv = v[e];
        bi = i;
      }
    }
    prev = bestOf(lid, bv, bi);
    if (lid == 0u) { part[rec + k] = prev; }
  }
  if (lid == 0u) {
    part[rec + K] = vec2(bitcast<u32>(mx), bitcast<u32>(sum));
    part[rec + K + 1u] = vec2(u32(count), 0u);
  }
}
`;

const MERGE_WGSL = /* wgsl */ `
${STATE_STRUCT}
${COMMON}
const REC = ${LOGPROB_RECORD_WORDS}u;
@group(0) @binding(5) var<storage, read> state: StepState;
@group(0) @binding(6) var<storage, read> outTokens: array<u32>;        // (steps, maxSlots)
@group(0) @binding(7) var<storage, read_write> outLogprobs: array<u32>; // (steps, maxSlots, REC)
@group(0) @binding(8) var<storage, read> part: array<vec2<u32>>;       // part's records

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= dims.rows) { return; }
  let slot = slotOf(row);
  let n = wanted(slot);
  if (n == NONE) { return; }
  let chunks = (dims.vocab + CHUNK - 1u) / CHUNK;
  let first = row * chunks * RECORD;
  // lse: the chunks' (max, sum) pairs, combined per invocation, then over the workgroup; the rank: the
  // chunks' counts (integers below 2^24: exact in f32)
  var m = dims.negInf;
  var s = 0.0;
  var ge = 0.0;
  for (var c = lid; c < chunks; c += WG) {
    ge += f32(part[first + c * RECORD + K + 1u].x);
    let ms = part[first + c * RECORD + K];
    let mc = bitcast<f32>(ms.x);
    let sc = bitcast<f32>(ms.y);
    if (mc <= dims.negInf) { continue; }
    if (mc > m) {
      s = select(0.0, s * exp(m - mc), m > dims.negInf) + sc;
      m = mc;
    } else {
      s += sc * exp(mc - m);
    }
  }
  let mx = bitcast<f32>(bestOf(lid, m, lid).x);
  let lse = mx + log(sumScaled(lid, m, s, mx));
  let rec = (state.step * dims.maxSlots + slot) * REC;
  let tok = min(outTokens[state.step * dims.maxSlots + slot], dims.vocab - 1u);
  let lt = logits[row * dims.vocab + tok];
  let rank = sumOf(lid, ge);
  if (lid == 0u) {
    outLogprobs[rec] = bitcast<u32>(lt - lse);
    outLogprobs[rec + 1u] = slotParams[slot].nTop;
    outLogprobs[rec + REC - 1u] = u32(rank);
  }
  // the row's best: each invocation's best candidate strictly below the last pick, then a tree argmax
  var prev = vec2(0u, 0u);
  for (var k = 0u; k < n; k++) {
    var bv = dims.negInf;
    var bi = NONE;
    for (var q = lid; q < chunks * n; q += WG) {
      let cand = part[first + (q / n) * RECORD + q % n];
      let cv = bitcast<f32>(cand.x);
      if (cand.y != NONE && cv > dims.negInf && (k == 0u || better(bitcast<f32>(prev.x), prev.y, cv, cand.y)) &&
          better(cv, cand.y, bv, bi)) {
        bv = cv;
        bi = cand.y;
      }
    }
    prev = bestOf(lid, bv, bi);
    if (lid == 0u) {
      outLogprobs[rec + 2u + 2u * k] = prev.y;
      outLogprobs[rec + 3u + 2u * k] = bitcast<u32>(bitcast<f32>(prev.x) - lse);
    }
  }
}
`;

export interface LogprobsArgs extends RowsArgs {
  /** state: the chunk's step (state.step) */
  state: GPUBuffer;
  /** outTokens: (steps, maxSlots) u32 the sampler wrote */
  outTokens: GPUBuffer;
  /** outLogprobs: (steps, maxSlots, LOGPROB_RECORD_WORDS) u32 */
  outLogprobs: GPUBuffer;
}

const RO = "read-only-storage" as const;

/**
 * Builds `logprobs`: the chosen token's logprob and the top alternatives from the raw logits.
 * @param gpu the device
 */
export function createLogprobs(gpu: Gpu): Kernel<LogprobsArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const constants = { WG: wg };
  const part = getPipeline(gpu, {
    name: "logprobs part",
    code: PART_WGSL,
    constants,
    bindings: ["uniform", RO, RO, RO, RO, "storage", RO, RO],
  });
  const merge = getPipeline(gpu, {
    name: "logprobs merge",
    code: MERGE_WGSL,
    constants,
    bindings: ["uniform", RO, RO, RO, RO, RO, RO, "storage", RO],
  });
  return {
    bind(a: LogprobsArgs): Encodable {
      const chunks = Math.ceil(a.vocabSize / (PER_INVOCATION * wg));
      // Written and read within this bind's two dispatches, so binds may share it (buffers.ts).
      const scratch = sharedScratch(gpu, "logprobs chunks", a.rows * chunks * RECORD * 8);
      const dims = logitDims(gpu, a);
      const rows = [a.logits, a.slotParams, a.gather, a.rowSlot];
      const partGroup = bindBuffers(gpu, part, [dims, ...rows, scratch, a.state, a.outTokens]);
      const mergeGroup = bindBuffers(gpu, merge, [
        dims,
        ...rows,
        a.state,
        a.outTokens,
        a.outLogprobs,
        scratch,
      ]);
      return {
        encode(pass) {
          pass.setPipeline(part);
          pass.setBindGroup(0, partGroup);
          pass.dispatchWorkgroups(chunks, a.rows);
          pass.setPipeline(merge);
          pass.setBindGroup(0, mergeGroup);
          pass.dispatchWorkgroups(a.rows);
        },
      };
    },
  };
}
