/**
 * Dense Linear layer, W stored as Hugging Face stores it, (outDim, inDim) row-major, f32 or f16:
 *   y[r, yColOffset + o] (+)= Σ_k x[xRowOffset + r, k] · W[o, k]      (f32 accumulation)
 * `+=` is the residual epilogue (x = x + Wo·attn in one dispatch).
 *
 * - GEMV (decode): bandwidth-bound, so every weight byte is read once and meets all (≤ 8) activation
 *   rows. TPR invocations split K for a group of NR = 4 output rows; each holds a 16-byte chunk of every
 *   activation row in registers and reuses it for its 4 weight rows, so a 16 B weight load costs only
 *   ROWS/2 activation loads (docs/webgpu.md §6: re-reading activations per weight row held a naive GEMV to a
 *   fifth of the read ceiling). Partials meet in a transposed workgroup reduction (no subgroups).
 *   9–128 rows run as several 8-row GEMV dispatches, which beat the tiled kernel there (H100).
 * - Batched decode (`path: "gemv"`, f16 weights; WGSL in matmul_rows_wgsl.ts): the batched engine's decode
 *   rows and LM head, dispatches of up to 64 rows that read each weight once, a row's sums independent of
 *   its batch.
 * - Tiled GEMM (prefill, > 128 rows; WGSL in matmul_gemm_wgsl.ts): TM×TN output tiles, K staged TK
 *   columns at a time in workgroup memory (weights decoded once per tile), an 8×8 register tile per
 *   invocation; f16 weights stage through double-buffered tiles (pipelined) and may opt into f16 FMAs.
 * The GEMV reads 16-byte chunks when rows start 16-byte aligned (inDim % 4 == 0 for f32, % 8 for f16:
 * every real model); other shapes use a scalar-load build of the same shader.
 */
import {
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  sequence,
  singleDispatch,
  uniformParams,
  unroll,
} from "../core/mod.ts";
import {
  F16_ENABLE,
  GEMM_DEFAULTS,
  type GemmBuild,
  type GemmMath,
  gemmMathFor,
  gemmPipeFor,
  gemmWorkgroupBytes,
} from "./gemm_core_wgsl.ts";
import { gemmWgsl } from "./matmul_gemm_wgsl.ts";
import { type DenseRowsBuild, denseRowsWgsl } from "./matmul_rows_wgsl.ts";
import {
  ROW_LANES_MAX_ROWS,
  rowLanesFor,
  rowLanesOutputsPerWorkgroup,
  type RowLanesTune,
} from "./row_lanes_wgsl.ts";

/** Fields shared by both shaders, packed in this order by {@link createMatmul}. */
const PARAMS = /* wgsl */ `
override F16: bool = false;  // weights are f16 pairs in u32 (else f32 bits)
override ACC: bool = false;  // y += x·Wᵀ instead of y = x·Wᵀ

struct Params {
  rows: u32, inDim: u32, outDim: u32, xRowOffset: u32, yStride: u32,
  yOffset: u32,  // element of y that output (0, 0) of this dispatch goes to
  chunks: u32,  // GEMV: weight loads per row of W
  tilesN: u32,  // GEMM: output tiles along outDim
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // (rows, yStride) f32

fn store(r: u32, o: u32, v: f32) {
  let i = params.yOffset + r * params.yStride + o;
  if (ACC) { y[i] += v; } else { y[i] = v; }
}
`;

/** GEMV weight/activation access: 16-byte loads (`vec4`) or scalar loads (any inDim). */
const GEMV_LAYOUTS = {
  vec4: /* wgsl */ `
const WORDS = 4u;
alias WChunk = vec4<u32>;
alias XChunk = array<vec4f, 2>;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;      // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // (outDim, inDim) f32 bits or f16 pairs
fn loadX(e: u32) -> XChunk {
  if (F16) { return XChunk(x[e / 4u], x[e / 4u + 1u]); }
  return XChunk(x[e / 4u], vec4f());
}
fn dotW(v: WChunk, c: XChunk) -> f32 {
  if (F16) {
    return dot(vec4f(unpack2x16float(v.x), unpack2x16float(v.y)), c[0]) +
      dot(vec4f(unpack2x16float(v.z), unpack2x16float(v.w)), c[1]);
  }
  return dot(bitcast<vec4f>(v), c[0]);
}`,
  scalar: /* wgsl */ `
const WORDS = 1u;
alias WChunk = u32;
alias XChunk = vec2f;
@group(0) @binding(1) var<storage, read> x: array<f32>;  // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> w: array<u32>;  // (outDim, inDim) f32 bits or f16 pairs
fn loadX(e: u32) -> XChunk {
  if (F16) { return vec2f(x[e], x[e + 1u]); }
  return vec2f(x[e], 0.0);
}
fn dotW(v: WChunk, c: XChunk) -> f32 {
  if (F16) { return dot(unpack2x16float(v), c); }
  return bitcast<f32>(v) * c.x;
}`,
} as const;

