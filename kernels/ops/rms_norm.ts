/**
 * RMSNorm (Zhang & Sennrich 2019), as Llama uses it: y = x / sqrt(mean(x²) + eps) · w.
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

const WGSL = /* wgsl */ `
override WG: u32 = 256u;

struct Params { dim: u32, rows: u32, eps: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // (rows, dim)
@group(0) @binding(2) var<storage, read> weight: array<f32>;  // (dim)
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // (rows, dim); may alias nothing

var<workgroup> partial: array<f32, WG>;

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
  partial[lid] = ss;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(params.dim) + params.eps);
  for (var i = lid; i < params.dim; i += WG) {
    y[base + i] = x[base + i] * inv * weight[i];
  }
}
`;

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
}

/** The WGSL source (no variants beyond the workgroup size override). */
export function rmsNormShader(): string {
  return WGSL;
}

/** Builds the RMSNorm kernel. */
export function createRmsNorm(gpu: Gpu): Kernel<RmsNormArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "rms_norm",
    code: WGSL,
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
  });
  return {
    bind({ x, weight, y, rows, dim, eps }: RmsNormArgs): Encodable {
      const params = uniformParams(gpu, [["u32", dim], ["u32", rows], ["f32", eps]], "rms_norm params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, x, weight, y]);
      const [gx, gy] = dispatch2d(gpu, rows);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
