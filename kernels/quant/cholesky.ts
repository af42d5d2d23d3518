/**
 * Blocked right-looking Cholesky, A = L·Lᵀ, in place and in f32 (docs/quantization.md §1.2 step 8 and §6 item 7).
 *
 * For each NB-column block k0 (NB = 64, or 32 where workgroup memory is 16 KiB):
 *   1. panel:  one workgroup factors the diagonal block A11 = L11·L11ᵀ in workgroup memory (unblocked,
 *              right-looking, fma updates), checks every pivot, and also writes L11⁻¹ to a small scratch;
 *   2. solve:  L21 = A21·L11⁻ᵀ, a block GEMM against that inverse (block_gemm.ts, in place: each workgroup
 *              owns whole rows of the NB-wide panel);
 *   3. update: A22 ← A22 − L21·L21ᵀ, a block GEMM over the lower tiles only (SYRK).
 * Three dispatches per block, all recorded into the caller's pass; no readback. A non-positive, zero,
 * subnormal, infinite or NaN pivot sets `flag[0] = 1`; the factor is then garbage and the caller retries
 * with more damping (quant/cholesky.ts). The pivot test looks at the bits because WGSL lets compilers
 * assume floats are never NaN or infinite.
 *
 * Reads only A's lower triangle; afterwards the lower triangle (diagonal included) holds L and the strict
 * upper triangle is unspecified (diagonal blocks are zeroed, other blocks keep input or partial updates).
 */
import {
  type BoundPlan,
  createStorage,
  getPipeline,
  type Gpu,
  isSplit,
  type Kernel,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  packParamSlots,
  splitElement,
} from "../core/mod.ts";
import { type BlockGemmArgs, type BlockGemmTile, createBlockGemm } from "./block_gemm.ts";
import { LOWER_BLOCK_WGSL, lowerBlockEdge } from "./tri_inv.ts";

function panelWgsl(A: MatrixAccess): string {
  return A.wgsl + LOWER_BLOCK_WGSL + /* wgsl */ `
struct Params { n: u32, k0: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;     // (n, n); block (k0.., k0..) in place
@group(0) @binding(2) var<storage, read_write> Dinv: array<f32>;  // (NB, NB) L11⁻¹, zeros above
@group(0) @binding(3) var<storage, read_write> flag: array<u32>;  // (1) 1 once a pivot failed

fn badPivot(p: f32) -> bool {
  let bits = bitcast<u32>(p);
  let e = bits & 0x7f800000u;
  return (bits >> 31u) != 0u || e == 0u || e == 0x7f800000u;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = params.n;
  let k0 = params.k0;
  let nb = min(NB, n - k0);
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    var v = select(0.0, 1.0, i == j);  // identity past the matrix edge
    if (i < nb && j <= i) { v = ${A.ld("(k0 + i) * n + k0 + j")}; }
    blk[at(i, j)] = v;
  }
  workgroupBarrier();
  // Column j's update uses the unscaled column: a_ik −= a_ij·a_kj / a_jj. The column itself is scaled
  // after the loop, so no step writes what it reads; the pivot a_jj is final once step j begins.
  for (var j = 0u; j < nb; j++) {
    let inv = 1.0 / blk[at(j, j)];
    for (var e = lid; e < (nb - 1u - j) * NB; e += WG) {
      let i = j + 1u + e / NB;
      let k = e % NB;
      if (k > j && k <= i) {
        blk[at(i, k)] = fma(-blk[at(i, j)], blk[at(k, j)] * inv, blk[at(i, k)]);
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var bad = false;
    for (var j = 0u; j < nb; j++) { bad = bad || badPivot(blk[at(j, j)]); }
    if (bad) { flag[0] = 1u; }
  }
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    if (j < i) { blk[at(i, j)] = blk[at(i, j)] / sqrt(blk[at(j, j)]); }
  }
  workgroupBarrier();
  if (lid < NB) { blk[at(lid, lid)] = sqrt(blk[at(lid, lid)]); }
  workgroupBarrier();
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    if (i < nb && j < nb) { ${A.st("(k0 + i) * n + k0 + j", "select(0.0, blk[at(i, j)], j <= i)")}; }
  }
  workgroupBarrier();
  invertLowerBlock(lid, nb);
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    Dinv[e] = select(0.0, blk[at(i, j)], j <= i);
  }
}
`;
}

export interface CholeskyArgs {
  /**
   * A: (n, n) f32 row-major, symmetric (lower triangle read); overwritten by L (see module comment). Two
   * parts past one binding (matrix_parts.ts): the panel and the GEMMs then use their split builds.
   */
  A: MatrixBuffer;
  n: number;
  /** flag: (≥ 1) u32; element 0 becomes 1 on a failed pivot and is never cleared here */
  flag: GPUBuffer;
}

