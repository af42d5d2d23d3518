/**
 * `deno task bench:gemm-sweep [--m 2048] [--n 4096] [--k 4096] [--variants v1,v2,…]`: a laboratory for
 * the register-tiled GEMM core (kernels/matmul/gemm_core_wgsl.ts). It times stand-alone f32 GEMMs
 * C = A·Bᵀ (A: M×K activations, B: N×K weights, no bounds checks: every size a multiple of its tile) in
 * builds that differ in one thing at a time, to find what holds the core near 20 TFLOP/s on the H100.
 * Each result is checked at 64 sampled outputs against f64 sums.
 *
 * A variant is written t<TM>x<TN>k<TK>r<RM>x<RN> then options:
 *   -a<layout>, -b<layout>  how A and B sit in memory and are staged: `rm` row-major, 16-byte loads along K,
 *                            four scalar workgroup stores each (the core's way); `rm4` row-major, a 4×4
 *                            block per task transposed in registers into four vec4 stores; `km` K-major
 *                            (the transpose already in memory: one vec4 store per load, the Hessian's way)
 *   -p   pipelined (double-buffered tiles, one barrier per K step)
 *   -u   the k loop written out (no loop for the driver to unroll)
 *   -n   named accumulators instead of an array
 *   -s<pad>  vec4 padding of the tiles' rows (default 1)
 * and the core's habits, to find which of them costs: -h B as f16 pairs (`rm` staging: one 16-byte load of
 * 8 values, 8 scalar stores), -g bounds checks on every load, -e the core's epilogue (one checked scalar
 * store per output through a function), -o the tile sizes as pipeline-overridable constants.
 *
 * `core` and `core-h` (f32 or f16 weights), with `-p` pipelined, time the real dense GEMM
 * (kernels/matmul/matmul.ts, path "gemm", f32 arithmetic) on the same data, for comparison; `corex` is the
 * core's shader (gemm_core_wgsl.ts, 128×128×16, f32) over this file's plain unchecked staging.
 */
import { parseArgs } from "node:util";
import { describeGpu, f16BitsToF32, f32ToF16Bits, requestGpu } from "../kernels/core/mod.ts";
import { unroll } from "../kernels/core/mod.ts";
import { timePass } from "./gpu_timer.ts";
import { createMatmul, gemmCoreWgsl } from "../kernels/matmul/mod.ts";

/** `corex`: the core's shader over unchecked row-major staging, in this file's bindings. */
function corexShader(): string {
  const put = (tile: string, stride: string, v: string) =>
    unroll(4, (q) => `${tile}[(k + ${q}u) * ${stride} + r / 4u][r % 4u] = ${v}[${q}];`, "\n    ");
  // Staging goes in the core's text, after its overrides: naga panics on a function that uses an override
  // declared after it.
  return gemmCoreWgsl(
    `
@group(0) @binding(0) var<storage, read> A: array<vec4f>;
@group(0) @binding(1) var<storage, read> B: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> C: array<vec4f>;
struct Params { rows: u32, outDim: u32, inDim: u32, tilesN: u32 }
@group(0) @binding(3) var<uniform> params: Params;
fn store(r: u32, o: u32, v: f32) { let i = r * params.outDim + o; C[i / 4u][i % 4u] = v; }
fn stage(lid: u32, m0: u32, n0: u32, k0: u32) {
  for (var e = lid; e < TM * TK / 4u; e += WG) {
    let r = e / (TK / 4u);
    let k = (e % (TK / 4u)) * 4u;
    let v = A[((m0 + r) * params.inDim + k0 + k) / 4u];
    ${put("xs", "XS", "v")}
  }
  for (var e = lid; e < TN * TK / 4u; e += WG) {
    let r = e / (TK / 4u);
    let k = (e % (TK / 4u)) * 4u;
    let v = B[((n0 + r) * params.inDim + k0 + k) / 4u];
    ${put("ws", "WS", "v")}
  }
}
`,
    { math: "f32", tk: 16 },
  );
}

type Layout = "rm" | "rm4" | "km";
interface Variant {
  name: string;
  tm: number;
  tn: number;
  tk: number;
  rm: number;
  rn: number;
  a: Layout;
  b: Layout;
  pipe: boolean;
  unrollK: boolean;
  named: boolean;
  pad: number;
  f16: boolean;
  guard: boolean;
  epilogue: boolean;
  overrides: boolean;
}

