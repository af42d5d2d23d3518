/**
 * GPTQ's min-max affine grid per row over a column range (quant.py `find_params`, perchannel, asymmetric;
 * docs/quantization.md §1.4; f64 spec: `minMaxParams` in quant/reference_grid.ts):
 *   xmin = min(min x, 0), xmax = max(max x, 0)    (the range always contains 0)
 *   [xmin, xmax] = [−1, 1] when both are 0
 *   scale = (xmax − xmin)/maxq,  zero = round(−xmin/scale)   (round half to even, as torch and WGSL do)
 * The zero is computed as round(−xmin·maxq/(xmax − xmin)): the same value with one rounding fewer in f32, so
 * exact halves such as [−1, 1] at maxq = 15 (7.5 → 8) tie the way the f64 reference ties them.
 *
 * One workgroup per tile of TR rows; L invocations per row stride along the columns and meet in a
 * workgroup tree reduction (no subgroups on the H100 path). Used row-wise (all columns, before the GPTQ loop)
 * and per group (k % g == 0, on the error-updated W) through quant/gptq.ts's group-fit hook.
 */
import {
  bindBuffers,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";

const WGSL = /* wgsl */ `
override TR: u32 = 8u;   // rows per workgroup
override L: u32 = 32u;   // invocations per row, a power of two
override MAXQ: u32 = 15u;
override WG: u32 = TR * L;

struct Params { rows: u32, stride: u32, colStart: u32, groupCols: u32, nGroups: u32, groupIndex: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, stride) f32
@group(0) @binding(2) var<storage, read_write> out: array<vec2f>; // (rows, nGroups) (scale, zero)

var<workgroup> lo: array<f32, WG>;
var<workgroup> hi: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r = lid / L;
  let l = lid % L;
  let row = (wid.x + wid.y * nwg.x) * TR + r;
  var mn = 0.0;  // starting at 0 is the include-zero convention
  var mx = 0.0;
  if (row < params.rows) {
    let base = row * params.stride + params.colStart;
    for (var c = l; c < params.groupCols; c += L) {
      let v = x[base + c];
      mn = min(mn, v);
      mx = max(mx, v);
    }
  }
  lo[lid] = mn;
  hi[lid] = mx;
  workgroupBarrier();
  for (var s = L / 2u; s > 0u; s /= 2u) {
    if (l < s) {
      lo[lid] = min(lo[lid], lo[lid + s]);
      hi[lid] = max(hi[lid], hi[lid + s]);
    }
    workgroupBarrier();
  }
  if (l != 0u || row >= params.rows) { return; }
  var xmin = lo[lid];
  var xmax = hi[lid];
  if (xmin == 0.0 && xmax == 0.0) {
    xmin = -1.0;
    xmax = 1.0;
  }
  let maxq = f32(MAXQ);
  let zero = abs(round(-xmin * maxq / (xmax - xmin)));  // ≥ 0 anyway; abs turns −0 into 0
  out[row * params.nGroups + params.groupIndex] = vec2f((xmax - xmin) / maxq, zero);
}
`;

/** The grid's bit width. */
export interface MinMaxParamsSpec {
  bits: number;
}

export interface MinMaxParamsArgs {
  /** x: (rows, stride) f32; columns [colStart, colStart + groupCols) of each row are read */
  x: GPUBuffer;
  /** out: (rows, nGroups) vec2<f32> (scale, zero); entry (r, groupIndex) is written; must not be x */
  out: GPUBuffer;
  rows: number;
  stride: number;
  colStart: number;
  groupCols: number;
  nGroups: number;
  groupIndex: number;
}

/** The WGSL source (variants are `override` constants). */
export function minMaxParamsShader(): string {
  return WGSL;
}

/**
 * Builds the min-max parameter kernel for `bits`-bit asymmetric grids.
 * @param gpu the device
 * @param spec the bit width (maxq = 2^bits − 1)
 * @returns a kernel whose `bind` fixes the column range and output slot
 */
export function createMinMaxParams(gpu: Gpu, { bits }: MinMaxParamsSpec): Kernel<MinMaxParamsArgs> {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new Error(`Cannot build minmax_params for bits ${bits}: expected 1..8`);
  }
  const lanes = 32;
  const tr = Math.max(1, Math.min(8, Math.floor(gpu.maxInvocationsPerWorkgroup / lanes)));
  const pipeline = getPipeline(gpu, {
    name: "minmax_params",
    code: WGSL,
    constants: { TR: tr, L: lanes, MAXQ: 2 ** bits - 1 },
    bindings: ["uniform", "read-only-storage", "storage"],
  });
  return {
    bind(a: MinMaxParamsArgs): Encodable {
      const { x, out, rows, stride, colStart, groupCols, nGroups, groupIndex } = a;
      const problem = !(rows > 0 && groupCols > 0)
        ? `rows ${rows} and groupCols ${groupCols} must be positive`
        : colStart + groupCols > stride
        ? `columns [${colStart}, ${colStart + groupCols}) exceed stride ${stride}`
        : !(groupIndex >= 0 && groupIndex < nGroups)
        ? `groupIndex ${groupIndex} is outside [0, ${nGroups})`
        : x.size < rows * stride * 4
        ? `x holds ${x.size} bytes, needs ${rows * stride * 4}`
        : out.size < rows * nGroups * 8
        ? `out holds ${out.size} bytes, needs ${rows * nGroups * 8}`
        : x === out
        ? "x and out must differ"
        : null;
      if (problem) throw new Error(`Cannot bind minmax_params: ${problem}`);
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", stride], ["u32", colStart], ["u32", groupCols], ["u32", nGroups], [
          "u32",
          groupIndex,
        ]],
        "minmax_params params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, x, out], "minmax_params");
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows, tr));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
