/**
 * Per-head RMSNorm of q and k, in place (Qwen3's and Gemma 3's `q_norm`/`k_norm`, before RoPE): every head's
 * headDim values x become x / sqrt(mean(x²) + eps) · w, with one weight (headDim) shared by the query heads
 * and one by the KV heads. One workgroup per (row, head) over the nHeads + nKvHeads heads of a row, so q and
 * k take one dispatch; the sum of squares is reduced as rms_norm.ts does it.
 */
import {
  bindBuffers,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";
import { WORKGROUP_SUM_FN } from "./rms_norm.ts";

const WGSL = /* wgsl */ `
override WG: u32 = 64u; // a power of two

struct Params { rows: u32, nHeads: u32, nKvHeads: u32, headDim: u32, eps: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;   // (rows, nHeads·headDim), in place
@group(0) @binding(2) var<storage, read_write> k: array<f32>;   // (rows, nKvHeads·headDim), in place
@group(0) @binding(3) var<storage, read> qWeight: array<f32>;   // (headDim)
@group(0) @binding(4) var<storage, read> kWeight: array<f32>;   // (headDim)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let heads = params.nHeads + params.nKvHeads;
  let cell = wid.x + wid.y * nwg.x;
  if (cell >= params.rows * heads) { return; }
  let t = cell / heads;
  let h = cell % heads;
  let isQ = h < params.nHeads;
  let d = params.headDim;
  let base = select((t * params.nKvHeads + h - params.nHeads) * d, (t * params.nHeads + h) * d, isQ);
  var ss = 0.0;
  for (var i = lid; i < d; i += WG) {
    let v = select(k[base + i], q[base + i], isQ);
    ss = fma(v, v, ss);
  }
  let inv = inverseSqrt(workgroupSum(ss, lid) / f32(d) + params.eps);
  for (var i = lid; i < d; i += WG) {
    if (isQ) { q[base + i] = q[base + i] * inv * qWeight[i]; } else { k[base + i] = k[base + i] * inv * kWeight[i]; }
  }
}
${WORKGROUP_SUM_FN}`;

export interface HeadNormArgs {
  /** q: (rows, nHeads · headDim) f32, normed in place per head */
  q: GPUBuffer;
  /** k: (rows, nKvHeads · headDim) f32, normed in place per head */
  k: GPUBuffer;
  /** qWeight, kWeight: (headDim) f32 */
  qWeight: GPUBuffer;
  kWeight: GPUBuffer;
  rows: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  eps: number;
}

/** The WGSL source. */
export function headNormShader(): string {
  return WGSL;
}

/**
 * Builds the per-head q/k RMSNorm.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffers and shapes
 */
export function createHeadNorm(gpu: Gpu): Kernel<HeadNormArgs> {
  const pipeline = getPipeline(gpu, {
    name: "head_norm",
    code: WGSL,
    constants: { WG: 64 },
    bindings: ["uniform", "storage", "storage", "read-only-storage", "read-only-storage"],
  });
  return {
    bind({ q, k, qWeight, kWeight, rows, nHeads, nKvHeads, headDim, eps }: HeadNormArgs): Encodable {
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", nHeads], ["u32", nKvHeads], ["u32", headDim], ["f32", eps]],
        "head_norm params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, q, k, qWeight, kWeight]);
      const [gx, gy] = dispatch2d(gpu, rows * (nHeads + nKvHeads));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
