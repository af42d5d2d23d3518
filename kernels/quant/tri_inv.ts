/**
 * Blocked inverse of a lower-triangular matrix, X = L⁻¹, in f32 (the "inv" of the reversal identity
 * U = J·inv(chol_lower(J H J))·J, docs/quantization.md §1.2).
 *
 * Recursive doubling over the block diagonal, bottom-up, so each level is a few large GEMMs rather
 * than one small step per block column:
 *   1. one workgroup per NB×NB diagonal block inverts it in workgroup memory (row-by-row forward
 *      substitution, x_ij = −(Σ_{k=j}^{i−1} l_ik x_kj) / l_ii);
 *   2. for s = NB, 2·NB, 4·NB, … < n, every aligned pair of s-blocks [P 0; B C] whose inverses are known
 *      gets its off-diagonal block: inv = [P⁻¹ 0; −C⁻¹·B·P⁻¹  C⁻¹]. That is T = B·P⁻¹, then
 *      X21 = −C⁻¹·T, two batched block GEMMs (block_gemm.ts) per level, skipping the zero triangles.
 * T lives in X's strict upper triangle (unused by a lower result), transposed, so the last, partial
 * pair never writes past column n. About n³/6 FMAs, the same as the column-by-column algorithm.
 *
 * On output X's lower triangle (diagonal included) holds L⁻¹ and its strict upper triangle is scratch:
 * read X only through a lower mask. Only L's lower triangle is read.
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
import { type BlockGemmArgs, type BlockGemmTile, createBlockGemm } from "./block_gemm.ts";

/**
 * An NB×NB block in workgroup memory and its in-place lower-triangular inverse; shared with the
 * Cholesky panel (cholesky.ts), which inverts the block it has just factored.
 */
export const LOWER_BLOCK_WGSL = /* wgsl */ `
override NB: u32 = 64u;   // block edge
override WG: u32 = 256u;  // invocations; WG ≥ NB

// [i][j] at i·(NB + 1) + j: the pad column keeps column walks free of bank conflicts.
var<workgroup> blk: array<f32, NB * (NB + 1u)>;

fn at(i: u32, j: u32) -> u32 { return i * (NB + 1u) + j; }

// Rows above i already hold X = L⁻¹, row i still holds L: each invocation j < i sums its x_ij.
fn invertLowerBlock(lid: u32, nb: u32) {
  for (var i = 0u; i < nb; i++) {
    let lii = blk[at(i, i)];
    var s = 0.0;
    if (lid < i) {
      for (var k = lid; k < i; k++) { s = fma(blk[at(i, k)], blk[at(k, lid)], s); }
    }
    workgroupBarrier();
    if (lid < i) { blk[at(i, lid)] = -s / lii; }
    if (lid == i) { blk[at(i, i)] = 1.0 / lii; }
    workgroupBarrier();
  }
}
`;

