/**
 * The register-tiled GEMM core of dense, affine and LUT weights: TM×TN output tiles
 * from (TM/8)·(TN/8) invocations, each owning an 8×8 register tile as two 4-row × two 4-column blocks half a
 * tile apart (conflict-free vec4 reads of workgroup memory). Per k an invocation reads 4 vec4 and issues 64
 * FMAs; the 16 accumulator lines are written out one by one (a loop over them spilled on the H100).
 *
 * A format supplies its bindings and a `stage(lid, m0, n0, k0)` function that fills, for K columns
 * k0 .. k0 + TK − 1 (zero past inDim or past the rows), the workgroup tiles
 *   xs[k * XS + m / 4][m % 4] = T(x[m0 + m, k0 + k])          (activations)
 *   ws[k * WS + n / 4][n % 4] = T(W[n0 + n, k0 + k])          (weights, decoded once per tile)
 * where T is the tile's scalar type (`alias T`, f32 or f16), or the pipelined build's load/put functions
 * ({@link GemmPipe}). The core provides TM, TN, TK, WG, XS, WS, xs, ws, T, `pairOf` and `put`, and needs
 * `params.rows`, `params.inDim`, `params.outDim`, `params.tilesN` and a `store(row, col, value)`.
 *
 * f16 build ({@link GemmMath} "f16", needs `shader-f16`; the shader must start with {@link F16_ENABLE}): the
 * tiles hold f16 (half the workgroup memory and its traffic) and the 64 products per k are packed f16 FMAs
 * into f16 partial sums, which are added to f32 accumulators every GEMM_F16_FLUSH k; {@link
 * gemmF16ErrorBound} is the worst-case error the tests hold every output to. On the H100 (BENCHMARKS.md,
 * "prefill GEMMs in f16" and "f16 builds re-timed") it gains 0–17 % over f32 FMAs even with the staging
 * written out (dense +2 %, affine +5 % with TK 32, LUT +17 %: the core is not FMA-bound), and it moved a
 * tiny quantized model's prefill logits by up to 3e-2 against f32, so every GEMM defaults to f32 and f16 is
 * opt-in (`gemmMath: "f16"` in the kernels' specs).
 */
import { unroll } from "../core/mod.ts";

/** Arithmetic of the GEMM's inner loop: f32 FMAs, or packed f16 FMAs with periodic f32 accumulation. */
export type GemmMath = "f32" | "f16";

/** The directive an f16 build's shader text must begin with. */
export const F16_ENABLE = "enable f16;\n";

/** k steps summed in f16 before the partial sums are added to the f32 accumulators (f16 build). */
export const GEMM_F16_FLUSH = 16;

/**
 * A pipelined build (two tiles of each kind, one barrier per K step): each invocation issues the global
 * loads of step s + 1 into registers before the FMAs of step s and writes them to the other tile after, so
 * load latency hides behind the math. The format then supplies, instead of `stage`,
 *   fn loadX(e: u32, m0: u32, k0: u32) -> vec4f      the e-th 16-byte activation load (TM·TK/4 per step)
 *   fn loadW(e: u32, n0: u32, k0: u32) -> WR          the e-th weight load (wTasks per step)
 *   fn putW(base: u32, e: u32, v: WR)                 decodes it into ws from vec4 `base` on
 *   fn pipeStart(lid: u32, n0: u32)                   once before the first load (a barrier follows)
 * with loads past the matrix returning zeros (activations laid out as params.rows × params.inDim from
 * params.xRowOffset can take {@link GEMM_PIPE_LOAD_X}). The core defines `putX`, which writes an activation
 * load into xs (its layout). `xl`, `wl` are the loads per invocation (whole numbers).
 */
/** `loadX` of the pipelined build for row-major activations: params.rows × params.inDim from params.xRowOffset. */
export const GEMM_PIPE_LOAD_X = /* wgsl */ `
fn loadX(e: u32, m0: u32, k0: u32) -> vec4f {
  let m = e / (TK / 4u);
  let k = (e % (TK / 4u)) * 4u;
  if (m0 + m < params.rows && k0 + k < params.inDim) {
    return x4[((params.xRowOffset + m0 + m) * params.inDim + k0 + k) / 4u];
  }
  return vec4f();
}
`;

