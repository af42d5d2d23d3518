/**
 * Rotary position embedding (Su et al. 2021, RoFormer) in place, in Hugging Face's rotate-half layout:
 * for each head and i < headDim/2, the pair (a, b) = (x[i], x[i + headDim/2]) at position p becomes
 *   (a cos θ − b sin θ, b cos θ + a sin θ),  θ = fl32(f32(p) · invFreq[i]),
 * with p = state.pos + t for row t. `invFreq` comes from the host, so llama3 and other scalings live
 * there. The angle is rounded to f32 exactly as transformers' `LlamaRotaryEmbedding.forward` forms
 * `freqs` in f32; cos/sin of that f32 angle are then computed to ~1e-7 absolute by our own Cody–Waite
 * reduction and minimax polynomials rather than the builtins, whose WGSL accuracy is only specified
 * on [−π, π] (2^−11) and which some GPUs evaluate poorly for angles in the thousands.
 * One dispatch can rotate q and k together (pass `k` and `nKvHeads`), and also append the rotated k and
 * v to the KV cache (pass `append`), which is kernels/kv_append.ts's work without its own dispatch.
 */
import {
  ceilDiv,
  createStorage,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";

/**
 * `fn cosSin(a: f32) -> vec2<f32>`: (cos a, sin a) to ~1e-7 absolute for |a| < 2e5 rad (see the module
 * comment); shared with the paged RoPE of kernels/ops/paged_kv.ts.
 */
export const ROPE_COS_SIN_WGSL = /* wgsl */ `
// π/2 = PIO2_1 + … + PIO2_5. The first four pieces carry 7 significant bits each, so k·PIO2_n is exact
// in f32 for |k| < 2^17 (angles up to ~2e5 rad); PIO2_5 is the f32 rounding of what remains.
const PIO2_1 = 1.5625;
const PIO2_2 = 0.0081787109375;
const PIO2_3 = 0.00011730194091796875;
const PIO2_4 = 3.1292438507080078e-7;
const PIO2_5 = 9.9209351844820048e-10;
const TWO_OVER_PI = 0.63661977236758134;

// (cos a, sin a): reduce a = k·π/2 + r with |r| ≤ π/4, evaluate minimax polynomials on r (the
// coefficients of Cephes' sinf/cosf), then pick the quadrant's signs and swap.
fn cosSin(a: f32) -> vec2<f32> {
  let kf = round(a * TWO_OVER_PI);
  var r = a - kf * PIO2_1;
  r = r - kf * PIO2_2;
  r = r - kf * PIO2_3;
  r = r - kf * PIO2_4;
  r = r - kf * PIO2_5;
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
    - 0.5 * z + 1.0;
  switch (u32(i32(kf)) & 3u) {
    case 0u: { return vec2(c, s); }
    case 1u: { return vec2(-s, c); }
    case 2u: { return vec2(-c, -s); }
    default: { return vec2(s, -c); }
  }
}
`;

/** The shader; `append` adds the cache bindings and writes (rotated k and v at state.pos + t). */
function ropeWgsl(append: boolean): string {
  return /* wgsl */ `
${STATE_STRUCT}
override WG: u32 = 256u;

// zero: always 0; see the angle below
struct Params { rows: u32, nHeads: u32, nKvHeads: u32, half: u32, zero: u32, seqLen: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> invFreq: array<f32>; // (headDim/2)
@group(0) @binding(3) var<storage, read_write> x: array<f32>; // (rows, nHeads·headDim), in place
@group(0) @binding(4) var<storage, read_write> k: array<f32>; // (rows, nKvHeads·headDim), in place
${
    append
      ? `@group(0) @binding(5) var<storage, read> v: array<f32>;             // (rows, kvDim)
@group(0) @binding(6) var<storage, read_write> kCache: array<f32>;  // (seqLen, kvDim)
@group(0) @binding(7) var<storage, read_write> vCache: array<f32>;  // (seqLen, kvDim)`
      : ""
  }

${ROPE_COS_SIN_WGSL}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let heads = params.nHeads + params.nKvHeads;
  if (i >= params.rows * heads * params.half) { return; }
  let j = i % params.half;
  let head = (i / params.half) % heads;
  let t = i / (params.half * heads);
  // θ must be the f32-rounded product, as in PyTorch. XOR with a uniform zero hides the product from
  // the compiler, which could otherwise fuse it into the reduction's first multiply-add and skip
  // that rounding (a 1e-4 rad difference at position 2000).
  let angle = bitcast<f32>(bitcast<u32>(f32(state.pos + t) * invFreq[j]) ^ params.zero);
  let cs = cosSin(angle);
  let headDim = 2u * params.half;
  if (head < params.nHeads) {
    let base = (t * params.nHeads + head) * headDim + j;
    let a = x[base];
    let b = x[base + params.half];
    x[base] = a * cs.x - b * cs.y;
    x[base + params.half] = b * cs.x + a * cs.y;
  } else {
    let base = (t * params.nKvHeads + head - params.nHeads) * headDim + j;
    let a = k[base];
    let b = k[base + params.half];
    let ra = a * cs.x - b * cs.y;
    let rb = b * cs.x + a * cs.y;
    k[base] = ra;
    k[base + params.half] = rb;
    ${
    append
      ? `// as kv_append.ts: positions at or past seqLen (or a wrapped-around state) are dropped
    let p = state.pos + t;
    let kvDim = params.nKvHeads * headDim;
    if (p < params.seqLen && p >= state.pos) {
      let dst = p * kvDim + base % kvDim;
      kCache[dst] = ra;
      kCache[dst + params.half] = rb;
      vCache[dst] = v[base];
      vCache[dst + params.half] = v[base + params.half];
    }`
      : ""
  }
  }
}
`;
}

export interface RopeArgs {
  /** x: (rows, nHeads · headDim) f32, rotated in place (usually q, or k on its own) */
  x: GPUBuffer;
  /** invFreq: (headDim/2) f32, the host's inverse frequencies with any scaling applied */
  invFreq: GPUBuffer;
  /** state: [STATE_WORDS] u32 (step_state.ts); row t is at position state.pos + t */
  state: GPUBuffer;
  rows: number;
  nHeads: number;
  headDim: number;
  /** k: (rows, nKvHeads · headDim) f32, rotated in place in the same dispatch; optional */
  k?: GPUBuffer;
  /** heads in `k`; required with `k` */
  nKvHeads?: number;
  /** With `k`: write the rotated k rows and these v rows to the caches at state.pos + t. */
  append?: {
    /** v: (rows, nKvHeads · headDim) f32 */
    v: GPUBuffer;
    /** kCache, vCache: (seqLen, nKvHeads · headDim) f32 */
    kCache: GPUBuffer;
    vCache: GPUBuffer;
    seqLen: number;
  };
}

/** The WGSL source: plain, or with the KV-cache append. */
export function ropeShader(append = false): string {
  return ropeWgsl(append);
}

/**
 * Builds the RoPE kernel.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffers and sizes; positions are read on the GPU
 */
export function createRope(gpu: Gpu): Kernel<RopeArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "rope",
    code: ropeWgsl(false),
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage", "storage"],
  });
  const appendPipeline = () =>
    getPipeline(gpu, {
      name: "rope_append",
      code: ropeWgsl(true),
      constants: { WG: wg },
      bindings: [
        "uniform",
        "read-only-storage",
        "read-only-storage",
        "storage",
        "storage",
        "read-only-storage",
        "storage",
        "storage",
      ],
    });
  // Stands in for `k` when only `x` is rotated (a binding cannot be left empty).
  let unusedK: GPUBuffer | null = null;
  return {
    bind({ x, invFreq, state, rows, nHeads, headDim, k, nKvHeads, append }: RopeArgs): Encodable {
      if (headDim % 2 !== 0) throw new Error(`Cannot apply RoPE: headDim ${headDim} is odd`);
      if ((k === undefined) !== (nKvHeads === undefined)) {
        throw new Error("Cannot apply RoPE to k: pass both k and nKvHeads, or neither");
      }
      if (append && !k) throw new Error("Cannot append to the KV cache without k");
      const kHeads = nKvHeads ?? 0;
      const half = headDim / 2;
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", nHeads], ["u32", kHeads], ["u32", half], ["u32", 0], [
          "u32",
          append?.seqLen ?? 0,
        ]],
        "rope params",
      );
      unusedK ??= createStorage(gpu, 4, "rope unused k");
      const kBuffer = k ?? unusedK;
      const p = append ? appendPipeline() : pipeline;
      const buffers = [params, state, invFreq, x, kBuffer];
      if (append) buffers.push(append.v, append.kCache, append.vCache);
      const bindGroup = gpu.device.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows * (nHeads + kHeads) * half, wg));
      return singleDispatch(p, bindGroup, [gx, gy]);
    },
  };
}