/**
 * The GEMV body for ROWS activation rows and NR output rows per invocation. WGSL has no unroll
 * attribute and the NVIDIA driver keeps naga's loops rolled, so loops over `acc[n · ROWS + r]` put the
 * accumulators in local memory (measured 4–10× slower on the H100): ROWS, NR and the reduction rounds
 * are therefore written out by TypeScript, the one thing here that `override` cannot express.
 */
function gemvWgsl(rows: number, nr: number): string {
  const parts = rows * nr;
  const red = Math.min(parts, 8);
  const rounds = Array.from({ length: Math.ceil(parts / red) }, (_, q) => q * red).map((j0) => `
  ${unroll(Math.min(red, parts - j0), (j) => `red[lid * (RED + 1u) + ${j}u] = acc[${j0 + j}];`)}
  workgroupBarrier();
  finish(lid, o0, ${j0}u);
  workgroupBarrier();`);
  return /* wgsl */ `
const ROWS = ${rows}u;  // activation rows, 1..8
const NR = ${nr}u;      // output rows per invocation (register blocking)
const RED = ${red}u;    // partial sums reduced per round
override WG: u32 = 128u;  // invocations per workgroup
override TPR: u32 = 32u;  // invocations splitting K for one group of NR output rows; RED ≤ TPR
override EPC: u32 = WORDS * select(1u, 2u, F16);  // weights per load

var<workgroup> red: array<f32, WG * (RED + 1u)>;  // [invocation][RED], padded against bank conflicts

// Transposed reduction: lane j of a group sums partial j0 + j over the group's TPR invocations.
fn finish(lid: u32, o0: u32, j0: u32) {
  let lane = lid % TPR;
  let j = j0 + lane;
  if (lane >= RED || j >= NR * ROWS || o0 + j / ROWS >= params.outDim) { return; }
  let first = (lid - lane) * (RED + 1u) + lane;
  var s = 0.0;
  for (var l = 0u; l < TPR; l++) { s += red[first + l * (RED + 1u)]; }
  store(j % ROWS, o0 + j / ROWS, s);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let perWg = (WG / TPR) * NR;
  let tile = wid.x + wid.y * nwg.x;
  if (tile * perWg >= params.outDim) { return; }
  let o0 = tile * perWg + (lid / TPR) * NR;
  // Rows past outDim re-read the last row (in bounds, cached) and are never stored.
  ${unroll(nr, (n) => `let w${n} = min(o0 + ${n}u, params.outDim - 1u) * params.chunks;`)}
  var acc: array<f32, ${parts}>;  // [NR][ROWS]
  for (var c = lid % TPR; c < params.chunks; c += TPR) {
    let e = params.xRowOffset * params.inDim + c * EPC;
    ${unroll(rows, (r) => `let x${r} = loadX(e + ${r}u * params.inDim);`)}
    ${unroll(nr, (n) => `let v${n} = w[w${n} + c];`)}
    ${unroll(parts, (i) => `acc[${i}] += dotW(v${Math.floor(i / rows)}, x${i % rows});`)}
  }
  ${rounds.join("")}
}
`;
}