/**
 * `loadX` for activations of any width (`x`, f32 scalars): four checked scalar loads where 16-byte loads
 * would straddle rows (inDim % 4 ≠ 0).
 */
export const GEMM_PIPE_LOAD_X_SCALAR = /* wgsl */ `
fn loadX(e: u32, m0: u32, k0: u32) -> vec4f {
  let m = e / (TK / 4u);
  let k = k0 + (e % (TK / 4u)) * 4u;
  var v = vec4f();
  if (m0 + m < params.rows) {
    let row = (params.xRowOffset + m0 + m) * params.inDim;
    ${unroll(4, (q) => `if (k + ${q}u < params.inDim) { v[${q}] = x[row + k + ${q}u]; }`)}
  }
  return v;
}
`;

/** An activation load's write into xs (tile `base`), for the pipelined build and stages that reuse it. */
const PUT_X = /* wgsl */ `
fn putX(base: u32, e: u32, v: vec4f) {
  let m = e / (TK / 4u);
  let k = (e % (TK / 4u)) * 4u;
  let t = vec4<T>(v);
  ${unroll(4, (q) => `xs[base + (k + ${q}u) * XS + m / 4u][m % 4u] = t[${q}];`)}
}
`;

export interface GemmPipe {
  xl: number;
  wl: number;
}

/** One build of the core: its arithmetic, K columns per step (written out), and the pipelined loads if any. */
export interface GemmBuild {
  math: GemmMath;
  tk: number;
  pipe?: GemmPipe;
}

/**
 * @param staging the format's bindings and its `stage` function (WGSL), or the pipelined functions
 * @param build the inner loop's arithmetic (the f16 build needs {@link F16_ENABLE} at the shader's start),
 * K columns per step and the loads per invocation of the pipelined build ({@link GemmPipe}; absent: `stage`)
 * @returns the rest of the shader: overrides, workgroup tiles, `put` and entry point `main`
 */
export function gemmCoreWgsl(staging: string, { math, tk, pipe }: GemmBuild): string {
  const f16 = math === "f16";
  const sum = f16 ? "h" : "acc";
  const fmas = unroll(16, (i) => {
    const [a, c, h] = [Math.floor(i / 8), "xyzw"[Math.floor(i / 2) % 4], i % 2];
    return `${sum}[${i}] = fma(vec4<T>(a${a}.${c}), b${h}, ${sum}[${i}]);`;
  });
  const puts = unroll(16, (i) => {
    const [a, r, h] = [Math.floor(i / 8), Math.floor(i / 2) % 4, i % 2];
    return `put(m0 + ${a}u * (TM / 2u) + 4u * ty + ${r}u, n0 + ${h}u * (TN / 2u) + 4u * tx, acc[${i}]);`;
  });
  // The k steps are written out: the H100's driver does not unroll naga's loops, and the loop ran at half
  // the speed (docs/webgpu.md §6).
  const step = (k: number) =>
    /* wgsl */ `{
      let a0 = xs[xb + ${k}u * XS + ty];
      let a1 = xs[xb + ${k}u * XS + ty + TM / 8u];
      let b0 = ws[wb + ${k}u * WS + tx];
      let b1 = ws[wb + ${k}u * WS + tx + TN / 8u];
      ${fmas}
    }`;
  if (f16 && tk % GEMM_F16_FLUSH !== 0) {
    throw new Error(`Cannot build the f16 GEMM core: tk ${tk} is no multiple of ${GEMM_F16_FLUSH}`);
  }
  // f16: GEMM_F16_FLUSH k per f16 partial, then one f32 add per accumulator (the partials are zeroed by
  // hand, once per flush).
  const flush = unroll(16, (i) => `acc[${i}] += vec4f(h[${i}]); h[${i}] = vec4<f16>();`);
  const inner = unroll(
    tk,
    (k) => step(k) + (f16 && (k + 1) % GEMM_F16_FLUSH === 0 ? `\n    ${flush}` : ""),
    "\n    ",
  );
  return /* wgsl */ `
alias T = ${f16 ? "f16" : "f32"};  // scalar type of the staged tiles and of the products
override TM: u32 = 128u;  // activation rows per tile, multiple of 8
override TN: u32 = 128u;  // output columns per tile, multiple of 8
const TK: u32 = ${tk}u;   // K columns staged per step (the k steps are written out)
override WG: u32 = (TM / 8u) * (TN / 8u);
override XS: u32 = TM / 4u + 1u;  // vec4 row strides of the staged tiles; the +1 spreads banks
override WS: u32 = TN / 4u + 1u;

var<workgroup> xs: array<vec4<T>, ${pipe ? "2u * " : ""}TK * XS>;  // ${pipe ? "[tile]" : ""}[k][m / 4]
var<workgroup> ws: array<vec4<T>, ${pipe ? "2u * " : ""}TK * WS>;  // ${
    pipe ? "[tile]" : ""
  }[k][n / 4], decoded

${staging}
${PUT_X}
// Two f16 weights packed in a u32 (low half first), as tile values (naga cannot bitcast u32 to vec2<f16>).
fn pairOf(u: u32) -> vec2<T> { return vec2<T>(unpack2x16float(u)); }

fn put(r: u32, n: u32, v: vec4f) {
  if (r >= params.rows) { return; }
  ${unroll(4, (j) => `if (n + ${j}u < params.outDim) { store(r, n + ${j}u, v[${j}]); }`)}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= (params.rows + TM - 1u) / TM * params.tilesN) { return; }
  let m0 = (tile / params.tilesN) * TM;
  let n0 = (tile % params.tilesN) * TN;
  let tx = lid % (TN / 8u);
  let ty = lid / (TN / 8u);
  var acc: array<vec4f, 16>;  // [row block a][row r][column block h]${
    f16 ? "\n  var h: array<vec4<f16>, 16>;  // f16 partial sums, like acc" : ""
  }
  ${pipe ? pipelinedLoop(pipe, inner) : plainLoop(inner)}
  ${puts}
}
`;
}

