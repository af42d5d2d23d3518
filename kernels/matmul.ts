/**
 * Dense Linear layer: y = x · Wᵀ (or y += x · Wᵀ, which fuses a residual add), with W stored as Hugging
 * Face stores it, (outDim, inDim) row-major, in f32 or f16:
 *   y[r, yColOffset + o] (+)= Σ_k x[xRowOffset + r, k] · W[o, k]      (f32 accumulation)
 *
 * Two paths, picked at bind time by the number of activation rows:
 * - GEMV (rows ≤ 8, decode). Bandwidth-bound: every weight byte is read once and must meet every row.
 *   A group of TPR invocations owns NR output rows and strides along K in 16-byte chunks; each invocation
 *   keeps the chunk of all ROWS activation rows in registers and reuses it for its NR weight rows. That
 *   register blocking is the point (webgpu.md §6: re-reading activations per weight row caps a naive
 *   GEMV at a fifth of the read ceiling): per 16 B weight load an invocation issues only 2·ROWS/NR
 *   activation loads. Partial sums meet in a transposed workgroup reduction (no subgroups on the H100).
 * - Tiled GEMM (rows > 8, prefill): TM×TN output tiles, K staged TK columns at a time in workgroup memory
 *   (weights decoded to f32 once per tile), 4×4 register tiles per invocation, every load bounds-checked.
 *
 * The GEMV reads 16-byte chunks when rows start on a 16-byte boundary (inDim % 4 == 0 for f32, % 8 for
 * f16, true of every real model); other shapes use a scalar-load build of the same shader.
 */
import { ceilDiv, dispatch2d, type Encodable, getPipeline, type Gpu, type Kernel } from "./gpu.ts";
import { uniformParams } from "./buffers.ts";

/** Fields shared by both shaders, packed in this order by {@link createMatmul}. */
const PARAMS = /* wgsl */ `
override F16: bool = false;  // weights are f16 pairs in u32 (else f32 bits)
override ACC: bool = false;  // y += x·Wᵀ instead of y = x·Wᵀ

struct Params {
  rows: u32, inDim: u32, outDim: u32, xRowOffset: u32, yStride: u32, yColOffset: u32,
  chunks: u32,  // GEMV: weight loads per row of W
  tilesN: u32,  // GEMM: output tiles along outDim
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // (rows, yStride) f32

fn store(r: u32, o: u32, v: f32) {
  let i = r * params.yStride + params.yColOffset + o;
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

/** Straight-line WGSL, one line per index: register arrays stay in registers only under constant indices. */
function unroll(count: number, line: (i: number) => string): string {
  return Array.from({ length: count }, (_, i) => line(i)).join("\n  ");
}

/**
 * The GEMV body for ROWS activation rows and NR output rows per invocation. WGSL has no unroll
 * attribute and the NVIDIA driver keeps naga's loops rolled, so loops over `acc[n · ROWS + r]` put the
 * accumulators in local memory (measured 4–10× slower on the H100): ROWS, NR and the reduction rounds
 * are therefore written out by TypeScript, the one thing here that `override` cannot express.
 */
function gemvWgsl(rows: number, nr: number, unrollK: number): string {
  const parts = rows * nr;
  const red = Math.min(parts, 8);
  const chunk = (c: string) => `{
    let c = ${c};
    let e = params.xRowOffset * params.inDim + c * EPC;
    ${unroll(rows, (r) => `let x${r} = loadX(e + ${r}u * params.inDim);`)}
    ${unroll(nr, (n) => `let v${n} = w[w${n} + c];`)}
    ${unroll(parts, (i) => `acc[${i}] += dotW(v${Math.floor(i / rows)}, x${i % rows});`)}
  }`;
  const rounds = Array.from({ length: Math.ceil(parts / red) }, (_, q) => q * red).map((j0) => `
  ${unroll(Math.min(red, parts - j0), (j) => `red[lid * (RED + 1u) + ${j}u] = acc[${j0 + j}];`)}
  workgroupBarrier();
  finish(lid, o0, ${j0}u);
  workgroupBarrier();`);
  return /* wgsl */ `
