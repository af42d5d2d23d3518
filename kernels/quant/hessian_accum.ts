/**
 * Hessian accumulation for GPTQ/LeanQuant (docs/quantization.md §1.1), a symmetric rank-k update Xᵀ·X:
 *   H[i][j] ← alpha · H[i][j] + beta · Σ_t x[t][i] · x[t][j]      for i ≤ j (upper triangle)
 *   and, with `mirror`, H[j][i] ← the same value.
 * x is (xRowOffset + tokens, cols) f32 row-major: the calibration activations of one window, as the
 * forward pass captured them. quant/hessian.ts accumulates raw sums (alpha = beta = 1) and finishes with
 * one pass of tokens = 0, alpha = 2/N, mirror = 1.
 *
 * Only tiles on or above the diagonal run (half the FMAs of a full GEMM); the lower triangle is written
 * only by the mirroring pass, whose transposed stores are scattered but happen once per Hessian.
 * Tiles are 128×128 per workgroup of 256 invocations with 8×8 register tiles, tokens staged TK at a time
 * in workgroup memory. Each invocation owns rows {4ty..4ty+3, 64+4ty..} and columns {4tx.., 64+4tx..}, so
 * both operands are read as vec4 from conflict-free workgroup addresses. The accumulators are 16 named
 * vec4s written out by TypeScript: WGSL cannot unroll, and arrays indexed in loops end up in local
 * memory on NVIDIA (see matmul.ts).
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
  splitElement,
  uniformParams,
  unroll,
} from "../core/mod.ts";

/** Tile edge (rows and columns of H per workgroup); the register mapping assumes 128. */
export const HESSIAN_TILE = 128;

const LOADS = {
  vec4: /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<vec4f>;  // (xRowOffset + tokens, cols) f32, cols % 4 = 0
fn load4(t: u32, c: u32) -> vec4f {
  if (t >= params.tokens || c >= params.cols) { return vec4f(); }
  return x[((params.xRowOffset + t) * params.cols + c) / 4u];
}`,
  scalar: /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<f32>;  // (xRowOffset + tokens, cols) f32
fn load4(t: u32, c: u32) -> vec4f {
  var v = vec4f();
  if (t >= params.tokens) { return v; }
  let row = (params.xRowOffset + t) * params.cols;
  for (var q = 0u; q < 4u; q++) {
    if (c + q < params.cols) { v[q] = x[row + c + q]; }
  }
  return v;
}`,
} as const;

function head(H: MatrixAccess, tk: number): string {
  return /* wgsl */ `
const TK: u32 = ${tk}u;  // tokens staged per step (written out in main)

struct Params {
  cols: u32, tokens: u32, xRowOffset: u32,
  mirror: u32,  // 1: also write H[j][i]
  alpha: f32, beta: f32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> H: array<f32>;  // (cols, cols) f32, upper triangle used

// [t][i / 4] for the tile's 128 rows (a) and 128 columns (b); one spare vec4 per token row.
var<workgroup> sa: array<vec4f, TK * 33u>;
var<workgroup> sb: array<vec4f, TK * 33u>;

fn emit(row: u32, col0: u32, v: vec4f) {
  let n = params.cols;
  for (var q = 0u; q < 4u; q++) {
    let col = col0 + q;
    if (row < n && col < n && row <= col) {
      let i = row * n + col;
      var h = params.beta * v[q];
      if (params.alpha != 0.0) { h = fma(params.alpha, ${H.ld("i")}, h); }
      ${H.st("i", "h")};
      if (params.mirror != 0u) { ${H.st("col * n + row", "h")}; }
    }
  }
}
`;
}

/** acc{r}{h}: rows 4ty + r (r < 4) or 64 + 4ty + r − 4, columns 4tx (h = 0) or 64 + 4tx (h = 1). */
const ACC = Array.from({ length: 16 }, (_, i) => ({ name: `acc${i >> 1}${i & 1}`, r: i >> 1, h: i & 1 }));