/** Workgroup bytes of the two staged tiles for one tiling (f16 tiles take half). */
export function gemmWorkgroupBytes(
  { tm, tn, tk }: { tm: number; tn: number; tk: number },
  math: GemmMath = "f32",
  pipelined = false,
): number {
  return tk * (tm / 4 + 1 + tn / 4 + 1) * (math === "f16" ? 8 : 16) * (pipelined ? 2 : 1);
}

/**
 * Loads per invocation of a pipelined build whose format makes 16-byte activation loads and one weight
 * load per `perLoad` values of a row (8: f16 pairs or codes; 4: f32), or undefined when the tiles do not
 * divide evenly among the invocations.
 */
export function gemmPipeFor(
  { tm, tn, tk }: { tm: number; tn: number; tk: number },
  perLoad = 8,
): GemmPipe | undefined {
  const wg = (tm / 8) * (tn / 8);
  const pipe = { xl: (tm * tk) / 4 / wg, wl: (tn * tk) / perLoad / wg };
  return Number.isInteger(pipe.xl) && Number.isInteger(pipe.wl) && pipe.xl >= 1 && pipe.wl >= 1
    ? pipe
    : undefined;
}

/** The GEMM arithmetic a spec asks for: f32 unless f16 is asked for (which needs `shader-f16`). */
export function gemmMathFor(asked: GemmMath | undefined, hasF16: boolean): GemmMath {
  if (asked === "f16" && !hasF16) throw new Error("Cannot use the f16 GEMM: the device lacks shader-f16");
  return asked ?? "f32";
}

/**
 * Worst-case |error| of one output of the f16 build against exact arithmetic on the unrounded inputs, as
 * the tests check it. With u = 2^-11 (f16 unit roundoff): x and w are each rounded to f16 (factor
 * (1 + u)² on every product), a partial sums at most FLUSH products with one rounding per fused
 * multiply-add (γ_FLUSH = FLUSH·u / (1 − FLUSH·u) of Σ|x̂·ŵ|), the f32 sums of ⌈K / FLUSH⌉ partials add
 * γ_{⌈K/FLUSH⌉+1} in 2^-24, values in f16's subnormal range lose at most 2^-25 absolute per operation,
 * and the f32 store (or += onto y) rounds once more.
 * @param absSum Σ_k |x_k|·|w_k| of the output (exact inputs)
 * @param k the reduction length (inDim)
 * @param value the exact output (including any accumulated y)
 * @returns the bound on |computed − exact|
 */
