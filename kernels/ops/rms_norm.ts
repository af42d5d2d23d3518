/**
 * RMSNorm (Zhang & Sennrich 2019), as Llama uses it: y = x / sqrt(mean(x²) + eps) · w, or with `accumulate`
 * y += that (Gemma's norms of the attention and MLP outputs, added onto the residual in the same dispatch).
 * Gemma's (1 + w) weights arrive with the 1 already folded in by the loader.
 * One workgroup per row; a strided sum of squares reduced through workgroup memory (no subgroups
 * on the H100 path, docs/webgpu.md §2).
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

/**
 * WGSL `fn workgroupSum(v, lid) -> f32`: Σ over the workgroup of each invocation's v (tree reduction in
 * workgroup memory), returned to every invocation. Needs `override WG` (a power of two); call it from
 * uniform control flow.
 */
export const WORKGROUP_SUM_FN = /* wgsl */ `
var<workgroup> partial: array<f32, WG>;

fn workgroupSum(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier(); // the next call may overwrite partial
  return total;
}
`;

const WGSL = /* wgsl */ `
override WG: u32 = 256u;
override ACC: bool = false; // y += the normed row instead of y = it

struct Params { dim: u32, rows: u32, eps: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // (rows, dim)
@group(0) @binding(2) var<storage, read> weight: array<f32>;  // (dim)
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // (rows, dim); may alias nothing

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }
  let base = row * params.dim;
  var ss = 0.0;
  for (var i = lid; i < params.dim; i += WG) {
    let v = x[base + i];
    ss = fma(v, v, ss);
  }
  let inv = inverseSqrt(workgroupSum(ss, lid) / f32(params.dim) + params.eps);
  for (var i = lid; i < params.dim; i += WG) {
    let v = x[base + i] * inv * weight[i];
    if (ACC) { y[base + i] += v; } else { y[base + i] = v; }
  }
}
${WORKGROUP_SUM_FN}`;

export interface RmsNormArgs {
  /** x: (rows, dim) f32 */
  x: GPUBuffer;
  /** weight: (dim) f32 */
  weight: GPUBuffer;
  /** y: (rows, dim) f32, a different buffer from x */
  y: GPUBuffer;
  rows: number;
  dim: number;
  eps: number;
  /** y += the normed rows (default false: y = them) */
  accumulate?: boolean;
}

/** The WGSL source (variants through the WG and ACC overrides). */
export function rmsNormShader(): string {
  return WGSL;
}

/** Builds the RMSNorm kernel. */
export function createRmsNorm(gpu: Gpu): Kernel<RmsNormArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipelines = [false, true].map((acc) =>
    getPipeline(gpu, {
      name: "rms_norm",
      code: WGSL,
      constants: { WG: wg, ACC: acc ? 1 : 0 },
      bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
    })
  );
  return {
    bind({ x, weight, y, rows, dim, eps, accumulate = false }: RmsNormArgs): Encodable {
      const pipeline = pipelines[accumulate ? 1 : 0];
      const params = uniformParams(gpu, [["u32", dim], ["u32", rows], ["f32", eps]], "rms_norm params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, x, weight, y]);
      const [gx, gy] = dispatch2d(gpu, rows);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
