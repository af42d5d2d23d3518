/**
 * Merges the partial results of flash-decoding splits (attention.ts, and paged_attention.ts with each row's
 * own split count). Split s of one (row, head)
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
import { MAX_ROW_SPLITS } from "./batch_rows.ts";

/**
 * The merge's WGSL. The contiguous build takes one split count for every row (a uniform); the paged build
 * (paged_attention.ts) reads each row's own count, skips rows of one split (the main pass wrote them whole)
 * and strides the partials by the forward's split cap (dispatch[3]).
 */
function combineWgsl(paged: boolean): string {
  const splits = paged
    ? `let n = rowSplits[cell / params.nHeads];
  if (n == 1u) { return; }
  let base = cell * dispatch[3];`
    : `let n = params.nSplits;
  let base = cell * n;`;
  return /* wgsl */ `
override WG: u32 = 256u; // ≥ the most splits of a row
override HD4: u32 = 2u;  // headDim / 4, ≤ WG
override NP: u32 = 1u;   // split partitions: a power of two with NP · HD4 ≤ WG

struct Params { rows: u32, nHeads: u32, ${paged ? "" : "nSplits: u32 "}}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partAcc: array<vec4<f32>>; // (rows, nHeads, splits, headDim)
@group(0) @binding(2) var<storage, read> partMl: array<vec2<f32>>;  // (rows, nHeads, splits)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (rows, nHeads·headDim)
${
    paged
      ? `@group(0) @binding(4) var<storage, read> rowSplits: array<u32>;
@group(0) @binding(5) var<storage, read> dispatch: array<u32, 4>;`
      : ""
  }

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
  ${splits}
  var ml = vec2(-1.0e30, 0.0); // empty splits also carry (−1e30, 0)
  if (lid < n) { ml = partMl[base + lid]; }
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
    for (var s = sp; s < n; s += NP) { a += partAcc[(base + s) * HD4 + d] * weight[s]; }
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
}

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
        code: combineWgsl(false),
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

export interface PagedCombineArgs {
  /** partAcc: (rows, nHeads, cap, headDim) f32; partMl: (rows, nHeads, cap) (m, l) */
  partAcc: GPUBuffer;
  partMl: GPUBuffer;
  /** out: (rows, nHeads · headDim) f32 */
  out: GPUBuffer;
  /** rowSplits: (rows) u32; dispatch: [3] is the cap */
  rowSplits: GPUBuffer;
  dispatch: GPUBuffer;
  rows: number;
  nHeads: number;
  /** a multiple of 4, at most 256 */
  headDim: number;
}

/**
 * Builds the merge of paged_attention.ts's splits: each row its own split count (at most MAX_ROW_SPLITS).
 * @param gpu the device
 * @returns a kernel whose `bind` fixes buffers and sizes
 */
export function createPagedCombine(gpu: Gpu): Kernel<PagedCombineArgs> {
  return {
    bind(a: PagedCombineArgs): Encodable {
      const hd4 = a.headDim / 4;
      const wg = Math.max(MAX_ROW_SPLITS, 2 ** Math.ceil(Math.log2(hd4)));
      const pipeline = getPipeline(gpu, {
        name: "paged_attention_combine",
        code: combineWgsl(true),
        constants: { WG: wg, HD4: hd4, NP: 2 ** Math.floor(Math.log2(wg / hd4)) },
        bindings: [
          "uniform",
          "read-only-storage",
          "read-only-storage",
          "storage",
          "read-only-storage",
          "read-only-storage",
        ],
      });
      const params = uniformParams(gpu, [["u32", a.rows], ["u32", a.nHeads]], "paged combine params");
      const bindGroup = bindBuffers(gpu, pipeline, [
        params,
        a.partAcc,
        a.partMl,
        a.out,
        a.rowSplits,
        a.dispatch,
      ]);
      return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, a.rows * a.nHeads));
    },
  };
}
