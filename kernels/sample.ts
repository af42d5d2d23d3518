/**
 * Token sampling on the GPU, so that a decode step never waits for the host (webgpu.md §3): the
 * chosen id goes to `tokenOut[0]` (read by the next step's embedding) and to the ring
 * `history[state.step % historyLen]` (read back by the host once per chunk of steps).
 *
 * Semantics (kernels/reference.ts `sampleRef` implements exactly this, in f64):
 * - temperature == 0: greedy argmax; the lowest index wins ties.
 * - otherwise p_i = exp((l_i − max) / T), unnormalised (p_max = 1), Z = Σ p_i. A token is kept iff it
 *   passes every enabled filter:
 *   - top-k (topK = 0 or ≥ vocab: off): keep the k largest;
 *   - top-p (topP = 1: off): keep the smallest set of largest tokens whose mass is ≥ topP · Z;
 *   - min-p (minP = 0: off): keep p_i ≥ minP · p_max, i.e. l_i ≥ max + T · ln(minP).
 * - Top-k and top-p are found by a threshold search instead of a sort. Probabilities are monotone in
 *   the logits, so the threshold is searched over an order-preserving u32 key of the f32 logit
 *   (`orderKey`), one bit at a time from the top: K* is the largest key with count(key ≥ K*) ≥ k
 *   (top-k on) or mass(key ≥ K*) ≥ topP · Z (top-p on), and count ≥ 1. That is 32 iterations, each a
 *   workgroup reduction of count and mass over the whole vocabulary, and the result is exact: K* is
 *   the key of a real logit, so the top-k/top-p set is {i : key_i ≥ K*} = {i : l_i ≥ l*}. Tokens
 *   tied with the boundary logit are all kept, so top-k may keep more than k on exact ties. Taking
 *   the larger of the two thresholds is the same as intersecting the two sets. The argmax always
 *   survives (count ≥ 1 and minP ≤ 1).
 * - Draw: u = uniform(seed, step) · keptMass, and the pick is the first index (in index order) whose
 *   cumulative kept mass exceeds u. Each invocation owns a contiguous chunk of the vocabulary, the
 *   chunk masses are scanned across the workgroup, and the chunk where the scan first exceeds u
 *   walks its own elements.
 * - RNG: uniform(seed, step) = (h >> 8) / 2^24 with h = pcg(pcg(seed) + step), where pcg is the
 *   PCG-RXS-M-XS output permutation (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering").
 *   It is a bijection of u32, so one seed gives a distinct draw at every step.
 * The GPU accumulates in f32, so a draw within ~1e-6 (relative) of a boundary may pick a neighbour
 * of the reference's choice; the tests use random logits where that never happens.
 * Logits must be finite. The step state is read-only here; `advance` (step_state.ts) moves it.
 *
 * One workgroup does everything (≈ 35 passes over the logits: max+sum, 32 search steps skipped when
 * top-k and top-p are off, the chunk masses), and only the search steps that pass a token take an exp.
 */
import { type Encodable, getPipeline, type Gpu, type Kernel } from "./gpu.ts";
import { uniformParams, writeBuffer } from "./buffers.ts";
import { STATE_STRUCT } from "./step_state.ts";