function parseVariant(name: string): Variant {
  const m = /^t(\d+)x(\d+)k(\d+)r(\d+)x(\d+)((?:-[a-z0-9]+)*)$/.exec(name);
  if (!m) throw new Error(`Invalid variant "${name}"`);
  const opts = m[6].split("-").filter(Boolean);
  const layout = (p: string): Layout => {
    const o = opts.find((o) => o.startsWith(p) && ["rm", "rm4", "km"].includes(o.slice(1)));
    return (o?.slice(1) ?? "rm") as Layout;
  };
  const pad = opts.find((o) => /^s\d+$/.test(o));
  return {
    name,
    tm: +m[1],
    tn: +m[2],
    tk: +m[3],
    rm: +m[4],
    rn: +m[5],
    a: layout("a"),
    b: layout("b"),
    pipe: opts.includes("p"),
    unrollK: opts.includes("u"),
    named: opts.includes("n"),
    pad: pad ? +pad.slice(1) : 1,
    f16: opts.includes("h"),
    guard: opts.includes("g"),
    epilogue: opts.includes("e"),
    overrides: opts.includes("o"),
  };
}

/** Staging of one operand: its tasks per K step, load (to registers) and put (to the tile). */
function operand(
  id: "X" | "W",
  layout: Layout,
  t: number,
  tk: number,
  buf: string,
  dim: string,
  { f16 = false, guard = false } = {},
): { tasks: number; fns: string; regType: string } {
  const tile = id === "X" ? "xs" : "ws";
  const stride = id === "X" ? "XS" : "WS";
  const check = (r: string, k: string) => guard ? `if (r0 + ${r} < ${dim} && k0 + ${k} < dims.z) ` : "";
  if (f16) {
    if (layout !== "rm") throw new Error("f16 weights: rm staging only");
    return {
      tasks: (t * tk) / 8,
      regType: "vec4u",
      fns: `
fn load${id}(e: u32, r0: u32, k0: u32) -> vec4u {
  let r = e / ${tk / 8}u;
  let k = (e % ${tk / 8}u) * 8u;
  var u = vec4u();
  ${check("r", "k")}{ u = ${buf}H[((r0 + r) * dims.z + k0 + k) / 8u]; }
  return u;
}
fn put${id}(base: u32, e: u32, u: vec4u) {
  let r = e / ${tk / 8}u;
  let k = (e % ${tk / 8}u) * 8u;
  for (var q = 0u; q < 4u; q++) {
    let pair = unpack2x16float(u[q]);
    ${tile}[base + (k + 2u * q) * ${stride} + r / 4u][r % 4u] = pair.x;
    ${tile}[base + (k + 2u * q + 1u) * ${stride} + r / 4u][r % 4u] = pair.y;
  }
}`,
    };
  }
  if (layout === "rm") {
    return {
      tasks: (t * tk) / 4,
      regType: "vec4f",
      fns: `
fn load${id}(e: u32, r0: u32, k0: u32) -> vec4f {
  let r = e / ${tk / 4}u;
  let k = (e % ${tk / 4}u) * 4u;
  var v = vec4f();
  ${check("r", "k")}{ v = ${buf}[((r0 + r) * dims.z + k0 + k) / 4u]; }
  return v;
}
fn put${id}(base: u32, e: u32, v: vec4f) {
  let r = e / ${tk / 4}u;
  let k = (e % ${tk / 4}u) * 4u;
  ${unroll(4, (q) => `${tile}[base + (k + ${q}u) * ${stride} + r / 4u][r % 4u] = v[${q}];`)}
}`,
    };
  }
  if (layout === "rm4") {
    return {
      tasks: (t / 4) * (tk / 4),
      regType: "array<vec4f, 4>",
      fns: `
fn load${id}(e: u32, r0: u32, k0: u32) -> array<vec4f, 4> {
  let r = (e / ${tk / 4}u) * 4u;
  let k = (e % ${tk / 4}u) * 4u;
  let at = ((r0 + r) * dims.z + k0 + k) / 4u;
  let s = dims.z / 4u;
  return array<vec4f, 4>(${buf}[at], ${buf}[at + s], ${buf}[at + 2u * s], ${buf}[at + 3u * s]);
}
fn put${id}(base: u32, e: u32, v: array<vec4f, 4>) {
  let r = (e / ${tk / 4}u) * 4u;
  let k = (e % ${tk / 4}u) * 4u;
  ${
        unroll(4, (q) =>
          `${tile}[base + (k + ${q}u) * ${stride} + r / 4u] = vec4f(v[0][${q}], v[1][${q}], v[2][${q}], v[3][${q}]);`)
      }
}`,
    };
  }
  return {
    tasks: (t * tk) / 4,
    regType: "vec4f",
    fns: `
fn load${id}(e: u32, r0: u32, k0: u32) -> vec4f {
  let k = e / ${t / 4}u;
  let r = (e % ${t / 4}u) * 4u;
  return ${buf}[((k0 + k) * ${dim} + r0 + r) / 4u];
}
fn put${id}(base: u32, e: u32, v: vec4f) {
  let k = e / ${t / 4}u;
  let r = (e % ${t / 4}u) * 4u;
  ${tile}[base + k * ${stride} + r / 4u] = v;
}`,
  };
}

