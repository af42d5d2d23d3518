/**
 * The gated MLP's elementwise step (Shazeer 2020, "GLU Variants Improve Transformer"): SwiGLU as Llama uses it,
 *   out = silu(gate) · up,  silu(x) = x · σ(x) = x / (1 + e^−x),
 * or GeGLU with the tanh GELU as Gemma uses it (`activation: "gelu_tanh"`, PyTorch's gelu_pytorch_tanh),
 *   out = gelu(gate) · up,  gelu(x) = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
 * Elementwise over n values; when n is a multiple of 4 the buffers are read as vec4<f32>.
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
 * WGSL `fn siluMul(g: T, u: T) -> T` = silu(g)·u for T = `unit` (f32 or vec4<f32>); the matmul kernels that
 * take SiLU·mul into their prologue paste it in, so every path rounds the same way.
 */
export function siluMulFn(unit: "f32" | "vec4<f32>"): string {
  return /* wgsl */ `
// Clamp the exponent so very negative gates give ~0 instead of relying on 1/inf: WGSL lets an
// implementation assume no infinities. The clamp changes silu by < 1e-33 at most.
fn siluMul(g: ${unit}, u: ${unit}) -> ${unit} { return g / (1.0 + exp(min(-g, ${unit}(80.0)))) * u; }
`;
}

/** WGSL `fn geluTanhMul(g: T, u: T) -> T` = gelu_tanh(g)·u for T = `unit`. */
export function geluTanhMulFn(unit: "f32" | "vec4<f32>"): string {
  return /* wgsl */ `
// tanh's argument is clamped to ±10 (tanh(10) is 1 in f32): WGSL defines tanh through sinh/cosh, which
// overflow for large arguments.
fn geluTanhMul(g: ${unit}, u: ${unit}) -> ${unit} {
  let inner = 0.7978845608028654 * (g + 0.044715 * g * g * g);
  return 0.5 * g * (1.0 + tanh(clamp(inner, ${unit}(-10.0), ${unit}(10.0)))) * u;
}
`;
}

/** The gate's activation. */
export type GateActivation = "silu" | "gelu_tanh";

const ACTIVATION_FN: Record<GateActivation, [string, typeof siluMulFn]> = {
  silu: ["siluMul", siluMulFn],
  gelu_tanh: ["geluTanhMul", geluTanhMulFn],
};

/** `T` is f32 or vec4<f32>; `n` in Params counts units of T. */
function wgsl(unit: "f32" | "vec4<f32>", activation: GateActivation): string {
  const [fn, source] = ACTIVATION_FN[activation];
  return /* wgsl */ `
override WG: u32 = 256u;

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gate: array<${unit}>;     // (n) f32
@group(0) @binding(2) var<storage, read> up: array<${unit}>;       // (n) f32
@group(0) @binding(3) var<storage, read_write> out: array<${unit}>; // (n) f32

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.n) { return; }
  out[i] = ${fn}(gate[i], up[i]);
}
${source(unit)}`;
}

export interface SiluMulArgs {
  /** gate: (n) f32 */
  gate: GPUBuffer;
  /** up: (n) f32 */
  up: GPUBuffer;
  /** out: (n) f32, a different buffer from gate and up */
  out: GPUBuffer;
  /** element count, e.g. rows · hiddenDim */
  n: number;
}

/**
 * The WGSL source; `vec4` reads four elements per invocation (n must then be a multiple of 4); `activation`
 * picks SiLU (default) or the tanh GELU.
 */
export function siluMulShader(spec: { vec4: boolean; activation?: GateActivation }): string {
  return wgsl(spec.vec4 ? "vec4<f32>" : "f32", spec.activation ?? "silu");
}

/**
 * Builds the act(gate)·up kernel (both the scalar and the vec4 variant; `bind` picks by n).
 * @param gpu the device
 * @param spec the gate's activation (default SiLU)
 * @returns a kernel whose `bind` fixes the buffers and n
 */
export function createSiluMul(
  gpu: Gpu,
  { activation = "silu" }: { activation?: GateActivation } = {},
): Kernel<SiluMulArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipelines = [false, true].map((vec4) =>
    getPipeline(gpu, {
      name: "silu_mul",
      code: siluMulShader({ vec4, activation }),
      constants: { WG: wg },
      bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
      spec: { vec4, activation },
    })
  );
  return {
    bind({ gate, up, out, n }: SiluMulArgs): Encodable {
      const vec4 = n % 4 === 0;
      const pipeline = pipelines[vec4 ? 1 : 0];
      const units = vec4 ? n / 4 : n;
      const params = uniformParams(gpu, [["u32", units]], "silu_mul params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, gate, up, out]);
      const [gx, gy] = dispatch2d(gpu, ceilDiv(units, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