/** What a model asks for: the weight dtype and whether the product is added onto y. */
export interface MatmulSpec {
  weightType: "f32" | "f16";
  /** y += x·Wᵀ (residual epilogue) instead of y = x·Wᵀ. */
  accumulate: boolean;
  /**
   * GEMM tile overrides for sweeps: rows × columns per tile (multiples of 8), K per stage (multiple of 8);
   * `mm` overrides the batched decode build (matmul_rows_wgsl.ts; `ks` sets the order of sums: sweeps only).
   */
  tune?: { tm?: number; tn?: number; tk?: number; pipelined?: boolean; mm?: RowLanesTune };
  /**
   * Pin the path whatever the row count, so a row's sums do not depend on how many rows share the call:
   * "gemm" always tiles (the batched engine's prompt forwards); "gemv" runs f16 weights through the batched
   * decode path (dispatches of up to ROW_LANES_MAX_ROWS.dense rows reading each weight once) and other
   * weights through 8-row GEMV batches.
   */
  path?: "gemm" | "gemv";
  /**
   * The tiled GEMM's arithmetic for f16 weights (gemm_core_wgsl.ts): "f32" (default) is exact in f32;
   * "f16" (needs `shader-f16`) rounds activations to f16 and sums products in f16 for 16 k at a time,
   * within gemmF16ErrorBound. f32 weights always run in f32.
   */
  gemmMath?: GemmMath;
}

export interface MatmulArgs {
  /** x: (xRowOffset + rows, inDim) f32; rows from xRowOffset on are read */
  x: GPUBuffer;
  /** w: (outDim, inDim) row-major; f32, or f16 with elements 2j, 2j+1 in the low, high half of u32 j */
  w: GPUBuffer;
  /** y: (rows, yStride) f32; output o lands in column yColOffset + o. Must not be x or w. */
  y: GPUBuffer;
  rows: number;
  inDim: number;
  outDim: number;
  /** First row of x to read (default 0), e.g. the last prefill row for the LM head. */
  xRowOffset?: number;
  /** Row stride of y in elements (default outDim). */
  yStride?: number;
  /** First column of y written (default 0), so row panels of one weight fill one y. */
  yColOffset?: number;
}

/** Which shader build: the GEMV (16-byte or scalar loads, ROWS rows, NR outputs per invocation) or the GEMM. */
export type MatmulShaderSpec =
  | { path: "gemv"; vec4: boolean; rows: number; nr: number }
  | ({ path: "rows" } & DenseRowsBuild)
  | ({ path: "gemm"; vec: boolean } & GemmBuild);

/** Activation rows one GEMV dispatch serves (its registers hold a chunk of each). */
export const GEMV_MAX_ROWS = 8;
/**
 * Up to this many rows a matmul runs as ⌈rows / 8⌉ GEMV dispatches rather than the GEMM. H100, f16,
 * GEMV batches vs GEMM: 4096×4096 at 64 rows 0.31 vs 1.7 ms, 128 rows 0.50 vs 1.7 ms, 512 rows 2.0 vs
 * 1.75 ms; 14336×4096 at 128 rows 1.74 vs 1.76 ms, 256 rows 3.5 vs 1.85 ms. The crossover is later for
 * weights that fit the 50 MB L2 (later batches hit it). TODO(matmul): an L2-aware threshold, and a
 * split-K GEMM for 129–512 rows, where 128×128 tiles launch too few workgroups.
 */
export const GEMV_BATCH_MAX_ROWS = 128;

/** One dispatch of a bound matmul; exported so a benchmark can report the variant and work it timed. */
export interface MatmulStep {
  shader: MatmulShaderSpec;
  /** Values for the shader's `override` constants. */
  constants: Record<string, number>;
  /** Workgroups before the 2-D split. */
  workgroups: number;
  /** The activation rows this dispatch covers: row0 .. row0 + rows − 1 of the call. */
  row0: number;
  rows: number;
  /** Params.chunks (GEMV) and Params.tilesN (GEMM). */
  chunks: number;
  tilesN: number;
}

/**
 * Builds the WGSL of one shader. Dtype, accumulation and tile sizes are `override` constants (see
 * {@link planMatmul}); the binding element types and the unrolled register blocks come from `spec`.
 * @param spec the path and, for the GEMV, load width, row count and outputs per invocation
 * @returns WGSL source with entry point `main`
 */
export function matmulShader(spec: MatmulShaderSpec): string {
  if (spec.path === "gemm") {
    return (spec.math === "f16" ? F16_ENABLE : "") + PARAMS + gemmWgsl(spec.vec, spec);
  }
  if (spec.path === "rows") return PARAMS + denseRowsWgsl(spec);
  return PARAMS + GEMV_LAYOUTS[spec.vec4 ? "vec4" : "scalar"] + gemvWgsl(spec.rows, spec.nr);
}

/**
 * Splits one matmul into dispatches: GEMV batches of up to 8 rows, or one GEMM past
 * {@link GEMV_BATCH_MAX_ROWS}.
 * @param spec weight dtype and accumulation
 * @param shape rows, inDim, outDim
 * @returns the dispatches `createMatmul(...).bind` records, in order
 */