function shader(v: Variant): { code: string; wg: number } {
  const wg = (v.tm / v.rm) * (v.tn / v.rn);
  const ra = v.rm / 4, rb = v.rn / 4;
  const x = operand("X", v.a, v.tm, v.tk, "A", "dims.x", { guard: v.guard });
  const w = operand("W", v.b, v.tn, v.tk, "B", "dims.y", { guard: v.guard, f16: v.f16 });
  const accs: [number, number, number][] = [];
  for (let a = 0; a < ra; a++) for (let r = 0; r < 4; r++) for (let h = 0; h < rb; h++) accs.push([a, r, h]);
  const acc = ([a, r, h]: [number, number, number]) =>
    v.named ? `c${a}_${r}_${h}` : `acc[${(a * 4 + r) * rb + h}]`;
  const step = (k: string) =>
    unroll(ra, (a) => `let a${a} = xs[xb + (${k}) * XS + ${a}u * ${v.tm / v.rm}u + ty];`) + "\n    " +
    unroll(rb, (h) => `let b${h} = ws[wb + (${k}) * WS + ${h}u * ${v.tn / v.rn}u + tx];`) + "\n    " +
    accs.map((c) => `${acc(c)} = fma(vec4f(a${c[0]}[${c[1]}]), b${c[2]}, ${acc(c)});`).join("\n    ");
  const inner = v.unrollK
    ? unroll(v.tk, (k) => `{\n    ${step(`${k}u`)}\n    }`)
    : `for (var k = 0u; k < ${v.tk}u; k++) {\n    ${step("k")}\n    }`;
  const decl = v.named
    ? accs.map((c) => `var ${acc(c)}: vec4f;`).join("\n  ")
    : `var acc: array<vec4f, ${accs.length}>;`;
  const stores = accs.map(([a, r, h]) => {
    const row = `m0 + 4u * (${a}u * ${v.tm / v.rm}u + ty) + ${r}u`;
    const col = `n0 + 4u * (${h}u * ${v.tn / v.rn}u + tx)`;
    return v.epilogue
      ? `put(${row}, ${col}, ${acc([a, r, h])});`
      : `C[((${row}) * dims.y + ${col}) / 4u] = ${acc([a, r, h])};`;
  }).join("\n  ");
  let loop: string;
  if (v.pipe) {
    // Tasks per invocation; the last load of an operand with fewer tasks than that is guarded.
    const [xl, wl] = [Math.ceil(x.tasks / wg), Math.ceil(w.tasks / wg)];
    if (x.tasks % wg && x.tasks > wg || w.tasks % wg && w.tasks > wg) throw new Error("tasks do not divide");
    const guard = (tasks: number, i: number) =>
      (i + 1) * wg > tasks ? `if (lid + ${i * wg}u < ${tasks}u) ` : "";
    const loadsOf = (id: string, r: string, o: { tasks: number; regType: string }, n: number, k0: string) =>
      unroll(
        n,
        (i) =>
          `var ${r}${i}: ${o.regType};\n    ${guard(o.tasks, i)}{ ${r}${i} = load${id}(lid + ${i * wg}u, ${
            id === "X" ? "m0" : "n0"
          }, ${k0}); }`,
        "\n    ",
      );
    const loads = (k0: string) => loadsOf("X", "xr", x, xl, k0) + "\n    " + loadsOf("W", "wr", w, wl, k0);
    const puts = (b: string) =>
      unroll(
        xl,
        (i) => `${guard(x.tasks, i)}{ putX(${b} * ${v.tk}u * XS, lid + ${i * wg}u, xr${i}); }`,
        "\n    ",
      ) +
      "\n    " +
      unroll(
        wl,
        (i) => `${guard(w.tasks, i)}{ putW(${b} * ${v.tk}u * WS, lid + ${i * wg}u, wr${i}); }`,
        "\n    ",
      );
    loop = `{
    ${loads("0u")}
    ${puts("0u")}
  }
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = 0u; k0 < dims.z; k0 += ${v.tk}u) {
    let nk = min(k0 + ${v.tk}u, dims.z - ${v.tk}u);
    ${loads("nk")}
    let xb = buf * ${v.tk}u * XS;
    let wb = buf * ${v.tk}u * WS;
    ${inner}
    ${puts("(1u - buf)")}
    workgroupBarrier();
    buf = 1u - buf;
  }`;
  } else {
    loop = `let xb = 0u;
  let wb = 0u;
  for (var k0 = 0u; k0 < dims.z; k0 += ${v.tk}u) {
    for (var e = lid; e < ${x.tasks}u; e += ${wg}u) { putX(0u, e, loadX(e, m0, k0)); }
    for (var e = lid; e < ${w.tasks}u; e += ${wg}u) { putW(0u, e, loadW(e, n0, k0)); }
    workgroupBarrier();
    ${inner}
    workgroupBarrier();
  }`;
  }
  const nbuf = v.pipe ? 2 : 1;
  const code = `
${v.overrides ? "override" : "const"} XS: u32 = ${v.tm / 4 + v.pad}u;
${v.overrides ? "override" : "const"} WS: u32 = ${v.tn / 4 + v.pad}u;
@group(0) @binding(0) var<storage, read> A: array<vec4f>;
@group(0) @binding(1) var<storage, read> ${v.f16 ? "BH: array<vec4u>" : "B: array<vec4f>"};
@group(0) @binding(2) var<storage, read_write> C: array<vec4f>;
fn put(r: u32, n: u32, v: vec4f) {  // -e: the core's epilogue, one checked scalar store per output
  if (r >= dims.x) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (n + j < dims.y) { let i = r * dims.y + n + j; C[i / 4u][i % 4u] = v[j]; }
  }
}
@group(0) @binding(3) var<uniform> dims: vec4u;  // M, N, K, N / TN
var<workgroup> xs: array<vec4f, ${nbuf * v.tk * (v.tm / 4 + v.pad)}>;
var<workgroup> ws: array<vec4f, ${nbuf * v.tk * (v.tn / 4 + v.pad)}>;
${x.fns}
${w.fns}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m0 = (wid.x / dims.w) * ${v.tm}u;
  let n0 = (wid.x % dims.w) * ${v.tn}u;
  let tx = lid % ${v.tn / v.rn}u;
  let ty = lid / ${v.tn / v.rn}u;
  ${decl}
  ${loop}
  ${stores}
}
`;
  return { code, wg };
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    m: { type: "string", default: "2048" },
    n: { type: "string", default: "4096" },
    k: { type: "string", default: "4096" },
    reps: { type: "string", default: "10" },
    variants: {
      type: "string",
      default: [
        "t128x128k16r8x8",
        "t128x128k16r8x8-u",
        "t128x128k16r8x8-u-n",
        "t128x128k16r8x8-arm4-brm4-u",
        "t128x128k16r8x8-akm-bkm-u",
        "t128x128k16r8x8-arm4-brm4-u-p",
        "t128x128k16r8x8-akm-bkm-u-p",
        "t128x128k16r8x8-u-p",
        "t128x128k32r8x8-arm4-brm4-u-p",
        "t128x128k8r8x8-arm4-brm4-u-p",
        "t128x128k32r8x8-arm4-brm4-u",
        "t64x128k16r8x8-arm4-brm4-u",
        "t128x256k16r8x16-arm4-brm4-u",
        "t128x128k16r16x8-arm4-brm4-u",
        "t128x128k16r8x16-arm4-brm4-u",
        "t64x64k16r4x4-arm4-brm4-u",
      ].join(","),
    },
  },
});
const [M, N, K] = [+values.m, +values.n, +values.k];
const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot time kernels: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}; C = A·Bᵀ, M ${M}, N ${N}, K ${K}`);
const dev = gpu.device;

let seed = 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
const a = Float32Array.from({ length: M * K }, rand);
const b = Float32Array.from({ length: N * K }, rand);
const transpose = (src: Float32Array, rows: number, cols: number) => {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = src[r * cols + c];
  return t;
};
const upload = (data: Float32Array<ArrayBuffer>) => {
  const buf = dev.createBuffer({
    size: data.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  dev.queue.writeBuffer(buf, 0, data);
  return buf;
};
// B as f16 pairs for -h; the f64 check then uses B rounded to f16.
const bh = new Uint16Array(N * K);
for (let i = 0; i < bh.length; i++) bh[i] = f32ToF16Bits(b[i]);
const bRounded = Float32Array.from(bh, f16BitsToF32);
const bufs = {
  a: { rm: upload(a), km: upload(transpose(a, M, K)) },
  b: { rm: upload(b), km: upload(transpose(b, N, K)), h: upload(new Float32Array(bh.buffer)) },
};
const c = dev.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const read = dev.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const layout = dev.createBindGroupLayout({
  entries: [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "read-only-storage" } },
    { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: "read-only-storage" } },
    { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } },
    { binding: 3, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
  ],
});
const samples = Array.from({ length: 64 }, (_, i) => [(i * 977) % M, (i * 1531 + 7) % N]);

/** The real dense GEMM on the same data (`core[-h][-p]`). */
/** Worst |C − f64 sum| / Σ|a·b| over the sampled outputs of the last GEMM (B rounded to f16 for f16 builds). */
async function worstError(f16: boolean): Promise<number> {
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(c, 0, read, 0, M * N * 4);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  let worst = 0;
  for (const [i, j] of samples) {
    let sum = 0, abs = 0;
    for (let k = 0; k < K; k++) {
      const bv = f16 ? bRounded[j * K + k] : b[j * K + k];
      sum += a[i * K + k] * bv;
      abs += Math.abs(a[i * K + k] * bv);
    }
    worst = Math.max(worst, Math.abs(out[i * N + j] - sum) / abs);
  }
  return worst;
}

async function timeCore(name: string): Promise<void> {
  const f16 = name.includes("-h");
  const mm = createMatmul(gpu, {
    weightType: f16 ? "f16" : "f32",
    accumulate: false,
    path: "gemm",
    tune: { pipelined: name.includes("-p") },
  });
  const plan = mm.bind({ x: bufs.a.rm, w: f16 ? bufs.b.h : bufs.b.rm, y: c, rows: M, inDim: K, outDim: N });
  report(name, await timeReps((p) => plan.encode(p)), await worstError(f16));
}

/** Seconds per GEMM: one warm-up, then the best of three passes of `--reps` GEMMs each. */
async function timeReps(encode: (pass: GPUComputePassEncoder) => void): Promise<number> {
  const reps = Number(values.reps);
  await timePass(gpu, encode, 1);
  return (await timePass(gpu, (p) => {
    for (let i = 0; i < reps; i++) encode(p);
  }, 3)) / reps;
}

/** One result line; "WRONG" past 1e-5 of Σ|a·b|. */
function report(name: string, seconds: number, worst: number, extra = ""): void {
  console.log(
    `${name.padEnd(36)}${extra}  ${(seconds * 1e3).toFixed(3)} ms  ${
      ((2 * M * N * K) / seconds / 1e12).toFixed(1)
    } TFLOP/s  err/Σ|ab| ${worst.toExponential(1)}${worst > 1e-5 ? "  WRONG" : ""}`,
  );
}

/** A stand-alone build: its variant (tiles, layouts), WGSL, workgroup size and pipeline constants. */
function buildOf(name: string) {
  if (name === "corex") {
    const v = parseVariant("t128x128k16r8x8");
    return { v, code: corexShader(), wg: 256, constants: { TM: 128, TN: 128 } };
  }
  const v = parseVariant(name);
  return { v, ...shader(v), constants: {} };
}

for (const name of values.variants.split(",")) {
  if (/^core(-|$)/.test(name)) {
    await timeCore(name);
    continue;
  }
  try {
    const { v, code, wg, constants } = buildOf(name);
    if (M % v.tm || N % v.tn || K % v.tk) throw new Error("sizes must be multiples of the tile");
    const t0 = performance.now();
    dev.pushErrorScope("validation");
    const module = dev.createShaderModule({ code });
    const pipeline = dev.createComputePipeline({
      layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main", constants },
    });
    const err = await dev.popErrorScope();
    if (err) throw new Error(err.message);
    const compileMs = performance.now() - t0;
    const dimsBuf = dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    dev.queue.writeBuffer(dimsBuf, 0, new Uint32Array([M, N, K, N / v.tn]));
    const bind = dev.createBindGroup({
      layout,
      entries: [
        { binding: 0, resource: { buffer: v.a === "km" ? bufs.a.km : bufs.a.rm } },
        { binding: 1, resource: { buffer: v.f16 ? bufs.b.h : v.b === "km" ? bufs.b.km : bufs.b.rm } },
        { binding: 2, resource: { buffer: c } },
        { binding: 3, resource: { buffer: dimsBuf } },
      ],
    });
    const groups = (M / v.tm) * (N / v.tn);
    const s = await timeReps((pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(groups);
    });
    report(
      name,
      s,
      await worstError(v.f16),
      ` wg ${String(wg).padStart(4)}  build ${compileMs.toFixed(0)} ms`,
    );
    dimsBuf.destroy();
  } catch (e) {
    console.log(`${name.padEnd(36)} failed: ${(e as Error).message.split("\n")[0]}`);
  }
}
