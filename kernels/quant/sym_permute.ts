/**
 * Symmetric gather with the Hessian fix-ups of docs/quantization.md §1.2 fused in, one pass over an (n, n) matrix:
 *   dst[i][j] = src[p(i)][p(j)] (+ the diagonal fix when i = j),  p(i) = perm[r(i)],  r(i) = n−1−i if reversed
 * - `perm` gives act-order, H[perm][:, perm] (step 6); without it p is the identity.
 * - `reverse` applies the exchange matrix J on both sides, J·P·H·Pᵀ·J, for the reversal identity
 *   U = J·inv(chol_lower(J H J))·J (step 8).
 * - `fixDead` replaces a zero diagonal entry by 1 (step 3) and `damp` is then added to every diagonal
 *   entry (step 7), so the caller's H is never modified and a damping retry just runs this pass again.
 * - `upperOnly` writes zeros below the diagonal (U = J·X·J from an X whose upper triangle is scratch).
 * Scattered reads are fine here: one pass over the matrix is small next to the O(n³) factorisation.
 */
import {
  type BoundPlan,
  ceilDiv,
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

function wgsl(src: MatrixAccess, dst: MatrixAccess): string {
  return src.wgsl + dst.wgsl + /* wgsl */ `
override WX: u32 = 64u;
override WY: u32 = 4u;

struct Params {
  n: u32,
  flags: u32,  // 1: perm, 2: reverse, 4: fixDead, 8: upperOnly
  damp: f32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;        // (n, n) f32
@group(0) @binding(2) var<storage, read> perm: array<u32>;       // (n) source index per position
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;  // (n, n) f32, not src

fn source(i: u32) -> u32 {
  var r = i;
  if ((params.flags & 2u) != 0u) { r = params.n - 1u - i; }
  if ((params.flags & 1u) != 0u) { r = perm[r]; }
  return r;
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let n = params.n;
  let j = gid.x;
  let i = gid.y;
  if (i >= n || j >= n) { return; }
  var v = 0.0;
  if ((params.flags & 8u) == 0u || j >= i) {
    v = ${src.ld("source(i) * n + source(j)")};
    if (i == j) {
      if ((params.flags & 4u) != 0u && v == 0.0) { v = 1.0; }
      v += params.damp;
    }
  }
  ${dst.st("i * n + j", "v")};
}
`;
}

export interface SymPermuteArgs {
  /** src: (n, n) f32 row-major; two parts past one binding */
  src: MatrixBuffer;
  /** dst: (n, n) f32 row-major, split like src or not; must not share a buffer with src */
  dst: MatrixBuffer;
  n: number;
  /** perm: (n) u32 or i32, perm[k] = source row/column of position k (before reversal); omit for identity */
  perm?: GPUBuffer | undefined;
  /** apply J on both sides (default false) */
  reverse?: boolean;
  /** zero diagonal entries become 1 before damping (default false) */
  fixDead?: boolean;
  /** added to every diagonal entry (default 0) */
  damp?: number;
  /** zero the strict lower triangle (default false) */
  upperOnly?: boolean;
}

/** The symmetric permutation; its bound plan owns a params buffer (`destroy()` frees it). */
export interface SymPermuteKernel extends Kernel<SymPermuteArgs> {
  bind(args: SymPermuteArgs): BoundPlan;
}

/**
 * The WGSL source (workgroup shape is `override`).
 * @param spec which of src and dst are two parts (matrix_parts.ts); default neither
 */
export function symPermuteShader({ srcSplit = false, dstSplit = false } = {}): string {
  return wgsl(
    matrixAccess("src", srcSplit ? { binding: 4, access: "read" } : null),
    matrixAccess("dst", dstSplit ? { binding: srcSplit ? 5 : 4, access: "read_write" } : null),
  );
}

/**
 * Builds the symmetric permutation kernel.
 * @param gpu the device
 * @returns a kernel recording one dispatch of ⌈n/64⌉ × ⌈n/4⌉ workgroups
 */
export function createSymPermute(gpu: Gpu): SymPermuteKernel {
  const pipelineFor = (srcSplit: boolean, dstSplit: boolean, constants: Record<string, number>) =>
    getPipeline(gpu, {
      name: "sym_permute",
      code: symPermuteShader({ srcSplit, dstSplit }),
      constants: { WX: 64, WY: 4, ...constants },
      ...(srcSplit || dstSplit ? { spec: { srcSplit, dstSplit } } : {}),
      bindings: [
        "uniform",
        "read-only-storage",
        "read-only-storage",
        "storage",
        ...(srcSplit ? ["read-only-storage" as const] : []),
        ...(dstSplit ? ["storage" as const] : []),
      ],
    });
  pipelineFor(false, false, {});
  return {
    bind(args: SymPermuteArgs): BoundPlan {
      const { src, dst, n, perm, reverse = false, fixDead = false, damp = 0, upperOnly = false } = args;
      const [srcSplit, dstSplit] = [isSplit(src), isSplit(dst)];
      const pipeline = pipelineFor(srcSplit, dstSplit, {
        ...(srcSplit ? { src_SPLIT: splitElement(src) } : {}),
        ...(dstSplit ? { dst_SPLIT: splitElement(dst) } : {}),
      });
      const [src0, ...src1] = matrixBindings(src);
      const [dst0, ...dst1] = matrixBindings(dst);
      const flags = (perm ? 1 : 0) | (reverse ? 2 : 0) | (fixDead ? 4 : 0) | (upperOnly ? 8 : 0);
      const params = uniformParams(gpu, [["u32", n], ["u32", flags], ["f32", damp]], "sym_permute params");
      // Without a permutation the binding still needs a buffer; src is never indexed through it then.
      const bindGroup = gpu.device.createBindGroup({
        label: "sym_permute",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, src0, perm ?? src0, dst0, ...src1, ...dst1].map((buffer, binding) => ({
          binding,
          resource: { buffer },
        })),
      });
      const gx = ceilDiv(n, 64);
      const gy = ceilDiv(n, 4);
      if (gx > gpu.maxWorkgroupsPerDimension || gy > gpu.maxWorkgroupsPerDimension) {
        throw new Error(`Cannot permute a ${n}×${n} matrix: ${gy} workgroup rows exceed the dispatch limit`);
      }
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