export function gemmF16ErrorBound(absSum: number, k: number, value: number): number {
  const u = 2 ** -11;
  const gamma = (n: number, unit: number) => (n * unit) / (1 - n * unit);
  const rel = (1 + u) ** 2 * (1 + gamma(GEMM_F16_FLUSH, u)) *
    (1 + gamma(Math.ceil(k / GEMM_F16_FLUSH) + 1, 2 ** -24));
  return (rel - 1) * absSum + 2 * k * 2 ** -25 + 2 ** -23 * Math.abs(value);
}

/** The K loop of the plain build: stage, barrier, math, barrier. */
function plainLoop(inner: string): string {
  return /* wgsl */ `let xb = 0u;
  let wb = 0u;
  for (var k0 = 0u; k0 < params.inDim; k0 += TK) {
    stage(lid, m0, n0, k0);
    workgroupBarrier();${inner}
    workgroupBarrier();
  }`;
}

/** The K loop of the pipelined build: loads of the next step in flight during this step's math. */
function pipelinedLoop({ xl, wl }: GemmPipe, inner: string): string {
  const loads = (k0: string, decl: string) =>
    unroll(xl, (i) => `${decl}xr${i} = loadX(lid + ${i}u * WG, m0, ${k0});`) + "\n    " +
    unroll(wl, (i) => `${decl}wr${i} = loadW(lid + ${i}u * WG, n0, ${k0});`);
  const puts = (buf: string) =>
    unroll(xl, (i) => `putX(${buf} * TK * XS, lid + ${i}u * WG, xr${i});`) + "\n    " +
    unroll(wl, (i) => `putW(${buf} * TK * WS, lid + ${i}u * WG, wr${i});`);
  return /* wgsl */ `pipeStart(lid, n0);
  workgroupBarrier();
  {
    ${loads("0u", "let ")}
    ${puts("0u")}
  }
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = 0u; k0 < params.inDim; k0 += TK) {
    ${loads("k0 + TK", "let ")}
    let xb = buf * TK * XS;
    let wb = buf * TK * WS;${inner}
    ${puts("(1u - buf)")}
    workgroupBarrier();
    buf = 1u - buf;
  }`;
}

/**
 * Build defaults (H100, BENCHMARKS.md "the GEMMs' k steps written out"): with the k steps written out the
 * pipelined build ran as fast as the plain one at 2048 rows and faster at 512 (dense 20.8 vs 17.8 TFLOP/s,
 * affine 20.5 vs 17.7, LUT 20.3 vs 16.1), so every format pipelines where its tiles allow; TK 32 beat 16 for
 * f16 tiles by 4 % (measured before).
 */
export const GEMM_DEFAULTS = { pipelined: { dense: true, affine: true, lut: true }, f16Tk: 32 };

/**
 * K per step and pipelining of one affine or LUT GEMM build: the tune's values where given, else the first
 * that fits the device's workgroup memory of: pipelined (if the format's default) with TK 32 for f16
 * tiles, then TK 16; the plain build with the same K steps.
 * @param t tune overrides
 * @param tiles the output tile
 * @param math the arithmetic
 * @param maxBytes the device's workgroup memory
 * @param options what the format adds to workgroup memory (LUTs) and its pipelining default
 */
export function gemmStaging(
  t: { tk?: number; pipelined?: boolean },
  { tm, tn }: { tm: number; tn: number },
  math: GemmMath,
  maxBytes: number,
  { extraBytes = 0, pipelined = false }: { extraBytes?: number; pipelined?: boolean } = {},
): { tk: number; pipe: GemmPipe | undefined } {
  const pipes = t.pipelined !== undefined ? [t.pipelined] : [pipelined, false];
  const tks = t.tk !== undefined ? [t.tk] : math === "f16" ? [GEMM_DEFAULTS.f16Tk, 16] : [16];
  const builds = pipes.flatMap((p) =>
    tks.map((tk) => ({ tk, pipe: p ? gemmPipeFor({ tm, tn, tk }) : undefined }))
  );
  const fits = ({ tk, pipe }: (typeof builds)[number]) =>
    gemmWorkgroupBytes({ tm, tn, tk }, math, pipe !== undefined) + extraBytes <= maxBytes;
  return builds.find(fits) ?? builds[builds.length - 1];
}
