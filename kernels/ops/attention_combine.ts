/**
 * Merges the partial results of flash-decoding splits (see attention.ts). Split s of one (row, head)
 * holds its running max m_s, softmax sum l_s and unnormalised output acc_s over its span of
 * positions; with M = max_s m_s,
 *   out = Σ_s e^(m_s − M) acc_s / Σ_s e^(m_s − M) l_s.
 * One workgroup per (row, head): invocation s < splits owns split s for M and the sum (tree
 * reductions in workgroup memory); then invocation (sp, d) sums acc over splits s ≡ sp (mod NP) for
 * vec4 column d, and the NP partitions merge by tree.
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

const WGSL = /* wgsl */ `
override WG: u32 = 256u; // ≥ nSplits
override HD4: u32 = 2u;  // headDim / 4, ≤ WG
override NP: u32 = 1u;   // split partitions: a power of two with NP · HD4 ≤ WG

struct Params { rows: u32, nHeads: u32, nSplits: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partAcc: array<vec4<f32>>; // (rows, nHeads, nSplits, headDim)
@group(0) @binding(2) var<storage, read> partMl: array<vec2<f32>>;  // (rows, nHeads, nSplits)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (rows, nHeads·headDim)

var<workgroup> red: array<f32, WG>;
var<workgroup> weight: array<f32, WG>;     // e^(m_s − M) per split
var<workgroup> accW: array<vec4<f32>, WG>; // [sp·HD4 + d]

fn reduce(lid: u32, isMax: bool) {
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let other = red[lid + stride];
      red[lid] = select(red[lid] + other, max(red[lid], other), isMax);
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let cell = wid.x + wid.y * nwg.x; // t · nHeads + h
  if (cell >= params.rows * params.nHeads) { return; }
  let base = cell * params.nSplits;
  var ml = vec2(-1.0e30, 0.0); // empty splits also carry (−1e30, 0)
  if (lid < params.nSplits) { ml = partMl[base + lid]; }
  red[lid] = ml.x;
  workgroupBarrier();
  reduce(lid, true);
  let w = exp(ml.x - red[0]);
  workgroupBarrier();
  weight[lid] = w;
  red[lid] = ml.y * w;
  workgroupBarrier();
  reduce(lid, false);
  let sp = lid / HD4;
  let d = lid % HD4;
  var a = vec4<f32>(0.0);
  if (sp < NP) {
    for (var s = sp; s < params.nSplits; s += NP) { a += partAcc[(base + s) * HD4 + d] * weight[s]; }
  }
  accW[lid] = a;
  workgroupBarrier();
  for (var stride = NP / 2u; stride > 0u; stride /= 2u) {
    if (sp < stride) { accW[lid] += accW[lid + stride * HD4]; }
    workgroupBarrier();
  }
  if (lid < HD4) { out[cell * HD4 + lid] = accW[lid] / red[0]; }
}
`;

export interface AttentionCombineArgs {
  /** partAcc: (rows, nHeads, splits, headDim) f32, unnormalised outputs */
  partAcc: GPUBuffer;
  /** partMl: (rows, nHeads, splits) pairs of f32 (m, l); an empty split holds (−1e30, 0) */
  partMl: GPUBuffer;
  /** out: (rows, nHeads · headDim) f32 */
  out: GPUBuffer;
  rows: number;
  nHeads: number;
  /** a multiple of 4, at most 4 · 256 */
  headDim: number;
  /** at most 256 */
  splits: number;
}

/** The WGSL source; sizes are set through `override` constants. */
export function attentionCombineShader(): string {
  return WGSL;
}

/** Largest split count one workgroup merges (one invocation per split). */
export const MAX_COMBINE_SPLITS = 256;

/**
 * Builds the split merge.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the partial buffers, output and sizes
 */
export function createAttentionCombine(gpu: Gpu): Kernel<AttentionCombineArgs> {
  const wg = MAX_COMBINE_SPLITS; // WebGPU guarantees 256 invocations per workgroup
  return {
    bind({ partAcc, partMl, out, rows, nHeads, headDim, splits }: AttentionCombineArgs): Encodable {
      const hd4 = headDim / 4;
      if (headDim % 4 !== 0 || hd4 > wg || splits > wg) {
        throw new Error(`Cannot merge ${splits} attention splits of headDim ${headDim}: unsupported sizes`);
      }
      const pipeline = getPipeline(gpu, {
        name: "attention_combine",
        code: WGSL,
        constants: { WG: wg, HD4: hd4, NP: 2 ** Math.floor(Math.log2(wg / hd4)) },
        bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
      });
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", nHeads], ["u32", splits]],
        "attention_combine params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, partAcc, partMl, out]);
      const [gx, gy] = dispatch2d(gpu, rows * nHeads);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
