/**
 * The diagonal of a square matrix: d[i] = A[i][i]. factorHessian (quant/cholesky.ts) reads diag(H) back
 * once (n floats, not n²) to find dead columns, the act-order permutation and the damping on the host.
 */
import {
  type BoundPlan,
  ceilDiv,
  dispatch2d,
  getPipeline,
  type Gpu,
  type Kernel,
  uniformParams,
} from "../core/mod.ts";

const WGSL = /* wgsl */ `
override WG: u32 = 256u;

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;        // (n, n) f32
@group(0) @binding(2) var<storage, read_write> d: array<f32>;  // (n) f32

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i < params.n) { d[i] = A[i * (params.n + 1u)]; }
}
`;

export interface DiagGatherArgs {
  /** A: (n, n) f32 row-major */
  A: GPUBuffer;
  /** d: (n) f32 */
  d: GPUBuffer;
  n: number;
}

/** The diagonal gather; its bound plan owns a params buffer (`destroy()` frees it). */
export interface DiagGatherKernel extends Kernel<DiagGatherArgs> {
  bind(args: DiagGatherArgs): BoundPlan;
}

/** The WGSL source. */
export function diagGatherShader(): string {
  return WGSL;
}

/**
 * Builds the diagonal gather.
 * @param gpu the device
 * @returns a kernel recording one dispatch
 */
export function createDiagGather(gpu: Gpu): DiagGatherKernel {
  const pipeline = getPipeline(gpu, {
    name: "diag_gather",
    code: WGSL,
    constants: { WG: 256 },
    bindings: ["uniform", "read-only-storage", "storage"],
  });
  return {
    bind({ A, d, n }: DiagGatherArgs): BoundPlan {
      const params = uniformParams(gpu, [["u32", n]], "diag_gather params");
      const bindGroup = gpu.device.createBindGroup({
        label: "diag_gather",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, A, d].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(n, 256));
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
        },
        destroy: () => params.destroy(),
      };
    },
  };
}