function mainWgsl(tk: number): string {
  const lane = (r: number) => `a${r >> 2}.${"xyzw"[r & 3]}`;
  // The k steps are written out: the H100's driver does not reliably unroll naga's loops (docs/webgpu.md §6).
  const step = (k: number) =>
    /* wgsl */ `{
      let a0 = sa[${k * 33}u + ty];
      let a1 = sa[${k * 33 + 16}u + ty];
      let b0 = sb[${k * 33}u + tx];
      let b1 = sb[${k * 33 + 16}u + tx];
      ${unroll(16, (i) => `${ACC[i].name} = fma(vec4f(${lane(ACC[i].r)}), b${ACC[i].h}, ${ACC[i].name});`)}
    }`;
  const rowOf = (r: number) => (r < 4 ? `4u * ty + ${r}u` : `64u + 4u * ty + ${r - 4}u`);
  return /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let bi = wid.y;
  let bj = wid.x;
  if (bi > bj) { return; }  // below the diagonal: the mirror of a tile that runs
  let i0 = bi * 128u;
  let j0 = bj * 128u;
  let tx = lid % 16u;
  let ty = lid / 16u;
  ${ACC.map((a) => `var ${a.name} = vec4f();`).join("\n  ")}
  for (var t0 = 0u; t0 < params.tokens; t0 += TK) {
    for (var e = lid; e < TK * 32u; e += 256u) {
      let t = e / 32u;
      let c4 = e % 32u;
      sa[t * 33u + c4] = load4(t0 + t, i0 + 4u * c4);
      sb[t * 33u + c4] = load4(t0 + t, j0 + 4u * c4);
    }
    workgroupBarrier();
    ${unroll(tk, step, "\n    ")}
    workgroupBarrier();
  }
  ${ACC.map((a) => `emit(i0 + ${rowOf(a.r)}, j0 + ${a.h * 64}u + 4u * tx, ${a.name});`).join("\n  ")}
}
`;
}

/** Which build: 16-byte activation loads need cols % 4 == 0; `split` binds H as two parts (matrix_parts.ts). */
export interface HessianAccumSpec {
  vec4: boolean;
  split?: boolean;
  /** tokens staged per step (default 16) */
  tk?: number;
}

export interface HessianAccumArgs {
  /** x: (xRowOffset + tokens, cols) f32 row-major; may be omitted when tokens = 0 */
  x?: GPUBuffer;
  /** H: (cols, cols) f32 row-major, updated in place; two parts past one binding */
  H: MatrixBuffer;
  cols: number;
  tokens: number;
  /** first row of x read (default 0) */
  xRowOffset?: number;
  /** scale of the old H (default 1) */
  alpha?: number;
  /** scale of Xᵀ·X (default 1) */
  beta?: number;
  /** also write the lower triangle (default false) */
  mirror?: boolean;
}

/**
 * The WGSL for one build.
 * @param spec activation load width
 * @returns WGSL source with entry point `main`
 */
export function hessianAccumShader(spec: HessianAccumSpec): string {
  const H = matrixAccess("H", spec.split ? { binding: 3, access: "read_write" } : null);
  const tk = spec.tk ?? 16;
  return H.wgsl + head(H, tk) + LOADS[spec.vec4 ? "vec4" : "scalar"] + mainWgsl(tk);
}

/** The Hessian update; its bound plan owns a params buffer (`destroy()` frees it). */
export interface HessianAccumKernel extends Kernel<HessianAccumArgs> {
  bind(args: HessianAccumArgs): BoundPlan;
}

/**
 * Builds the Hessian update.
 * @param gpu the device
 * @returns a kernel recording one dispatch of ⌈cols/128⌉² workgroups (those below the diagonal exit)
 */
export function createHessianAccum(gpu: Gpu): HessianAccumKernel {
  // Two 16-token stages take 16.5 KiB of workgroup memory; halve the stage on a 16 KiB device.
  const tk = gpu.maxWorkgroupStorageBytes >= 2 * 16 * 33 * 16 ? 16 : 8;
  const pipelineFor = (vec4: boolean, H?: MatrixBuffer) =>
    H && isSplit(H)
      ? getPipeline(gpu, {
        name: "hessian_accum",
        code: hessianAccumShader({ vec4, split: true, tk }),
        constants: { H_SPLIT: splitElement(H) },
        spec: { vec4, split: true, tk },
        bindings: ["uniform", "read-only-storage", "storage", "storage"],
      })
      : getPipeline(gpu, {
        name: "hessian_accum",
        code: hessianAccumShader({ vec4, tk }),
        constants: {},
        spec: { vec4, tk },
        bindings: ["uniform", "read-only-storage", "storage"],
      });
  pipelineFor(true);
  pipelineFor(false);
  return {
    bind({ x, H, cols, tokens, xRowOffset = 0, alpha = 1, beta = 1, mirror = false }): BoundPlan {
      const tiles = Math.ceil(cols / HESSIAN_TILE);
      if (tiles > gpu.maxWorkgroupsPerDimension) {
        throw new Error(
          `Cannot accumulate a Hessian of ${cols} columns: ${tiles} tiles exceed the dispatch limit`,
        );
      }
      if (!x && tokens > 0) throw new Error("Cannot accumulate a Hessian: x is missing");
      const pipeline = pipelineFor(cols % 4 === 0, H);
      const params = uniformParams(
        gpu,
        [["u32", cols], ["u32", tokens], ["u32", xRowOffset], ["u32", mirror ? 1 : 0], ["f32", alpha], [
          "f32",
          beta,
        ]],
        "hessian_accum params",
      );
      // x and H cannot share a buffer (read-only and writable in one dispatch): tokens = 0 gets a stub.
      const stub = x ? null : createStorage(gpu, 16, "hessian_accum stub x");
      const bindGroup = gpu.device.createBindGroup({
        label: "hessian_accum",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, x ?? stub!, ...matrixBindings(H)].map((buffer, binding) => ({
          binding,
          resource: { buffer },
        })),
      });
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(tiles, tiles);
        },
        destroy() {
          params.destroy();
          stub?.destroy();
        },
      };
    },
  };
}
