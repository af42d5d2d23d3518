/**
 * WGSL of the dense tiled GEMM (kernels/matmul/matmul.ts): the shared register-tiled core
 * (gemm_core_wgsl.ts) over dense staging, with 16-byte or scalar loads, plain or pipelined. The uniform
 * block, y and `store` come from matmul.ts's PARAMS.
 */
import { GEMM_PIPE_LOAD_X, type GemmBuild, gemmCoreWgsl } from "./gemm_core_wgsl.ts";
import { unroll } from "../core/mod.ts";

/** The tiled GEMM: the shared core (gemm_core_wgsl.ts) over dense staging with 16-byte or scalar loads. */
export function gemmWgsl(vec: boolean, build: GemmBuild): string {
  if (build.pipe) return gemmCoreWgsl(GEMM_VEC_BINDINGS + GEMM_PIPE_STAGE, build);
  return gemmCoreWgsl(vec ? GEMM_VEC_BINDINGS + GEMM_VEC_STAGE : GEMM_SCALAR_BINDINGS + STAGE_SCALAR, build);
}

/**
 * The eight f16 weights of a 16-byte load `u` (row n, columns k .. k + 7) into the tile from vec4 `base`,
 * written out, like every small loop of the staging: the real dense GEMM with such loops ran at 23 TFLOP/s
 * where the same core over written-out staging ran at 32 (docs/webgpu.md §6).
 */
function putPairs(): string {
  return unroll(4, (q) =>
    `let pair${q} = pairOf(u[${q}]);
    ws[base + (k + ${2 * q}u) * WS + n / 4u][n % 4u] = pair${q}.x;
    ws[base + (k + ${2 * q + 1}u) * WS + n / 4u][n % 4u] = pair${q}.y;`, "\n    ");
}

/**
 * The 16-byte loads (rows are 16-byte aligned: four lanes read one row's 16 K values of x; W's loads hold 8
 * f16 or 4 f32 weights) and their writes into the tiles, one task each. The pipelined build
 * (gemm_core_wgsl.ts GemmPipe) issues them a step ahead; the plain one in `stage` (GEMM_VEC_STAGE).
 */
const GEMM_VEC_LOADS = /* wgsl */ `
${GEMM_PIPE_LOAD_X}
fn loadW(e: u32, n0: u32, k0: u32) -> vec4u {
  let per = select(4u, 8u, F16);  // weights per 16-byte load
  let n = e / (TK / per);
  let k = (e % (TK / per)) * per;
  if (n0 + n < params.outDim && k0 + k < params.inDim) { return w4[((n0 + n) * params.inDim + k0 + k) / per]; }
  return vec4u();
}

fn putW(base: u32, e: u32, u: vec4u) {
  let per = select(4u, 8u, F16);
  let n = e / (TK / per);
  let k = (e % (TK / per)) * per;
  if (F16) {
    ${putPairs()}
  } else {
    ${unroll(4, (q) => `ws[base + (k + ${q}u) * WS + n / 4u][n % 4u] = T(bitcast<f32>(u[${q}]));`, "\n    ")}
  }
}
`;

const GEMM_PIPE_STAGE = /* wgsl */ `
fn pipeStart(lid: u32, n0: u32) {}
${GEMM_VEC_LOADS}`;

const STAGE_SCALAR = /* wgsl */ `
fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  let K = params.inDim;
  // e → (row % 4, k, row / 4): four neighbours read four rows at one k; stores hit distinct banks.
  for (var e = lid; e < TM * TK; e += WG) {
    let k = (e / 4u) % TK;
    let m = (e / (4u * TK)) * 4u + e % 4u;
    var v = 0.0;
    if (m0 + m < params.rows && k0 + k < K) { v = x[(params.xRowOffset + m0 + m) * K + k0 + k]; }
    xs[k * XS + m / 4u][m % 4u] = T(v);
  }
  let per = select(1u, 2u, F16);
  for (var e = lid; e < TN * TK / per; e += WG) {
    let k = ((e / 4u) % (TK / per)) * per;
    let n = (e / (4u * TK / per)) * 4u + e % 4u;
    var v = vec2f();
    if (n0 + n < params.outDim && k0 + k < K) {
      let i = (n0 + n) * K + k0 + k;
      if (F16) { v = unpack2x16float(w[i / 2u]); } else { v.x = bitcast<f32>(w[i]); }
    }
    ws[k * WS + n / 4u][n % 4u] = T(v.x);
    if (F16) { ws[(k + 1u) * WS + n / 4u][n % 4u] = T(v.y); }
  }
}
`;

const GEMM_SCALAR_BINDINGS = /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<f32>;  // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> w: array<u32>;  // (outDim, inDim) f32 bits or f16 pairs`;

const GEMM_VEC_BINDINGS = /* wgsl */ `
@group(0) @binding(1) var<storage, read> x4: array<vec4f>;  // (xRowOffset + rows, inDim) f32, inDim % 4 = 0
@group(0) @binding(2) var<storage, read> w4: array<vec4u>;  // f32 bits (inDim % 4 = 0) or f16 pairs (% 8)`;

/**
 * Staging with 16-byte global loads along K. The scalar build issues 4× (8× for f16) as many global loads,
 * which held the GEMM near 12–14 TFLOP/s on the H100 while the Hessian kernel (vec4 loads, same tiles) ran
 * at 28.
 */
const GEMM_VEC_STAGE = /* wgsl */ `
${GEMM_VEC_LOADS}
fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  for (var e = lid; e < TM * TK / 4u; e += WG) { putX(0u, e, loadX(e, m0, k0)); }
  let per = select(4u, 8u, F16);
  for (var e = lid; e < TN * TK / per; e += WG) { putW(0u, e, loadW(e, n0, k0)); }
}
`;
