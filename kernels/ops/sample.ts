/**
 * Token sampling on the GPU, so that a decode step never waits for the host (docs/webgpu.md §3): the
 * chosen id goes to `tokenOut[0]` (read by the next step's embedding) and to the ring
 * `history[state.step % historyLen]` (read back by the host once per chunk of steps). The step state
 * is bound read-only; `advance` (step_state.ts) moves it. The WGSL lives in sample.wgsl.
 *
 * Semantics (kernels/reference.ts `sampleRef` implements exactly this, in f64):
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
 * - Draw: u = uniform(seed, step) · keptMass, and the pick is the first index (in index order) whose
 *   cumulative kept mass exceeds u. Groups of 32 invocations own contiguous segments of the row
 *   (a blocked prefix sum with coalesced reads), a scan over the segment masses finds the segment,
 *   and a scan over that segment's vec4s finds the vec4, which one invocation walks.
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
  createStorage,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  STATE_STRUCT,
  uniformParams,
  writeBuffer,
} from "../core/mod.ts";
import SAMPLE_WGSL from "./sample.wgsl" with { type: "text" };

const WGSL = STATE_STRUCT + SAMPLE_WGSL;
const RO = "read-only-storage";

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
  /** invocations in the one workgroup, a power of two; default the largest ≤ 512 that fits */
  workgroupSize?: number;
  /** tokens the workgroup pool holds (a multiple of 4); default what workgroup memory leaves, ≤ 4096 */
  poolSize?: number;
}

/** Workgroup memory of one variant: reductions (36 B per invocation), fixed scratch, the pool. */
function sampleWorkgroupBytes(wg: number, pool: number): number {
  return 36 * wg + 1040 + 4 * pool;
}

/** Picks the workgroup size and pool size that fit the device's workgroup memory. */
function sampleVariant(gpu: Gpu, spec: SampleSpec): { wg: number; pool: number } {
  const budget = gpu.maxWorkgroupStorageBytes;
  let wg = spec.workgroupSize ?? Math.min(512, gpu.maxInvocationsPerWorkgroup);
  while (spec.workgroupSize === undefined && wg > 64 && sampleWorkgroupBytes(wg, 1024) > budget) wg /= 2;
  const fit = Math.floor((budget - sampleWorkgroupBytes(wg, 0)) / 16) * 4;
  const pool = spec.poolSize ?? Math.min(4096, fit);
  const ok = Number.isInteger(wg) && wg >= 1 && (wg & (wg - 1)) === 0 && wg <= gpu.maxInvocationsPerWorkgroup;
  if (!ok || !(Number.isInteger(pool) && pool >= 4 && pool % 4 === 0 && pool <= fit)) {
    throw new Error(
      `Cannot build kernel "sample": workgroupSize ${wg} (a power of two ≤ ${gpu.maxInvocationsPerWorkgroup}) ` +
        `and poolSize ${pool} (a multiple of 4 ≤ ${fit}) must fit ${budget} bytes of workgroup memory`,
    );
  }
  return { wg, pool };
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
  const { wg, pool } = sampleVariant(gpu, spec);
  const pipeline = getPipeline(gpu, {
    name: "sample",
    code: WGSL,
    constants: { WG: wg, GS: Math.min(32, wg), POOL4: pool / 4 },
    bindings: ["uniform", RO, RO, RO, RO, "storage", "storage"],
    spec: { wg, pool },
  });
  return {
    bind(args: SampleArgs): Encodable {
      const { logits, logitsOffset = 0, params, state, tokenOut, history, vocabSize, historyLen } = args;
      checkArgs(args, logitsOffset);
      // Binding offsets must be aligned (256 on our adapters); the remainder becomes an element shift.
      const align = Number(gpu.device.limits.minStorageBufferOffsetAlignment);
      const offset = Math.floor(logitsOffset / align) * align;
      const shift = (logitsOffset - offset) / 4;
      const span = shift + vocabSize;
      const dims = uniformParams(gpu, [
        ["u32", vocabSize],
        ["u32", historyLen],
        ["u32", shift],
        ["u32", Math.floor(shift / 4)],
        ["u32", Math.ceil(span / 4)],
        ["f32", -Infinity],
        ["f32", Infinity],
      ], "sample dims");
      // The vec4 view holds only whole vec4s; a row shorter than one gets a stand-in it never reads.
      const whole = Math.floor(span / 4) * 16;
      const logits4 = whole > 0
        ? { buffer: logits, offset, size: whole }
        : { buffer: createStorage(gpu, 16, "unused") };
      const resources = [
        { buffer: dims },
        logits4,
        { buffer: logits, offset, size: span * 4 },
        ...[params, state, tokenOut, history].map((buffer) => ({ buffer })),
      ];
      const bindGroup = gpu.device.createBindGroup({
        label: "sample",
        layout: pipeline.getBindGroupLayout(0),
        entries: resources.map((resource, binding) => ({ binding, resource })),
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