const WGSL = /* wgsl */ `
override WG: u32 = 256u;

struct Dims { vocab: u32, historyLen: u32, shift: u32 }
struct SampleParams {
  temperature: f32, topP: f32, topK: u32, minP: f32, seed: u32, pad0: u32, pad1: u32, pad2: u32
}
${STATE_STRUCT}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // (shift + vocab) f32; row at [shift]
@group(0) @binding(2) var<storage, read> params: SampleParams;
@group(0) @binding(3) var<storage, read> state: StepState;
@group(0) @binding(4) var<storage, read_write> tokenOut: array<u32>; // [1] u32
@group(0) @binding(5) var<storage, read_write> history: array<u32>;  // [historyLen] u32 ring

const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282347e38;

var<workgroup> redF: array<f32, WG>;
var<workgroup> redG: array<f32, WG>;
var<workgroup> redU: array<u32, WG>;
var<workgroup> owner: atomic<u32>;

fn logit(i: u32) -> f32 { return logits[dims.shift + i]; }

// Order-preserving f32 → u32: a < b ⇔ orderKey(a) < orderKey(b) (−0 sorts just below +0).
fn orderKey(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn emit(token: u32) {
  tokenOut[0] = token;
  history[state.step % dims.historyLen] = token;
}

// Sums redU and redF over the workgroup into [0].
fn reduceSum(lid: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      redU[lid] += redU[lid + s];
      redF[lid] += redF[lid + s];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let vocab = dims.vocab;
  let greedy = params.temperature <= 0.0;
  let invT = select(1.0 / params.temperature, 0.0, greedy);
  if (lid == 0u) { atomicStore(&owner, WG); }

  // Pass 1: max, first argmax and the online sum Z = Σ exp((l − max)/T), rescaled when max grows.
  var m = LOWEST;
  var idx = NONE;
  var z = 0.0;
  for (var i = lid; i < vocab; i += WG) {
    let l = logit(i);
    if (idx == NONE || l > m) {
      z = select(z * exp((m - l) * invT), 0.0, idx == NONE) + 1.0;
      m = l;
      idx = i;
    } else {
      z += exp((l - m) * invT);
    }
  }
  redF[lid] = m;
  redU[lid] = idx;
  redG[lid] = z;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let m1 = redF[lid];
      let m2 = redF[lid + s];
      let i2 = redU[lid + s];
      let mm = max(m1, m2);
      redG[lid] = redG[lid] * exp((m1 - mm) * invT) + redG[lid + s] * exp((m2 - mm) * invT);
      if (m2 > m1 || (m2 == m1 && i2 < redU[lid])) {
        redF[lid] = m2;
        redU[lid] = i2;
      }
    }
    workgroupBarrier();
  }
  let mx = workgroupUniformLoad(&redF[0]);
  let argmax = workgroupUniformLoad(&redU[0]);
  let total = workgroupUniformLoad(&redG[0]);
  workgroupBarrier();
  if (greedy) {
    if (lid == 0u) { emit(argmax); }
    return;
  }

  // Threshold search for top-k / top-p: the largest key K that still satisfies an enabled filter.
  let kOn = params.topK > 0u && params.topK < vocab;
  let pOn = params.topP < 1.0;
  let q = params.topP * total;
  var K = 0u;
  if (kOn || pOn) {
    for (var bit = 0u; bit < 32u; bit++) {
      let cand = K | (0x80000000u >> bit);
      var c = 0u;
      var mass = 0.0;
      for (var i = lid; i < vocab; i += WG) {
        let l = logit(i);
        if (orderKey(l) >= cand) {
          c += 1u;
          if (pOn) { mass += exp((l - mx) * invT); }
        }
      }
      redU[lid] = c;
      redF[lid] = mass;
      reduceSum(lid);
      let cTot = workgroupUniformLoad(&redU[0]);
      let mTot = workgroupUniformLoad(&redF[0]);
      workgroupBarrier();
      if (cTot > 0u && ((kOn && cTot >= params.topK) || (pOn && mTot >= q))) { K = cand; }
    }
  }
  let tMin = select(LOWEST, mx + params.temperature * log(min(params.minP, 1.0)), params.minP > 0.0);

  // Draw: chunk masses, an inclusive scan over invocations, then the owning chunk walks its tokens.
  let chunk = (vocab + WG - 1u) / WG;
  let start = min(lid * chunk, vocab);
  let end = min(start + chunk, vocab);
  var part = 0.0;
  for (var i = start; i < end; i++) {
    let l = logit(i);
    if (orderKey(l) >= K && l >= tMin) { part += exp((l - mx) * invT); }
  }
  redF[lid] = part;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    var add = 0.0;
    if (lid >= off) { add = redF[lid - off]; }
    workgroupBarrier();
    redF[lid] += add;
    workgroupBarrier();
  }
  let kept = workgroupUniformLoad(&redF[WG - 1u]);
  let u = f32(pcg(pcg(params.seed) + state.step) >> 8u) * (1.0 / 16777216.0) * kept;
  if (redF[lid] > u) { atomicMin(&owner, lid); }
  workgroupBarrier();
  let who = atomicLoad(&owner);
  if (who == WG) {
    if (lid == 0u) { emit(argmax); } // only reachable on non-finite input
    return;
  }
  if (lid != who) { return; }
  var cum = 0.0;
  if (lid > 0u) { cum = redF[lid - 1u]; }
  var last = argmax;
  for (var i = start; i < end; i++) {
    let l = logit(i);
    if (orderKey(l) >= K && l >= tMin) {
      cum += exp((l - mx) * invT);
      last = i;
      if (cum > u) { break; }
    }
  }
  emit(last); // the last kept token seen: the hit, or the chunk's tail if f32 rounding missed u
}
`;