/** Variant of {@link createCholesky}: the block edge (default `lowerBlockEdge(gpu)`, 64 on the H100). */
export interface CholeskySpec {
  /** 32 or 64; 32 gives small test matrices more blocks. */
  nb?: 32 | 64;
  /** force the solve and update GEMMs' tile edge (default 64) */
  gemmTile?: BlockGemmTile;
}

/** The Cholesky; its bound plan owns a scratch block and a params buffer (`destroy()` frees them). */
export interface CholeskyKernel extends Kernel<CholeskyArgs> {
  bind(args: CholeskyArgs): BoundPlan;
}

/** The WGSL of the panel step (the solve and update steps are block_gemm.ts); `split`: A in two parts. */
export function choleskyPanelShader({ split = false }: { split?: boolean } = {}): string {
  return panelWgsl(matrixAccess("A", split ? { binding: 4, access: "read_write" } : null));
}

/** The solve and update GEMMs after the panel at k0 (none for the last block). */
function panelGemms(A: MatrixBuffer, Dinv: GPUBuffer, n: number, k0: number, nb: number): BlockGemmArgs[] {
  const rem = n - k0 - nb;
  if (rem <= 0) return [];
  const panel = (k0 + nb) * n + k0; // A21 = A[k0+nb.., k0..k0+nb)
  return [
    {
      M: rem,
      N: nb,
      K: nb,
      a: { buffer: A, offset: panel, s0: n, s1: 1 },
      b: { buffer: Dinv, offset: 0, s0: 1, s1: nb }, // B(k, j) = L11⁻¹[j][k]
      c: { buffer: A, offset: panel, s0: n, s1: 1 },
    },
    {
      M: rem,
      N: rem,
      K: nb,
      alpha: -1,
      beta: 1,
      lowerTiles: true,
      a: { buffer: A, offset: panel, s0: n, s1: 1 },
      b: { buffer: A, offset: panel, s0: 1, s1: n },
      c: { buffer: A, offset: (k0 + nb) * (n + 1), s0: n, s1: 1 },
    },
  ];
}

/**
 * Builds the blocked Cholesky.
 * @param gpu the device
 * @param spec the block edge
 * @returns a kernel whose bound plan records 3 dispatches per block of columns
 */
export function createCholesky(
  gpu: Gpu,
  { nb = lowerBlockEdge(gpu), gemmTile }: CholeskySpec = {},
): CholeskyKernel {
  const panelFor = (A?: MatrixBuffer) =>
    A && isSplit(A)
      ? getPipeline(gpu, {
        name: "cholesky_panel",
        code: choleskyPanelShader({ split: true }),
        constants: { NB: nb, WG: 256, A_SPLIT: splitElement(A) },
        spec: { nb, split: true },
        bindings: ["uniform", "storage", "storage", "storage", "storage"],
      })
      : getPipeline(gpu, {
        name: "cholesky_panel",
        code: choleskyPanelShader(),
        constants: { NB: nb, WG: 256 },
        spec: { nb },
        bindings: ["uniform", "storage", "storage", "storage"],
      });
  panelFor();
  const gemm = createBlockGemm(gpu);
  return {
    bind({ A, n, flag }: CholeskyArgs): BoundPlan {
      const panel = panelFor(A);
      const [A0, ...A1] = matrixBindings(A);
      const Dinv = createStorage(gpu, nb * nb * 4, "cholesky L11⁻¹");
      const starts = Array.from({ length: Math.ceil(n / nb) }, (_, i) => i * nb);
      const params = packParamSlots(gpu, starts.map((k0) => [["u32", n], ["u32", k0]]), "cholesky params");
      const groups = params.slots.map((slot) =>
        gpu.device.createBindGroup({
          label: "cholesky_panel",
          layout: panel.getBindGroupLayout(0),
          entries: [slot, ...[A0, Dinv, flag, ...A1].map((buffer) => ({ buffer }))].map(
            (resource, binding) => ({ binding, resource }),
          ),
        })
      );
      const gemms = starts.map((k0) => panelGemms(A, Dinv, n, k0, nb));
      const flat = gemms.flat();
      const bound = gemm.bindAll(gemmTile ? flat.map((g) => ({ ...g, tile: gemmTile })) : flat);
      return {
        encode(pass) {
          let g = 0;
          starts.forEach((_, i) => {
            pass.setPipeline(panel);
            pass.setBindGroup(0, groups[i]);
            pass.dispatchWorkgroups(1);
            for (let j = 0; j < gemms[i].length; j++) bound.steps[g++].encode(pass);
          });
        },
        destroy() {
          Dinv.destroy();
          params.buffer.destroy();
          bound.destroy();
        },
      };
    },
  };
}
