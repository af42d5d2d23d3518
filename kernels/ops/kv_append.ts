/**
 * KV-cache append: kCache[state.pos + t, :] = k[t, :] and vCache[state.pos + t, :] = v[t, :] for the
 * `rows` tokens of this forward. The position comes from the GPU step state so a decode plan can be
 * replayed many times per submit. Rows that would land at or past `seqLen` are dropped (the host
 * never asks for them; the guard only keeps a bad state from writing out of bounds).
 */
import {
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  STATE_STRUCT,
  uniformParams,
} from "../core/mod.ts";

const WGSL = /* wgsl */ `
${STATE_STRUCT}
override WG: u32 = 256u;

struct Params { rows: u32, kvDim: u32, seqLen: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: StepState;
@group(0) @binding(2) var<storage, read> k: array<f32>;             // (rows, kvDim)
@group(0) @binding(3) var<storage, read> v: array<f32>;             // (rows, kvDim)
@group(0) @binding(4) var<storage, read_write> kCache: array<f32>;  // (seqLen, kvDim)
@group(0) @binding(5) var<storage, read_write> vCache: array<f32>;  // (seqLen, kvDim)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.rows * params.kvDim) { return; }
  let t = i / params.kvDim;
  let p = state.pos + t;
  // p < state.pos catches u32 wrap-around of a corrupt state.
  if (p >= params.seqLen || p < state.pos) { return; }
  let dst = p * params.kvDim + i % params.kvDim;
  kCache[dst] = k[i];
  vCache[dst] = v[i];
}
`;

export interface KvAppendArgs {
  /** k: (rows, kvDim) f32, already rotated */
  k: GPUBuffer;
  /** v: (rows, kvDim) f32 */
  v: GPUBuffer;
  /** kCache: (seqLen, kvDim) f32 */
  kCache: GPUBuffer;
  /** vCache: (seqLen, kvDim) f32 */
  vCache: GPUBuffer;
  /** state: [STATE_WORDS] u32 (step_state.ts); rows go to positions state.pos + t */
  state: GPUBuffer;
  rows: number;
  kvDim: number;
  seqLen: number;
}

/** The WGSL source (no variants beyond the workgroup size override). */
export function kvAppendShader(): string {
  return WGSL;
}

/**
 * Builds the KV-cache append.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffers and sizes
 */
export function createKvAppend(gpu: Gpu): Kernel<KvAppendArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "kv_append",
    code: WGSL,
    constants: { WG: wg },
    bindings: [
      "uniform",
      "read-only-storage",
      "read-only-storage",
      "read-only-storage",
      "storage",
      "storage",
    ],
  });
  return {
    bind({ k, v, kCache, vCache, state, rows, kvDim, seqLen }: KvAppendArgs): Encodable {
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", kvDim], ["u32", seqLen]],
        "kv_append params",
      );
      const bindGroup = gpu.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, state, k, v, kCache, vCache].map((buffer, binding) => ({
          binding,
          resource: { buffer },
        })),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows * kvDim, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