export function planMatmul(
  spec: MatmulSpec,
  { rows, inDim, outDim, hasF16 = false, maxWorkgroupBytes = 32768 }: {
    rows: number;
    inDim: number;
    outDim: number;
    hasF16?: boolean;
    maxWorkgroupBytes?: number;
  },
): MatmulStep[] {
  const f16 = spec.weightType === "f16";
  const common = { F16: f16 ? 1 : 0, ACC: spec.accumulate ? 1 : 0 };
  if ((rows > GEMV_BATCH_MAX_ROWS && spec.path !== "gemv") || spec.path === "gemm") {
    // best of six tilings on the H100 from 128 to 2048 rows (scalar staging)
    const t = { TM: spec.tune?.tm ?? 128, TN: spec.tune?.tn ?? 128, TK: spec.tune?.tk ?? 16 };
    const tilesN = ceilDiv(outDim, t.TN);
    const constants = { ...common, TM: t.TM, TN: t.TN };
    const math = f16 ? gemmMathFor(spec.gemmMath, hasF16) : "f32";
    if (math === "f16" && t.TK % 16 !== 0) {
      throw new Error(`Cannot plan the f16 GEMM: tk ${t.TK} (need multiples of 16)`);
    }
    // 16-byte staging loads need 16-byte aligned rows and whole loads per K tile.
    const vec = inDim % (f16 ? 8 : 4) === 0;
    // The pipelined build stages with 16-byte loads only: 8 f16 or 4 f32 weights each.
    const tiles = { tm: t.TM, tn: t.TN, tk: t.TK };
    const pipelined = (spec.tune?.pipelined ?? GEMM_DEFAULTS.pipelined.dense) && vec &&
      gemmWorkgroupBytes(tiles, math, true) <= maxWorkgroupBytes;
    const pipe = pipelined ? gemmPipeFor(tiles, f16 ? 8 : 4) : undefined;
    return [{
      shader: {
        path: "gemm",
        vec,
        math,
        tk: t.TK,
        ...(pipe ? { pipe } : {}),
      },
      constants,
      workgroups: ceilDiv(rows, t.TM) * tilesN,
      row0: 0,
      rows,
      chunks: 0,
      tilesN,
    }];
  }
  const vec4 = inDim % (f16 ? 8 : 4) === 0;
  if (spec.path === "gemv" && f16 && vec4) return planRows(spec, common, { rows, outDim });
  const nr = 4;
  // Measured on the H100 (4096² and 14336×4096 f16): 128 invocations, and the fewest K-splitting
  // invocations per row group that still launch ~64K invocations, so small outDim keeps the GPU busy.
  const tpr = Math.min(128, Math.max(32, 2 ** Math.ceil(Math.log2((65536 * nr) / outDim))));
  const g = { WG: 128, TPR: tpr };
  const steps: MatmulStep[] = [];
  for (let row0 = 0; row0 < rows; row0 += GEMV_MAX_ROWS) {
    const n = Math.min(GEMV_MAX_ROWS, rows - row0);
    steps.push({
      shader: { path: "gemv", vec4, rows: n, nr },
      constants: { ...common, ...g },
      workgroups: ceilDiv(outDim, (g.WG / g.TPR) * nr),
      row0,
      rows: n,
      chunks: inDim / ((vec4 ? 4 : 1) * (f16 ? 2 : 1)),
      tilesN: 0,
    });
  }
  return steps;
}

/** The batched decode path (`path: "gemv"`, f16 weights): dispatches of up to ROW_LANES_MAX_ROWS.dense rows. */
function planRows(
  spec: MatmulSpec,
  common: Record<string, number>,
  { rows, outDim }: { rows: number; outDim: number },
): MatmulStep[] {
  const perDispatch = spec.tune?.mm?.rows ?? ROW_LANES_MAX_ROWS.dense;
  const steps: MatmulStep[] = [];
  for (let row0 = 0; row0 < rows; row0 += perDispatch) {
    const build = rowLanesFor(Math.min(perDispatch, rows - row0), "dense", spec.tune?.mm, outDim);
    steps.push({
      shader: { path: "rows", ...build },
      constants: common,
      workgroups: ceilDiv(outDim, rowLanesOutputsPerWorkgroup(build)),
      row0,
      rows: build.rows,
      chunks: 0,
      tilesN: 0,
    });
  }
  return steps;
}

