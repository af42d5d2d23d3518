/**
 * Conversion between f32 and IEEE halves packed two per u32 (element 2j in the low half, 2j+1 in the high
 * half, the layout of kernels/embed.ts and kernels/matmul.ts), for activations kept in f16 between uses
 * and computed on in f32 (e.g. the quantizer's calibration hidden states, as GPTQ keeps its `inps` in fp16).
 *   to "f16": dst[j] = half(src[2j]) | half(src[2j+1]) << 16,   round to nearest, ties to even
 *   to "f32": dst[i] = f32(half i of src)                       exact
 * The rounding is done on the bits: WGSL leaves the rounding of `pack2x16float` to the implementation, and
 * a fixed rule makes the stored values reproducible across GPUs (and equal to the host's Float16Array).
 * Magnitudes at or past 65520 become ±∞ and NaN stays NaN, as IEEE conversion does. Needs no `shader-f16`.
 */
import {
  bindBuffers,
  type BoundPlan,
  ceilDiv,
  dispatch2d,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";

const HEAD = /* wgsl */ `
override WG: u32 = 256u;

struct Params { n: u32 }  // values (not pairs)

@group(0) @binding(0) var<uniform> params: Params;
`;

// One invocation per pair; an odd n leaves the last pair's high half zero (to f16) or unwritten (to f32).
const TO_F16 = /* wgsl */ `
@group(0) @binding(1) var<storage, read> src: array<f32>;        // (n) f32
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;  // (⌈n/2⌉) f16 pairs

// f32 → half bits, ties to even.
fn halfBits(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  let sign = (b >> 16u) & 0x8000u;
  let mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u) { return sign | 0x7e00u; }  // NaN
  if (mag >= 0x477ff000u) { return sign | 0x7c00u; } // ≥ 65520 (65504 + half an ulp, a tie to even) → ∞
  if (mag >= 0x38800000u) {
    // Normal half: rebias the exponent (127 → 15) and drop 13 mantissa bits with round-half-even; a carry
    // out of the mantissa correctly bumps the exponent.
    let m = mag - 0x38000000u;
    return sign | ((m + 0x0fffu + ((m >> 13u) & 1u)) >> 13u);
  }
  // |v| < 2^-14: a subnormal half counts units of 2^-24; scaling by 2^24 is exact and round() ties to even.
  return sign | u32(round(bitcast<f32>(mag) * 16777216.0));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let j = (wid.x + wid.y * nwg.x) * WG + lid;
  if (2u * j >= params.n) { return; }
  var hi = 0u;
  if (2u * j + 1u < params.n) { hi = halfBits(src[2u * j + 1u]); }
  dst[j] = halfBits(src[2u * j]) | (hi << 16u);
}
`;

const TO_F32 = /* wgsl */ `
@group(0) @binding(1) var<storage, read> src: array<u32>;        // (⌈n/2⌉) f16 pairs
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // (n) f32

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let j = (wid.x + wid.y * nwg.x) * WG + lid;
  if (2u * j >= params.n) { return; }
  let v = unpack2x16float(src[j]);
  dst[2u * j] = v.x;
  if (2u * j + 1u < params.n) { dst[2u * j + 1u] = v.y; }
}
`;

/** Which way the kernel converts. */
export interface F16ConvertSpec {
  /** "f16": f32 → packed halves; "f32": packed halves → f32. */
  to: "f16" | "f32";
}

export interface F16ConvertArgs {
  /** src: (n) f32 for to "f16"; (⌈n/2⌉) u32 of f16 pairs for to "f32" */
  src: GPUBuffer;
  /** dst: (⌈n/2⌉) u32 of f16 pairs for to "f16"; (n) f32 for to "f32"; a different buffer from src */
  dst: GPUBuffer;
  /** values converted */
  n: number;
}

/** The WGSL source of one direction. */
export function f16ConvertShader(spec: F16ConvertSpec): string {
  return HEAD + (spec.to === "f16" ? TO_F16 : TO_F32);
}

/** The conversion; a bound conversion owns its params buffer (`destroy()` frees it). */
export interface F16ConvertKernel extends Kernel<F16ConvertArgs> {
  bind(args: F16ConvertArgs): BoundPlan;
}

/**
 * Builds the conversion in one direction.
 * @param gpu the device
 * @param spec the direction
 * @returns a kernel recording one dispatch of ⌈n/2⌉ invocations
 * @example
 * ```ts ignore
 * const pack = createF16Convert(gpu, { to: "f16" }).bind({ src: x, dst: xHalves, n: rows * dim });
 * runPass(gpu, (pass) => pack.encode(pass));
 * ```
 */
export function createF16Convert(gpu: Gpu, spec: F16ConvertSpec): F16ConvertKernel {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "f16_convert",
    code: f16ConvertShader(spec),
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "storage"],
    spec,
  });
  return {
    bind({ src, dst, n }: F16ConvertArgs): BoundPlan {
      const pairs = Math.ceil(n / 2);
      const [srcBytes, dstBytes] = spec.to === "f16" ? [n * 4, pairs * 4] : [pairs * 4, n * 4];
      if (!Number.isInteger(n) || n < 1 || src.size < srcBytes || dst.size < dstBytes) {
        throw new Error(
          `Cannot convert ${n} values to ${spec.to}: need ${srcBytes} source and ${dstBytes} destination ` +
            `bytes, got ${src.size} and ${dst.size}`,
        );
      }
      const params = uniformParams(gpu, [["u32", n]], "f16_convert params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, src, dst]);
      const dispatch = singleDispatch(pipeline, bindGroup, dispatch2d(gpu, ceilDiv(pairs, wg)));
      return { encode: (pass) => dispatch.encode(pass), destroy: () => params.destroy() };
    },
  };
}
