/**
 * Logit soft-capping (Gemma 2 / Gemma 3 `final_logit_softcapping`): x ← c · tanh(x / c), in place, elementwise
 * over n values. Attention's score capping (attention.ts) pastes the same `softcap` function in.
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

/**
 * WGSL `fn softcap(x: f32, cap: f32) -> f32` = cap·tanh(x / cap). The argument is clamped to ±10 first
 * (tanh(10) is 1 in f32): WGSL defines tanh through sinh/cosh, which overflow for large arguments.
 */
export const SOFTCAP_FN = /* wgsl */ `
fn softcap(x: f32, cap: f32) -> f32 { return cap * tanh(clamp(x / cap, -10.0, 10.0)); }
`;

const WGSL = /* wgsl */ `
override WG: u32 = 256u;

struct Params { n: u32, cap: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>; // (n) f32, in place

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.n) { return; }
  x[i] = softcap(x[i], params.cap);
}
${SOFTCAP_FN}`;

export interface SoftcapArgs {
  /** x: (n) f32, capped in place */
  x: GPUBuffer;
  n: number;
  /** c > 0 */
  cap: number;
}

/** The WGSL source. */
export function softcapShader(): string {
  return WGSL;
}

/**
 * Builds the in-place soft-capping kernel.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffer, n and the cap
 */
export function createSoftcap(gpu: Gpu): Kernel<SoftcapArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "softcap",
    code: WGSL,
    constants: { WG: wg },
    bindings: ["uniform", "storage"],
  });
  return {
    bind({ x, n, cap }: SoftcapArgs): Encodable {
      if (!(cap > 0)) throw new Error(`Cannot soft-cap with cap ${cap}: expected a positive number`);
      const params = uniformParams(gpu, [["u32", n], ["f32", cap]], "softcap params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, x]);
      const [gx, gy] = dispatch2d(gpu, ceilDiv(n, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