/**
 * Builds the dense matmul kernel for one weight dtype and epilogue.
 * @param gpu the device
 * @param spec weight dtype and accumulation
 * @returns a kernel whose `bind` checks shapes, plans the dispatches and builds their bind groups once
 * @example
 * ```ts ignore
 * const lmHead = createMatmul(gpu, { weightType: "f16", accumulate: false })
 *   .bind({ x: hidden, w: lmHeadW, y: logits, rows: 1, inDim: dim, outDim: vocabSize, xRowOffset: n - 1 });
 * lmHead.encode(pass);
 * ```
 */
export function createMatmul(gpu: Gpu, spec: MatmulSpec): Kernel<MatmulArgs> {
  return {
    bind(args: MatmulArgs): Encodable {
      const { x, w, y, rows, inDim, outDim, xRowOffset = 0, yStride = outDim, yColOffset = 0 } = args;
      checkArgs(gpu, spec, { ...args, xRowOffset, yStride, yColOffset });
      const dispatches = planMatmul(spec, {
        rows,
        inDim,
        outDim,
        hasF16: gpu.hasF16,
        maxWorkgroupBytes: gpu.maxWorkgroupStorageBytes,
      }).map((step) => {
        const pipeline = getPipeline(gpu, {
          name: `matmul_${step.shader.path}`,
          code: matmulShader(step.shader),
          constants: step.constants,
          bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
          spec: step.shader,
        });
        // Params in WGSL field order; yOffset = element of y that output (0, 0) of this dispatch lands on.
        const fields = [
          step.rows,
          inDim,
          outDim,
          xRowOffset + step.row0,
          yStride,
          yColOffset + step.row0 * yStride,
        ];
        const params = uniformParams(
          gpu,
          [...fields, step.chunks, step.tilesN].map((v) => ["u32", v] as const),
          "matmul params",
        );
        const bindGroup = gpu.device.createBindGroup({
          label: "matmul",
          layout: pipeline.getBindGroupLayout(0),
          entries: [params, x, w, y].map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        return singleDispatch(pipeline, bindGroup, dispatch2d(gpu, step.workgroups));
      });
      return sequence(dispatches);
    },
  };
}

/** Load-time shape and size checks; throws a message naming the offending value. */
function checkArgs(gpu: Gpu, spec: MatmulSpec, a: Required<MatmulArgs>): void {
  const fail = (msg: string) => {
    throw new Error(`Cannot bind matmul (${a.rows}×${a.inDim} · ${a.outDim}×${a.inDim}ᵀ): ${msg}`);
  };
  for (const key of ["rows", "inDim", "outDim"] as const) {
    if (!Number.isInteger(a[key]) || a[key] < 1) fail(`${key} must be a positive integer, got ${a[key]}`);
  }
  for (const key of ["xRowOffset", "yStride", "yColOffset"] as const) {
    if (!Number.isInteger(a[key]) || a[key] < 0) fail(`${key} must be a non-negative integer, got ${a[key]}`);
  }
  if (a.y === a.x || a.y === a.w) fail("y must be a different buffer from x and w");
  const wBytes = spec.weightType === "f16" ? 2 : 4;
  if (wBytes === 2 && a.inDim % 2 !== 0) fail(`f16 weights need an even inDim, got ${a.inDim}`);
  if (a.yStride < a.yColOffset + a.outDim) {
    fail(`yStride ${a.yStride} is less than yColOffset + outDim = ${a.yColOffset + a.outDim}`);
  }
  const need: [string, GPUBuffer, number][] = [
    ["x", a.x, (a.xRowOffset + a.rows) * a.inDim * 4],
    ["w", a.w, a.outDim * a.inDim * wBytes],
    ["y", a.y, ((a.rows - 1) * a.yStride + a.yColOffset + a.outDim) * 4],
  ];
  for (const [name, buffer, bytes] of need) {
    if (buffer.size < bytes) fail(`buffer "${name}" holds ${buffer.size} bytes, needs ${bytes}`);
    if (buffer.size > gpu.maxBindingBytes) {
      fail(
        `buffer "${name}" (${buffer.size} bytes) exceeds the ${gpu.maxBindingBytes}-byte binding limit; ` +
          `split the weight into row panels`,
      );
    }
  }
}
