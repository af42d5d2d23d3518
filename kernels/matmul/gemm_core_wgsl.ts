/**
 * The register-tiled GEMM core of dense f32/f16 and affine weights: TM×TN output tiles
 * from (TM/8)·(TN/8) invocations, each owning an 8×8 register tile as two 4-row × two 4-column blocks half a
 * tile apart (conflict-free vec4 reads of workgroup memory). Per k an invocation reads 4 vec4 and issues 64
 * FMAs; the 16 accumulator lines are written out one by one (a loop over them spilled on the H100).
 *
 * A format supplies its bindings and a `stage(lid, m0, n0, k0)` function that fills, for K columns
 * k0 .. k0 + TK − 1 (zero past inDim or past the rows), the workgroup tiles
 *   xs[k * XS + m / 4][m % 4] = x[m0 + m, k0 + k]          (activations)
 *   ws[k * WS + n / 4][n % 4] = W[n0 + n, k0 + k] as f32   (weights, decoded once per tile)
 * The core provides TM, TN, TK, WG, XS, WS, xs, ws and `put`, and needs `params.rows`, `params.inDim`,
 * `params.outDim`, `params.tilesN` and a `store(row, col, value)` from the format.
 * The LUT GEMM keeps its own 4×4-tiled kernel (matmul_lut_wgsl.ts): on this core it measured slower on the
 * H100 (8B shape, 2048-token prefill, lut4: 613 against 668 tok/s; BENCHMARKS.md), while affine gained
 * (957 against 663 tok/s).
 */
import { unroll } from "../core/mod.ts";

/**
 * @param staging the format's bindings and its `stage` function (WGSL)
 * @returns the rest of the shader: overrides, workgroup tiles, `put` and entry point `main`
 */
export function gemmCoreWgsl(staging: string): string {
  const fmas = unroll(16, (i) => {
    const [a, c, h] = [Math.floor(i / 8), "xyzw"[Math.floor(i / 2) % 4], i % 2];
    return `acc[${i}] = fma(vec4f(a${a}.${c}), b${h}, acc[${i}]);`;
  });
  const puts = unroll(16, (i) => {
    const [a, r, h] = [Math.floor(i / 8), Math.floor(i / 2) % 4, i % 2];
    return `put(m0 + ${a}u * (TM / 2u) + 4u * ty + ${r}u, n0 + ${h}u * (TN / 2u) + 4u * tx, acc[${i}]);`;
  });
  return /* wgsl */ `
override TM: u32 = 128u;  // activation rows per tile, multiple of 8
override TN: u32 = 128u;  // output columns per tile, multiple of 8
override TK: u32 = 16u;   // K columns staged per step
override WG: u32 = (TM / 8u) * (TN / 8u);
override XS: u32 = TM / 4u + 1u;  // vec4 row strides of the staged tiles; the +1 spreads banks
override WS: u32 = TN / 4u + 1u;

var<workgroup> xs: array<vec4f, TK * XS>;  // [k][m / 4]
var<workgroup> ws: array<vec4f, TK * WS>;  // [k][n / 4], decoded to f32

${staging}

fn put(r: u32, n: u32, v: vec4f) {
  if (r >= params.rows) { return; }
  for (var j = 0u; j < 4u; j++) { if (n + j < params.outDim) { store(r, n + j, v[j]); } }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= (params.rows + TM - 1u) / TM * params.tilesN) { return; }
  let m0 = (tile / params.tilesN) * TM;
  let n0 = (tile % params.tilesN) * TN;
  let tx = lid % (TN / 8u);
  let ty = lid / (TN / 8u);
  var acc: array<vec4f, 16>;  // [row block a][row r][column block h]
  for (var k0 = 0u; k0 < params.inDim; k0 += TK) {
    stage(lid, m0, n0, k0);
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a0 = xs[k * XS + ty];
      let a1 = xs[k * XS + ty + TM / 8u];
      let b0 = ws[k * WS + tx];
      let b1 = ws[k * WS + tx + TN / 8u];
      ${fmas}
    }
    workgroupBarrier();
  }
  ${puts}
}
`;
}

/** Workgroup bytes of the two staged tiles for one tiling. */
export function gemmWorkgroupBytes({ tm, tn, tk }: { tm: number; tn: number; tk: number }): number {
  return tk * (tm / 4 + 1 + tn / 4 + 1) * 16;
}