function diagWgsl(L: MatrixAccess, X: MatrixAccess): string {
  return L.wgsl + X.wgsl + LOWER_BLOCK_WGSL + /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> L: array<f32>;         // (n, n) lower-triangular
@group(0) @binding(2) var<storage, read_write> X: array<f32>;   // (n, n); diagonal NB-blocks written

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r0 = (wid.x + wid.y * nwg.x) * NB;
  if (r0 >= params.n) { return; }
  let n = params.n;
  let nb = min(NB, n - r0);
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    var v = select(0.0, 1.0, i == j);  // identity past the matrix edge
    if (i < nb && j <= i) { v = ${L.ld("(r0 + i) * n + r0 + j")}; }
    blk[at(i, j)] = v;
  }
  workgroupBarrier();
  invertLowerBlock(lid, nb);
  for (var e = lid; e < NB * NB; e += WG) {
    let i = e / NB;
    let j = e % NB;
    if (i < nb && j < nb) { ${X.st("(r0 + i) * n + r0 + j", "select(0.0, blk[at(i, j)], j <= i)")}; }
  }
}
`;
}

export interface TriInvArgs {
  /** L: (n, n) f32 row-major, lower-triangular with a non-zero diagonal; the upper triangle is ignored */
  L: MatrixBuffer;
  /**
   * X: (n, n) f32; receives L⁻¹ in its lower triangle, scratch above. Must not be L. Either may be two parts
   * (matrix_parts.ts); the diagonal pass and the level GEMMs then use their split builds.
   */
  X: MatrixBuffer;
  n: number;
}

/** The triangular inverse; its bound plan owns a params buffer (`destroy()` frees it). */
export interface TriInvKernel extends Kernel<TriInvArgs> {
  bind(args: TriInvArgs): BoundPlan;
}

/** The WGSL of the diagonal-block pass (the level GEMMs are block_gemm.ts); `split`: L and X in two parts. */
export function triInvShader({ split = false }: { split?: boolean } = {}): string {
  return diagWgsl(
    matrixAccess("L", split ? { binding: 3, access: "read" } : null),
    matrixAccess("X", split ? { binding: 4, access: "read_write" } : null),
  );
}

/** The block GEMMs of one doubling level: T = B·P⁻¹ for every pair, then X21 = −C⁻¹·T. */
function levelGemms(L: MatrixBuffer, X: MatrixBuffer, n: number, s: number): BlockGemmArgs[] {
  const full = Math.floor(n / (2 * s));
  const tail = n - full * 2 * s - s; // rows of the last, partial C block (≤ 0: no partial pair)
  const pairs = [{ r0: 0, M: s, batch: full }, { r0: full * 2 * s, M: tail, batch: tail > 0 ? 1 : 0 }];
  const step = 2 * s * (n + 1); // one pair down the diagonal
  const t = pairs.map(({ r0, M, batch }): BlockGemmArgs => ({
    M,
    N: s,
    K: s,
    batch,
    a: { buffer: L, offset: (r0 + s) * n + r0, s0: n, s1: 1, batchStride: step },
    b: { buffer: X, offset: r0 * n + r0, s0: n, s1: 1, batchStride: step },
    bLower: true,
    // T(m, j) at X[r0 + j][r0 + s + m]: inside the strict upper triangle, never past column n.
    c: { buffer: X, offset: r0 * n + r0 + s, s0: 1, s1: n, batchStride: step },
  }));
  const x21 = pairs.map(({ r0, M, batch }): BlockGemmArgs => ({
    M,
    N: s,
    K: M,
    batch,
    alpha: -1,
    a: { buffer: X, offset: (r0 + s) * (n + 1), s0: n, s1: 1, batchStride: step },
    aLower: true,
    b: { buffer: X, offset: r0 * n + r0 + s, s0: 1, s1: n, batchStride: step },
    c: { buffer: X, offset: (r0 + s) * n + r0, s0: n, s1: 1, batchStride: step },
  }));
  return [...t, ...x21].filter((g) => g.M > 0 && (g.batch ?? 1) > 0);
}

/** Block edge that fits the adapter's workgroup memory (64, or 32 on a 16 KiB device). */
export function lowerBlockEdge(gpu: Gpu): 32 | 64 {
  return gpu.maxWorkgroupStorageBytes >= 64 * 65 * 4 ? 64 : 32;
}

/** Variant of {@link createTriInv}: the leaf block edge (default {@link lowerBlockEdge}). */
export interface TriInvSpec {
  /** 32 or 64; 32 gives small test matrices more doubling levels. */
  nb?: 32 | 64;
  /** force the level GEMMs' tile edge (default 64) */
  gemmTile?: BlockGemmTile;
}

/**
 * Builds the triangular inverse.
 * @param gpu the device
 * @param spec the leaf block edge
 * @returns a kernel whose bound plan records ⌈log2(n/NB)⌉·4 + 1 dispatches at most
 */
export function createTriInv(
  gpu: Gpu,
  { nb: nbEdge = lowerBlockEdge(gpu), gemmTile }: TriInvSpec = {},
): TriInvKernel {
  const diagFor = (L?: MatrixBuffer, X?: MatrixBuffer) =>
    L && X && (isSplit(L) || isSplit(X))
      ? getPipeline(gpu, {
        name: "tri_inv_diag",
        code: triInvShader({ split: true }),
        constants: { NB: nbEdge, WG: 256, L_SPLIT: splitElement(L), X_SPLIT: splitElement(X) },
        spec: { nb: nbEdge, split: true },
        bindings: ["uniform", "read-only-storage", "storage", "read-only-storage", "storage"],
      })
      : getPipeline(gpu, {
        name: "tri_inv_diag",
        code: triInvShader(),
        constants: { NB: nbEdge, WG: 256 },
        spec: { nb: nbEdge },
        bindings: ["uniform", "read-only-storage", "storage"],
      });
  diagFor();
  const gemm = createBlockGemm(gpu);
  return {
    bind({ L, X, n }: TriInvArgs): BoundPlan {
      const diag = diagFor(L, X);
      const split = isSplit(L) || isSplit(X);
      const [Ls, Xs] = [matrixBindings(L), matrixBindings(X)];
      const params = uniformParams(gpu, [["u32", n]], "tri_inv params");
      const diagGroup = gpu.device.createBindGroup({
        label: "tri_inv_diag",
        layout: diag.getBindGroupLayout(0),
        entries: [params, Ls[0], Xs[0], ...(split ? [Ls[Ls.length - 1], Xs[Xs.length - 1]] : [])].map(
          (buffer, binding) => ({ binding, resource: { buffer } }),
        ),
      });
      const [gx, gy] = dispatch2d(gpu, ceilDiv(n, nbEdge));
      const list: BlockGemmArgs[] = [];
      for (let s = nbEdge; s < n; s *= 2) list.push(...levelGemms(L, X, n, s));
      const levels = gemm.bindAll(gemmTile ? list.map((g) => ({ ...g, tile: gemmTile })) : list);
      return {
        encode(pass) {
          pass.setPipeline(diag);
          pass.setBindGroup(0, diagGroup);
          pass.dispatchWorkgroups(gx, gy);
          for (const step of levels.steps) step.encode(pass);
        },
        destroy() {
          params.destroy();
          levels.destroy();
        },
      };
    },
  };
}