/** Sampling settings as the kernel reads them (the host rewrites them per request). */
export interface SampleSettings {
  /** ≥ 0; 0 means greedy argmax */
  temperature: number;
  /** in (0, 1]; 1 disables top-p */
  topP: number;
  /** integer ≥ 0; 0 (or ≥ vocab) disables top-k */
  topK: number;
  /** in [0, 1]; 0 disables min-p */
  minP: number;
  /** u32 RNG seed */
  seed: number;
}

/** Size of `struct SampleParams`: 5 fields padded to 8 words. */
export const SAMPLE_PARAMS_BYTES = 32;

/**
 * Validates `settings` and writes them into a params buffer (a storage buffer of
 * {@link SAMPLE_PARAMS_BYTES}), in `struct SampleParams` field order.
 * @param gpu the device
 * @param buffer the params buffer bound to the sampler
 * @param settings the request's sampling settings
 * @throws Error naming the first out-of-range field
 */
export function writeSampleParams(gpu: Gpu, buffer: GPUBuffer, settings: SampleSettings): void {
  const { temperature, topP, topK, minP, seed } = settings;
  const bad = (what: string, value: number) =>
    new Error(`Cannot set sampling params: expected ${what}, got ${value}`);
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw bad("temperature ≥ 0", temperature);
  if (!(topP > 0 && topP <= 1)) throw bad("topP in (0, 1]", topP);
  if (!(Number.isInteger(topK) && topK >= 0 && topK < 2 ** 32)) throw bad("integer topK ≥ 0", topK);
  if (!(minP >= 0 && minP <= 1)) throw bad("minP in [0, 1]", minP);
  if (!(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) throw bad("seed a u32", seed);
  const view = new DataView(new ArrayBuffer(SAMPLE_PARAMS_BYTES));
  view.setFloat32(0, temperature, true);
  view.setFloat32(4, topP, true);
  view.setUint32(8, topK, true);
  view.setFloat32(12, minP, true);
  view.setUint32(16, seed, true);
  writeBuffer(gpu, buffer, view);
}

export interface SampleArgs {
  /** logits: (…, vocabSize) f32; the sampled row starts at byte `logitsOffset` */
  logits: GPUBuffer;
  /** byte offset of the row, a multiple of 4 (e.g. (rows − 1) · vocabSize · 4 for the last row); default 0 */
  logitsOffset?: number;
  /** params: [SAMPLE_PARAMS_BYTES] struct SampleParams, written by {@link writeSampleParams} */
  params: GPUBuffer;
  /** state: [STATE_WORDS] u32 step state (step_state.ts), bound read-only */
  state: GPUBuffer;
  /** tokenOut: [1] u32, the chosen id for the next step's embedding */
  tokenOut: GPUBuffer;
  /** history: [historyLen] u32 ring, written at state.step % historyLen */
  history: GPUBuffer;
  vocabSize: number;
  historyLen: number;
}

export interface SampleSpec {
  /** invocations in the one workgroup, a power of two; default min(1024, device max) */
  workgroupSize?: number;
}

/** The WGSL source (variants only through the WG override). */
export function sampleShader(): string {
  return WGSL;
}

/**
 * Builds the sampler: one workgroup that picks one token from one row of logits.
 * @param gpu the device
 * @param spec workgroup size
 * @returns a kernel whose `bind` fixes buffers and sizes once
 * @example
 * ```ts ignore
 * const sample = createSample(gpu).bind({ logits, logitsOffset, params, state, tokenOut, history,
 *   vocabSize, historyLen: 32 });
 * sample.encode(pass); // then advance.encode(pass) and the next step's forward
 * ```
 */
export function createSample(gpu: Gpu, spec: SampleSpec = {}): Kernel<SampleArgs> {
  const wg = spec.workgroupSize ?? Math.min(1024, gpu.maxInvocationsPerWorkgroup);
  if (!(Number.isInteger(wg) && wg >= 1 && (wg & (wg - 1)) === 0 && wg <= gpu.maxInvocationsPerWorkgroup)) {
    throw new Error(
      `Cannot build kernel "sample": workgroupSize must be a power of two ≤ ${gpu.maxInvocationsPerWorkgroup}, got ${wg}`,
    );
  }
  const pipeline = getPipeline(gpu, {
    name: "sample",
    code: WGSL,
    constants: { WG: wg },
    bindings: [
      "uniform",
      "read-only-storage",
      "read-only-storage",
      "read-only-storage",
      "storage",
      "storage",
    ],
    spec: { wg },
  });
  return {
    bind(args: SampleArgs): Encodable {
      const { logits, logitsOffset = 0, params, state, tokenOut, history, vocabSize, historyLen } = args;
      checkArgs(args, logitsOffset);
      // Binding offsets must be aligned (256 on our adapters); the remainder becomes an element shift.
      const align = Number(gpu.device.limits.minStorageBufferOffsetAlignment);
      const bindOffset = Math.floor(logitsOffset / align) * align;
      const shift = (logitsOffset - bindOffset) / 4;
      const dims = uniformParams(
        gpu,
        [["u32", vocabSize], ["u32", historyLen], ["u32", shift]],
        "sample dims",
      );
      const bindGroup = gpu.device.createBindGroup({
        label: "sample",
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: dims } },
          { binding: 1, resource: { buffer: logits, offset: bindOffset, size: (shift + vocabSize) * 4 } },
          ...[params, state, tokenOut, history].map((buffer, i) => ({
            binding: i + 2,
            resource: { buffer },
          })),
        ],
      });
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(1);
        },
      };
    },
  };
}

/** Load-time checks of the sizes `bind` relies on. */
function checkArgs(args: SampleArgs, logitsOffset: number): void {
  const { logits, params, tokenOut, history, vocabSize, historyLen } = args;
  if (!(Number.isInteger(vocabSize) && vocabSize >= 1)) {
    throw new Error(`Cannot bind sampler: expected vocabSize ≥ 1, got ${vocabSize}`);
  }
  if (!(Number.isInteger(historyLen) && historyLen >= 1 && history.size >= historyLen * 4)) {
    throw new Error(
      `Cannot bind sampler: history of ${history.size} bytes cannot hold historyLen ${historyLen}`,
    );
  }
  if (logitsOffset % 4 !== 0 || logitsOffset + vocabSize * 4 > logits.size) {
    throw new Error(
      `Cannot bind sampler: logits row at byte ${logitsOffset} with vocabSize ${vocabSize} ` +
        `does not fit buffer "${logits.label}" of ${logits.size} bytes`,
    );
  }
  if (params.size < SAMPLE_PARAMS_BYTES || tokenOut.size < 4) {
    throw new Error(`Cannot bind sampler: params needs ${SAMPLE_PARAMS_BYTES} bytes and tokenOut 4`);
  }
}