const ROWS = ${rows}u;  // activation rows, 1..8
const NR = ${nr}u;      // output rows per invocation (register blocking)
const RED = ${red}u;    // partial sums reduced per round
override WG: u32 = 256u;  // invocations per workgroup
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
  var c0 = lid % TPR;
  for (; c0 + ${unrollK - 1}u * TPR < params.chunks; c0 += ${unrollK}u * TPR) {
    ${unroll(unrollK, (u) => chunk(`c0 + ${u}u * TPR`))}
  }
  for (; c0 < params.chunks; c0 += TPR) ${chunk("c0")}
  ${rounds.join("")}
}
`;
}

const GEMM_WGSL = /* wgsl */ `
override TM: u32 = 64u;  // activation rows per tile
override TN: u32 = 64u;  // output columns per tile
override TK: u32 = 16u;  // K columns staged per step (even)
override WG: u32 = (TM / 4u) * (TN / 4u);

@group(0) @binding(1) var<storage, read> x: array<f32>;  // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> w: array<u32>;  // (outDim, inDim) f32 bits or f16 pairs

// [k][m / 4] and [k][n / 4]; the extra vec4 per k row makes the staging stores bank-conflict free.
var<workgroup> xs: array<vec4f, TK * (TM / 4u + 1u)>;
var<workgroup> ws: array<vec4f, TK * (TN / 4u + 1u)>;

fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  let K = params.inDim;
  // e → (row % 4, k, row / 4): four neighbours read four rows at one k, 32-byte runs per row.
  for (var e = lid; e < TM * TK; e += WG) {
    let k = (e / 4u) % TK;
    let m = (e / (4u * TK)) * 4u + e % 4u;
    var v = 0.0;
    if (m0 + m < params.rows && k0 + k < K) { v = x[(params.xRowOffset + m0 + m) * K + k0 + k]; }
    xs[k * (TM / 4u + 1u) + m / 4u][m % 4u] = v;
  }
  let perLoad = select(1u, 2u, F16);
  for (var e = lid; e < TN * TK / perLoad; e += WG) {
    let k = ((e / 4u) % (TK / perLoad)) * perLoad;
    let n = (e / (4u * TK / perLoad)) * 4u + e % 4u;
    var v = vec2f();
    if (n0 + n < params.outDim && k0 + k < K) {
      let i = (n0 + n) * K + k0 + k;
      if (F16) { v = unpack2x16float(w[i / 2u]); } else { v.x = bitcast<f32>(w[i]); }
    }
    ws[k * (TN / 4u + 1u) + n / 4u][n % 4u] = v.x;
    if (F16) { ws[(k + 1u) * (TN / 4u + 1u) + n / 4u][n % 4u] = v.y; }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= ceilDivU(params.rows, TM) * params.tilesN) { return; }
  let m0 = (tile / params.tilesN) * TM;
  let n0 = (tile % params.tilesN) * TN;
  let tx = lid % (TN / 4u);
  let ty = lid / (TN / 4u);
  var acc: array<vec4f, 4>;  // rows m0 + 4ty + i, columns n0 + 4tx .. +3
  for (var k0 = 0u; k0 < params.inDim; k0 += TK) {
    stage(lid, m0, n0, k0);
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a = xs[k * (TM / 4u + 1u) + ty];
      let b = ws[k * (TN / 4u + 1u) + tx];
      acc[0] = fma(vec4f(a.x), b, acc[0]);
      acc[1] = fma(vec4f(a.y), b, acc[1]);
      acc[2] = fma(vec4f(a.z), b, acc[2]);
      acc[3] = fma(vec4f(a.w), b, acc[3]);
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = m0 + 4u * ty + i;
    for (var j = 0u; j < 4u; j++) {
      let o = n0 + 4u * tx + j;
      if (r < params.rows && o < params.outDim) { store(r, o, acc[i][j]); }
    }
  }
}

