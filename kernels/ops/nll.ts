/**
 * Per-row negative log-likelihood of a target token under softmax(logits), for perplexity:
 *   nll[r] = logsumexp(logits[r, :]) − logits[r, target[r]],  logsumexp = m + log Σ_v e^(logits[r, v] − m)
 * with m the row max (subtracted for stability). One workgroup per row; the max and the sum are reduced
 * through workgroup memory (no subgroups, docs/webgpu.md §2). Only `rows` floats ever need to be read back.
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
override WG: u32 = 256u;  // a power of two

struct Params { rows: u32, vocab: u32, targetOffset: u32, outOffset: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;      // (rows, vocab)
@group(0) @binding(2) var<storage, read> targets: array<u32>;     // (targetOffset + rows), each < vocab
@group(0) @binding(3) var<storage, read_write> nll: array<f32>;   // (outOffset + rows)

var<workgroup> red: array<f32, WG>;

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
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }
  let base = row * params.vocab;
  var m = -3.0e38;
  for (var v = lid; v < params.vocab; v += WG) { m = max(m, logits[base + v]); }
  red[lid] = m;
  workgroupBarrier();
  reduce(lid, true);
  let rowMax = red[0];
  workgroupBarrier();
  var s = 0.0;
  for (var v = lid; v < params.vocab; v += WG) { s += exp(logits[base + v] - rowMax); }
  red[lid] = s;
  workgroupBarrier();
  reduce(lid, false);
  if (lid == 0u) {
    let tok = targets[params.targetOffset + row];
    nll[params.outOffset + row] = log(red[0]) + rowMax - logits[base + tok];
  }
}
`;

export interface NllArgs {
  /** logits: (rows, vocab) f32 */
  logits: GPUBuffer;
  /** targets: (targetOffset + rows) u32 token ids, each < vocab (checked on the host) */
  targets: GPUBuffer;
  /** nll: (outOffset + rows) f32 */
  nll: GPUBuffer;
  rows: number;
  vocab: number;
  /** index of row 0's target in `targets` (default 0), e.g. 1 + first row for next-token targets */
  targetOffset?: number;
  /** index of row 0's result in `nll` (default 0) */
  outOffset?: number;
}

/** The WGSL source (no variants beyond the workgroup size override). */
export function nllShader(): string {
  return WGSL;
}

/**
 * Builds the per-row NLL kernel.
 * @param gpu the device
 * @returns a kernel whose `bind` fixes the buffers, sizes and offsets
 * @example
 * ```ts ignore
 * const nll = createNll(gpu).bind({ logits, targets: ids, nll: out, rows: n - 1, vocab, targetOffset: 1 });
 * nll.encode(pass);
 * ```
 */
export function createNll(gpu: Gpu): Kernel<NllArgs> {
  const wg = 2 ** Math.floor(Math.log2(Math.min(256, gpu.maxInvocationsPerWorkgroup)));
  const pipeline = getPipeline(gpu, {
    name: "nll",
    code: WGSL,
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
  });
  return {
    bind({ logits, targets, nll, rows, vocab, targetOffset = 0, outOffset = 0 }: NllArgs): Encodable {
      const what = `Cannot bind nll (${rows} rows × vocab ${vocab})`;
      if (!(rows >= 1 && vocab >= 1)) throw new Error(`${what}: rows and vocab must be positive`);
      const need: [string, GPUBuffer, number][] = [
        ["logits", logits, rows * vocab * 4],
        ["targets", targets, (targetOffset + rows) * 4],
        ["nll", nll, (outOffset + rows) * 4],
      ];
      for (const [name, buffer, bytes] of need) {
        if (buffer.size < bytes) {
          throw new Error(`${what}: buffer "${name}" holds ${buffer.size} bytes, needs ${bytes}`);
        }
      }
      const params = uniformParams(gpu, [
        ["u32", rows],
        ["u32", vocab],
        ["u32", targetOffset],
        ["u32", outOffset],
      ], "nll params");
      const bindGroup = bindBuffers(gpu, pipeline, [params, logits, targets, nll], "nll");
      const [gx, gy] = dispatch2d(gpu, rows);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
