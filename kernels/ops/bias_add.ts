/**
 * Bias add in place: y[r, c] += bias[c] over (rows, n) (Qwen2's q/k/v projections carry biases; they stay
 * full precision when the weights are quantized, so they are added after any matmul kernel).
 */
import {
  bindBuffers,
  ceilDiv,
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

struct Params { rows: u32, n: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;     // (n) f32
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // (rows, n) f32, in place

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.rows * params.n) { return; }
  y[i] += bias[i % params.n];
}
`;

export interface BiasAddArgs {
  /** bias: (n) f32 */
  bias: GPUBuffer;
  /** y: (rows, n) f32, updated in place */
  y: GPUBuffer;
  rows: number;
  n: number;
}

/** The WGSL source. */
export function biasAddShader(): string {
  return WGSL;
}

/**
 * Builds the in-place bias add.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffers and shape
 */
export function createBiasAdd(gpu: Gpu): Kernel<BiasAddArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "bias_add",
    code: WGSL,
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "storage"],
  });
  return {
    bind({ bias, y, rows, n }: BiasAddArgs): Encodable {
      const params = uniformParams(gpu, [["u32", rows], ["u32", n]], "bias_add params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, bias, y]);
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows * n, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
