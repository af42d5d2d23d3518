/**
 * The merge of paged_attention.ts's splits: attention_combine.ts's, with each row's own split count (rows
 * of one split were written whole by the main pass and are skipped). Partials are laid out with the split
 * cap of the forward (dispatch[3]) as their stride.
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

const COMBINE_WGSL = /* wgsl */ `
override WG: u32 = 64u;  // ≥ MAX_ROW_SPLITS
override HD4: u32 = 2u;  // headDim / 4
override NP: u32 = 1u;   // split partitions: a power of two with NP · HD4 ≤ WG

struct Params { rows: u32, nHeads: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partAcc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> partMl: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> rowSplits: array<u32>;
@group(0) @binding(5) var<storage, read> dispatch: array<u32, 4>;

var<workgroup> red: array<f32, WG>;
var<workgroup> weight: array<f32, WG>;
var<workgroup> accW: array<vec4<f32>, WG>;

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
  let n = rowSplits[cell / params.nHeads];
  if (n == 1u) { return; }
  let base = cell * dispatch[3];
  var ml = vec2(-1.0e30, 0.0);
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
 * Builds the merge.
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
        code: COMBINE_WGSL,
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
