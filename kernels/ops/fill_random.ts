/**
 * Fills a buffer with seeded uniform values in [−scale, scale), on the GPU: speed runs build
 * random-weight models at real shapes (e.g. Llama-3-8B) without moving gigabytes from the host.
 * value(i) = scale · (2 · u(hash(seed, i)) − 1), u = 24-bit uniform. f16 output packs two values per
 * u32 (element 2j low half), decodable with unpack2x16float.
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

const WG = 256;

function shader(f16: boolean): string {
  return /* wgsl */ `
struct Params { words: u32, seed: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>; // (words) f32 bits or f16 pairs

fn hash(x: u32) -> u32 {
  var h = x * 747796405u + 2891336453u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (h >> 22u) ^ h;
}

fn value(i: u32) -> f32 {
  let u = f32(hash(hash(params.seed) ^ i) >> 8u) * (1.0 / 16777216.0);
  return params.scale * (2.0 * u - 1.0);
}

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= params.words) { return; }
  ${
    f16
      ? "out[i] = pack2x16float(vec2f(value(2u * i), value(2u * i + 1u)));"
      : "out[i] = bitcast<u32>(value(i));"
  }
}
`;
}

export interface FillRandomArgs {
  /** out: (count) f32, or (count/2) u32 of f16 pairs */
  out: GPUBuffer;
  /** number of values (even for f16) */
  count: number;
  seed: number;
  scale: number;
}

/** The WGSL source for f32 or f16 output. */
export function fillRandomShader(spec: { f16: boolean }): string {
  return shader(spec.f16);
}

/** Builds the fill kernel. */
export function createFillRandom(gpu: Gpu, spec: { f16: boolean }): Kernel<FillRandomArgs> {
  const pipeline = getPipeline(gpu, {
    name: "fill_random",
    code: shader(spec.f16),
    spec,
    bindings: ["uniform", "storage"],
  });
  return {
    bind({ out, count, seed, scale }: FillRandomArgs): Encodable {
      const words = spec.f16 ? Math.ceil(count / 2) : count;
      const params = uniformParams(gpu, [["u32", words], ["u32", seed >>> 0], ["f32", scale]], "fill params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, out]);
      const [gx, gy] = dispatch2d(gpu, Math.ceil(words / WG));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
