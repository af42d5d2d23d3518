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
  isSplit,
  type Kernel,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  splitElement,
  uniformParams,
} from "../core/mod.ts";

function wgsl(A: MatrixAccess): string {
  return A.wgsl + /* wgsl */ `
override WG: u32 = 256u;

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;        // (n, n) f32
@group(0) @binding(2) var<storage, read_write> d: array<f32>;  // (n) f32

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i < params.n) { d[i] = ${A.ld("i * (params.n + 1u)")}; }
}
`;
}

export interface DiagGatherArgs {
  /** A: (n, n) f32 row-major; two parts past one binding */
  A: MatrixBuffer;
  /** d: (n) f32 */
  d: GPUBuffer;
  n: number;
}

/** The diagonal gather; its bound plan owns a params buffer (`destroy()` frees it). */
export interface DiagGatherKernel extends Kernel<DiagGatherArgs> {
  bind(args: DiagGatherArgs): BoundPlan;
}

/** The WGSL source; `split` reads A from two parts (matrix_parts.ts). */
export function diagGatherShader({ split = false }: { split?: boolean } = {}): string {
  return wgsl(matrixAccess("A", split ? { binding: 3, access: "read" } : null));
}

/**
 * Builds the diagonal gather.
 * @param gpu the device
 * @returns a kernel recording one dispatch
 */
export function createDiagGather(gpu: Gpu): DiagGatherKernel {
  const pipelineFor = (A?: MatrixBuffer) =>
    A && isSplit(A)
      ? getPipeline(gpu, {
        name: "diag_gather",
        code: diagGatherShader({ split: true }),
        constants: { WG: 256, A_SPLIT: splitElement(A) },
        spec: { split: true },
        bindings: ["uniform", "read-only-storage", "storage", "read-only-storage"],
      })
      : getPipeline(gpu, {
        name: "diag_gather",
        code: diagGatherShader(),
        constants: { WG: 256 },
        bindings: ["uniform", "read-only-storage", "storage"],
      });
  pipelineFor();
  return {
    bind({ A, d, n }: DiagGatherArgs): BoundPlan {
      const pipeline = pipelineFor(A);
      const [A0, ...A1] = matrixBindings(A);
      const params = uniformParams(gpu, [["u32", n]], "diag_gather params");
      const bindGroup = gpu.device.createBindGroup({
        label: "diag_gather",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, A0, d, ...A1].map((buffer, binding) => ({ binding, resource: { buffer } })),
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
