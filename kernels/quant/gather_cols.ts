/**
 * Column gather: dst[r, j] = src[r, idx[j]] (0 where idx[j] < 0). The GPTQ driver uses it for the act-order
 * permutation (W[:, perm] with dead columns zeroed, docs/quantization.md §1.2 steps 3 and 6) and to un-permute Q and
 * the codes with invperm at the end (§1.3), so no matrix ever crosses to the host.
 *
 * Two element widths, chosen by the `BYTES` override:
 * - 4: 32-bit elements (f32 bits are copied as u32, so -0.0 and NaN payloads survive); src is (rows, srcStride).
 * - 1: bytes (codes). src holds rows of srcStride u32 words, 4 codes per word little-endian (the layout
 *   gptq_block writes); dst is rows·cols bytes packed densely row after row, so a readback is a Uint8Array.
 * One invocation per output word; a byte gather reads up to four source words.
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
override BYTES: u32 = 4u;  // element width: 4 (u32/f32) or 1 (packed codes)
override WG: u32 = 256u;

struct Params { rows: u32, cols: u32, srcStride: u32, words: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;        // (rows, srcStride) elements or code words
@group(0) @binding(2) var<storage, read> idx: array<i32>;        // (cols) source column of each output column
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;  // (words) = (rows, cols) elements or bytes

fn sourceByte(f: u32) -> u32 {
  let r = f / params.cols;
  let s = idx[f % params.cols];
  if (s < 0) { return 0u; }
  let word = src[r * params.srcStride + u32(s) / 4u];
  return (word >> (8u * (u32(s) % 4u))) & 0xffu;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o = (wid.x + wid.y * nwg.x) * WG + lid;
  if (o >= params.words) { return; }
  if (BYTES == 4u) {
    let s = idx[o % params.cols];
    var v = 0u;
    if (s >= 0) { v = src[(o / params.cols) * params.srcStride + u32(s)]; }
    dst[o] = v;
    return;
  }
  let n = params.rows * params.cols;
  var word = 0u;
  for (var b = 0u; b < 4u; b++) {
    let f = 4u * o + b;
    if (f < n) { word |= sourceByte(f) << (8u * b); }
  }
  dst[o] = word;
}
`;

/** Which element width the kernel gathers. */
export interface GatherColsSpec {
  /** 4: 32-bit elements; 1: packed 8-bit codes. */
  bytes: 1 | 4;
}

export interface GatherColsArgs {
  /** src: bytes 4: (rows, srcStride) u32/f32; bytes 1: (rows, srcStride) u32 words, 4 codes each, LE */
  src: GPUBuffer;
  /** idx: (cols) i32, source column of output column j; −1 writes 0 */
  idx: GPUBuffer;
  /** dst: bytes 4: (rows, cols) u32/f32; bytes 1: rows·cols bytes, dense, LE; must not be src */
  dst: GPUBuffer;
  rows: number;
  cols: number;
  /** Row stride of src: elements (bytes 4) or u32 words (bytes 1). */
  srcStride: number;
}

/** The WGSL source (variants are `override` constants). */
export function gatherColsShader(): string {
  return WGSL;
}

/**
 * Builds the column gather.
 * @param gpu the device
 * @param spec the element width
 * @returns a kernel whose `bind` fixes buffers and sizes
 */
export function createGatherCols(gpu: Gpu, { bytes }: GatherColsSpec): Kernel<GatherColsArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipeline = getPipeline(gpu, {
    name: "gather_cols",
    code: WGSL,
    constants: { BYTES: bytes, WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
    spec: { bytes },
  });
  return {
    bind({ src, idx, dst, rows, cols, srcStride }: GatherColsArgs): Encodable {
      const words = bytes === 4 ? rows * cols : ceilDiv(rows * cols, 4);
      const srcWords = bytes === 4 ? cols : ceilDiv(cols, 4);
      const problem = !(rows > 0 && cols > 0)
        ? `rows ${rows} and cols ${cols} must be positive`
        : srcStride < srcWords
        ? `srcStride ${srcStride} is less than a row (${srcWords})`
        : src.size < rows * srcStride * 4
        ? `src holds ${src.size} bytes, needs ${rows * srcStride * 4}`
        : idx.size < cols * 4
        ? `idx holds ${idx.size} bytes, needs ${cols * 4}`
        : dst.size < words * 4
        ? `dst holds ${dst.size} bytes, needs ${words * 4}`
        : src === dst
        ? "src and dst must differ"
        : null;
      if (problem) throw new Error(`Cannot bind gather_cols (bytes ${bytes}): ${problem}`);
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", cols], ["u32", srcStride], ["u32", words]],
        "gather_cols params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, src, idx, dst], "gather_cols");
      const [gx, gy] = dispatch2d(gpu, ceilDiv(words, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