fn ceilDivU(a: u32, b: u32) -> u32 { return (a + b - 1u) / b; }
`;

/** What a model asks for: the weight dtype and whether the product is added onto y. */
export interface MatmulSpec {
  weightType: "f32" | "f16";
  /** y += x·Wᵀ (residual epilogue) instead of y = x·Wᵀ. */
  accumulate: boolean;
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

/** Which shader build: the GEMV with 16-byte or scalar loads, or the tiled GEMM. */
export type MatmulShaderSpec =
  | { path: "gemv"; vec4: boolean; rows: number; nr: number; unrollK: number }
  | { path: "gemm" };

/** Row counts up to this run the GEMV; larger ones the tiled GEMM. */
export const GEMV_MAX_ROWS = 8;

/** Every spec the kernel supports, for benchmarks and self-tests. */
export const MATMUL_SPECS: readonly MatmulSpec[] = [
  { weightType: "f32", accumulate: false },
  { weightType: "f32", accumulate: true },
  { weightType: "f16", accumulate: false },
  { weightType: "f16", accumulate: true },
];

/** How a bound matmul runs: exported so a benchmark can report the variant and work it timed. */
export interface MatmulPlan {
  shader: MatmulShaderSpec;
  /** Values for the shader's `override` constants. */
  constants: Record<string, number>;
  /** Workgroups before the 2-D split. */
  workgroups: number;
  /** Params.chunks (GEMV) */
  chunks: number;
  /** Params.tilesN (GEMM) */
  tilesN: number;
}

/**
 * Builds the WGSL of one path. Only the binding element types differ by `spec`; dtype, accumulation,
 * tiles and row counts are `override` constants (see {@link planMatmul}).
 * @param spec the path and, for the GEMV, the load width
 * @returns WGSL source with entry point `main`
 */
export function matmulShader(spec: MatmulShaderSpec): string {
  if (spec.path === "gemm") return PARAMS + GEMM_WGSL;
  return PARAMS + GEMV_LAYOUTS[spec.vec4 ? "vec4" : "scalar"] + gemvWgsl(spec.rows, spec.nr, spec.unrollK);
}

/**
 * Picks the path, load width, tile constants and dispatch size for one shape.
 * @param spec weight dtype and accumulation
 * @param shape rows, inDim, outDim
 * @returns the plan `createMatmul(...).bind` uses
 */
export function planMatmul(
  spec: MatmulSpec,
  { rows, inDim, outDim }: { rows: number; inDim: number; outDim: number },
): MatmulPlan {
  const f16 = spec.weightType === "f16";
  const common = { F16: f16 ? 1 : 0, ACC: spec.accumulate ? 1 : 0 };
  if (rows <= GEMV_MAX_ROWS) {
    const vec4 = inDim % (f16 ? 8 : 4) === 0;
    const perLoad = (vec4 ? 4 : 1) * (f16 ? 2 : 1);
    const g = { WG: 256, TPR: 32 };
    const nr = 4;
    return {
      shader: { path: "gemv", vec4, rows, nr, unrollK: 1 },
      constants: { ...common, ...g },
      workgroups: ceilDiv(outDim, (g.WG / g.TPR) * nr),
      chunks: inDim / perLoad,
      tilesN: 0,
    };
  }
  // Short prefills waste less of a 32-row tile.
  const t = { TM: rows <= 32 ? 32 : 64, TN: 64, TK: 16 };
  const tilesN = ceilDiv(outDim, t.TN);
  return {
    shader: { path: "gemm" },
    constants: { ...common, ...t },
    workgroups: ceilDiv(rows, t.TM) * tilesN,
    chunks: 0,
    tilesN,
  };
}

/**
 * Builds the dense matmul kernel for one weight dtype and epilogue.
 * @param gpu the device
 * @param spec weight dtype and accumulation
 * @returns a kernel whose `bind` checks shapes, picks GEMV or GEMM and fixes the bind group
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
      const plan = planMatmul(spec, { rows, inDim, outDim });
      const pipeline = getPipeline(gpu, {
        name: `matmul_${plan.shader.path}`,
        code: matmulShader(plan.shader),
        constants: plan.constants,
        bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
        spec: plan.shader,
      });
      const params = uniformParams(gpu, [
        ["u32", rows],
        ["u32", inDim],
        ["u32", outDim],
        ["u32", xRowOffset],
        ["u32", yStride],
        ["u32", yColOffset],
        ["u32", plan.chunks],
        ["u32", plan.tilesN],
      ], "matmul params");
      const bindGroup = gpu.device.createBindGroup({
        label: "matmul",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, x, w, y].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const [gx, gy] = dispatch2d(gpu, plan.workgroups);
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(gx, gy);
        },
      };
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
