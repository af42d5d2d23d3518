/**
 * Strided, batched f32 GEMM on sub-matrices of storage buffers: the workhorse of the blocked Cholesky
 * (cholesky.ts: panel solve and trailing SYRK update) and of the blocked triangular inverse (tri_inv.ts).
 *
 *   C(m, n) = alpha · Σ_k A(m, k) · B(k, n) + beta · C(m, n)        (beta = 0 never reads C)
 *   A(m, k) = a[aOff + z·aBatch + m·sAm + k·sAk]     m < M, k < K
 *   B(k, n) = b[bOff + z·bBatch + k·sBk + n·sBn]     n < N
 *   C(m, n) = c[cOff + z·cBatch + m·sCm + n·sCn]     z < batch
 *
 * Triangle flags, relative to each operand's own origin:
 * - `aLower`: A(m, k) = 0 for k > m. Loads are masked (whatever the buffer holds there) and the K loop
 *   stops after the tile's last row.
 * - `bLower`: B(k, n) = 0 for k < n. Masked, and the K loop starts at the tile's first column.
 * - `lowerTiles`: only output tiles reaching the lower triangle of C (n0 < m0 + TM) are computed (SYRK).
 *
 * a, b and c are all bound read_write so they may be one buffer (WebGPU forbids mixing read-only and
 * writable bindings of a buffer in one dispatch, not two writable ones). C may even overlap an operand
 * when every workgroup owns all it reads: N ≤ TN when C aliases A (a workgroup holds whole rows), M ≤ TM
 * when C aliases B (T the tile edge; ≤ 64 is safe with either); a workgroup reads all of K before it
 * writes.
 *
 * Tiles: T×T outputs per workgroup of 256 invocations, R×R outputs each (T = 64, R = 4 or T = 128, R = 8;
 * default 64), K staged 16 at a time in workgroup memory. Staging loads run along whichever of
 * an operand's axes is contiguous.
 */
import {
  type BoundPlan,
  type BoundSteps,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  isSplit,
  type Kernel,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  packParamSlots,
  type ParamField,
  partHolding,
  singleDispatch,
  splitElement,
  unroll,
} from "../core/mod.ts";

function head(a: MatrixAccess, b: MatrixAccess, c: MatrixAccess): string {
  return a.wgsl + b.wgsl + c.wgsl + /* wgsl */ `
override TM: u32 = 64u;  // = TN = 16·R, R the register tile edge
override TN: u32 = 64u;
const TK: u32 = 16u;     // K per step (written out in main)
const WG = 256u;         // 16×16 invocations

struct Params {
  M: u32, N: u32, K: u32, batch: u32, tilesM: u32, tilesN: u32,
  flags: u32,  // 1: aLower, 2: bLower, 4: lowerTiles
  aOff: u32, sAm: u32, sAk: u32, aBatch: u32,
  bOff: u32, sBk: u32, sBn: u32, bBatch: u32,
  cOff: u32, sCm: u32, sCn: u32, cBatch: u32,
  alpha: f32, beta: f32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;  // A(m, k) as above
@group(0) @binding(2) var<storage, read_write> b: array<f32>;  // B(k, n) as above
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // C(m, n) as above

// [k][m / 4] and [k][n / 4]; one spare vec4 per k row spreads the staging stores over the banks.
var<workgroup> sa: array<vec4f, TK * (TM / 4u + 1u)>;
var<workgroup> sb: array<vec4f, TK * (TN / 4u + 1u)>;

fn stageA(lid: u32, base: u32, m0: u32, k0: u32, kEnd: u32) {
  let kFast = params.sAk == 1u;  // neighbours read along the contiguous axis
  for (var e = lid; e < TM * TK; e += WG) {
    let m = select(e % TM, e / TK, kFast);
    let k = select(e / TM, e % TK, kFast);
    let gm = m0 + m;
    let gk = k0 + k;
    var v = 0.0;
    if (gm < params.M && gk < kEnd && ((params.flags & 1u) == 0u || gk <= gm)) {
      v = ${a.ld("base + gm * params.sAm + gk * params.sAk")};
    }
    sa[k * (TM / 4u + 1u) + m / 4u][m % 4u] = v;
  }
}

fn stageB(lid: u32, base: u32, n0: u32, k0: u32, kEnd: u32) {
  let kFast = params.sBk == 1u;
  for (var e = lid; e < TN * TK; e += WG) {
    let n = select(e % TN, e / TK, kFast);
    let k = select(e / TN, e % TK, kFast);
    let gn = n0 + n;
    let gk = k0 + k;
    var v = 0.0;
    if (gn < params.N && gk < kEnd && ((params.flags & 2u) == 0u || gk >= gn)) {
      v = ${b.ld("base + gk * params.sBk + gn * params.sBn")};
    }
    sb[k * (TN / 4u + 1u) + n / 4u][n % 4u] = v;
  }
}

fn store(base: u32, m: u32, n0: u32, v: vec4f) {
  if (m >= params.M) { return; }
  for (var j = 0u; j < 4u; j++) {
    let n = n0 + j;
    if (n < params.N) {
      let i = base + m * params.sCm + n * params.sCn;
      var out = params.alpha * v[j];
      // beta = 0 must not read C: it may hold garbage (NaN · 0 is NaN).
      if (params.beta != 0.0) { out = fma(params.beta, ${c.ld("i")}, out); }
      ${c.st("i", "out")};
    }
  }
}

`;
}

/**
 * The body for R×R outputs per invocation (R = 4 or 8): rows 64g + 4ty + r and columns 64h + 4tx + q for
 * g, h < R/4, so every workgroup read is a conflict-free vec4. The accumulators are named vec4s written
 * out here: WGSL cannot unroll, and arrays indexed in loops land in local memory on NVIDIA (matmul.ts).
 */
function mainWgsl(r: number): string {
  const G = r / 4;
  const accs = Array.from(
    { length: G * 4 * G },
    (_, i) => ({ g: Math.floor(i / (4 * G)), r: Math.floor(i / G) % 4, h: i % G }),
  );
  const name = (a: { g: number; r: number; h: number }) => `acc${a.g}${a.r}${a.h}`;
  // The TK = 16 k steps are written out: the H100's driver does not reliably unroll naga's loops
  // (docs/webgpu.md §6).
  const step = (k: number) =>
    `{
      ${unroll(G, (g) => `let a${g} = sa[${k}u * (TM / 4u + 1u) + ${16 * g}u + ty];`)}
      ${unroll(G, (h) => `let b${h} = sb[${k}u * (TN / 4u + 1u) + ${16 * h}u + tx];`)}
      ${
      unroll(
        accs.length,
        (i) =>
          `${name(accs[i])} = fma(vec4f(a${accs[i].g}.${"xyzw"[accs[i].r]}), b${accs[i].h}, ${
            name(accs[i])
          });`,
      )
    }
    }`;
  return /* wgsl */ `
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let perBatch = params.tilesM * params.tilesN;
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= perBatch * params.batch) { return; }
  let z = tile / perBatch;
  let m0 = ((tile % perBatch) / params.tilesN) * TM;
  let n0 = (tile % params.tilesN) * TN;
  if ((params.flags & 4u) != 0u && n0 >= m0 + TM) { return; }
  var kBegin = 0u;
  var kEnd = params.K;
  if ((params.flags & 2u) != 0u) { kBegin = n0; }
  if ((params.flags & 1u) != 0u) { kEnd = min(kEnd, m0 + TM); }
  let aBase = params.aOff + z * params.aBatch;
  let bBase = params.bOff + z * params.bBatch;
  let tx = lid % 16u;
  let ty = lid / 16u;
  ${accs.map((a) => `var ${name(a)} = vec4f();`).join("\n  ")}
  for (var k0 = kBegin; k0 < kEnd; k0 += TK) {
    stageA(lid, aBase, m0, k0, kEnd);
    stageB(lid, bBase, n0, k0, kEnd);
    workgroupBarrier();
    ${unroll(16, step, "\n    ")}
    workgroupBarrier();
  }
  let cBase = params.cOff + z * params.cBatch;
  ${
    accs.map((a) =>
      `store(cBase, m0 + ${64 * a.g}u + 4u * ty + ${a.r}u, n0 + ${64 * a.h}u + 4u * tx, ${name(a)});`
    ).join("\n  ")
  }
}
`;
}

/**
 * One strided operand: element (i, j) at `offset + z·batchStride + i·s0 + j·s1` (in f32 elements), the
 * index global to the whole matrix when it is in two parts (matrix_parts.ts).
 */
export interface StridedOperand {
  buffer: MatrixBuffer;
  /** first element */
  offset: number;
  /** stride of the first index (m for A, k for B, m for C) */
  s0: number;
  /** stride of the second index (k for A, n for B, n for C) */
  s1: number;
  /** offset step per batch index (default 0) */
  batchStride?: number;
}

/** One GEMM of {@link createBlockGemm}; see the module comment for the exact formula. */
export interface BlockGemmArgs {
  M: number;
  N: number;
  K: number;
  /** A(m, k) */
  a: StridedOperand;
  /** B(k, n) */
  b: StridedOperand;
  /** C(m, n), read when beta ≠ 0 */
  c: StridedOperand;
  alpha?: number;
  beta?: number;
  /** output tile edge (default 64); in place needs N (or M) ≤ this, so 64 is always safe */
  tile?: BlockGemmTile;
  /** independent GEMMs whose operands step by their batchStride (default 1) */
  batch?: number;
  aLower?: boolean;
  bLower?: boolean;
  lowerTiles?: boolean;
}

/**
 * The two builds: 64×64 tiles (4×4 per invocation) and 128×128 tiles (8×8 per invocation). On the H100
 * the 128 build did not beat the 64 one in the Cholesky and triangular inverse (K = 64 updates, scalar
 * staging), so 64 is the default and 128 stays a tested option for longer-K callers.
 */
export type BlockGemmTile = 64 | 128;

/** The block GEMM: `bind` one GEMM, or `bindAll` a sequence sharing one params buffer. */
export interface BlockGemmKernel extends Kernel<BlockGemmArgs> {
  bind(args: BlockGemmArgs): BoundPlan;
  /** Binds several GEMMs, one step each, whose params share one uniform buffer. */
  bindAll(list: readonly BlockGemmArgs[]): BoundSteps;
}

/**
 * The WGSL of one build (the tile edge also goes in as `override` TM, TN).
 * @param spec the tile edge
 * @returns WGSL source with entry point `main`
 */
export function blockGemmShader({ tile, split = false }: { tile: BlockGemmTile; split?: boolean }): string {
  const [a, b, c] = ["a", "b", "c"].map((name, i) =>
    matrixAccess(name, split ? { binding: 4 + i, access: "read_write" } : null)
  );
  return head(a, b, c) + mainWgsl(tile / 16);
}

function paramsOf(g: BlockGemmArgs, tilesM: number, tilesN: number): ParamField[] {
  const flags = (g.aLower ? 1 : 0) | (g.bLower ? 2 : 0) | (g.lowerTiles ? 4 : 0);
  const op = (o: StridedOperand): ParamField[] => [
    ["u32", o.offset],
    ["u32", o.s0],
    ["u32", o.s1],
    ["u32", o.batchStride ?? 0],
  ];
  return [
    ["u32", g.M],
    ["u32", g.N],
    ["u32", g.K],
    ["u32", g.batch ?? 1],
    ["u32", tilesM],
    ["u32", tilesN],
    ["u32", flags],
    ...op(g.a),
    ...op(g.b),
    ...op(g.c),
    ["f32", g.alpha ?? 1],
    ["f32", g.beta ?? 0],
  ];
}

/**
 * An operand of a two-part matrix whose elements all lie in one part, as that part alone (offset rebased):
 * GEMMs that stay on one side of the split keep the unsplit build. The extent is the bounding range of
 * `offset + z·batchStride + i·s0 + j·s1`, triangle masks ignored.
 */
function placeOperand(o: StridedOperand, d0: number, d1: number, batch: number): StridedOperand {
  const last = o.offset + (batch - 1) * (o.batchStride ?? 0) + (d0 - 1) * o.s0 + (d1 - 1) * o.s1;
  const part = isSplit(o.buffer) ? partHolding(o.buffer, o.offset, last) : null;
  return part ? { ...o, buffer: part.buffer, offset: part.first } : o;
}

/** {@link placeOperand} for A (M, K), B (K, N) and C (M, N). */
function placeOperands(g: BlockGemmArgs): BlockGemmArgs {
  const batch = Math.max(1, g.batch ?? 1);
  return {
    ...g,
    a: placeOperand(g.a, g.M, g.K, batch),
    b: placeOperand(g.b, g.K, g.N, batch),
    c: placeOperand(g.c, g.M, g.N, batch),
  };
}

/**
 * Builds the block GEMM kernel (both tile builds).
 * @param gpu the device
 * @returns a kernel whose bound steps record one dispatch per GEMM (none for an empty one)
 */
export function createBlockGemm(gpu: Gpu): BlockGemmKernel {
  const pipelines = new Map<BlockGemmTile, GPUComputePipeline>();
  const pipelineFor = (tile: BlockGemmTile) => {
    let p = pipelines.get(tile);
    if (!p) {
      p = getPipeline(gpu, {
        name: "block_gemm",
        code: blockGemmShader({ tile }),
        constants: { TM: tile, TN: tile },
        spec: { tile },
        bindings: ["uniform", "storage", "storage", "storage"],
      });
      pipelines.set(tile, p);
    }
    return p;
  };
  // Any operand in two parts: every operand gets a second binding (a one-part operand repeats its buffer
  // and never reaches it: its split is 2^32 − 1).
  const splitPipeline = (tile: BlockGemmTile, g: BlockGemmArgs) =>
    getPipeline(gpu, {
      name: "block_gemm",
      code: blockGemmShader({ tile, split: true }),
      constants: {
        TM: tile,
        TN: tile,
        a_SPLIT: splitElement(g.a.buffer),
        b_SPLIT: splitElement(g.b.buffer),
        c_SPLIT: splitElement(g.c.buffer),
      },
      spec: { tile, split: true },
      bindings: ["uniform", "storage", "storage", "storage", "storage", "storage", "storage"],
    });
  pipelineFor(64);
  pipelineFor(128);
  function bindAll(given: readonly BlockGemmArgs[]): BoundSteps {
    const list = given.map(placeOperands);
    const edge = list.map((g) => g.tile ?? 64);
    const tiles = list.map((g, i) => [ceilDiv(g.M, edge[i]), ceilDiv(g.N, edge[i])]);
    const { buffer, slots } = packParamSlots(
      gpu,
      list.map((g, i) => paramsOf(g, tiles[i][0], tiles[i][1])),
      "block_gemm params",
    );
    const steps = list.map((g, i): Encodable => {
      const count = tiles[i][0] * tiles[i][1] * (g.batch ?? 1);
      if (count === 0) return { encode() {} };
      const split = [g.a, g.b, g.c].some((o) => isSplit(o.buffer));
      const pipeline = split ? splitPipeline(edge[i], g) : pipelineFor(edge[i]);
      const parts = [g.a, g.b, g.c].map((o) => matrixBindings(o.buffer));
      const buffers = split
        ? [...parts.map((p) => p[0]), ...parts.map((p) => p[p.length - 1])]
        : parts.flat();
      const bindGroup = gpu.device.createBindGroup({
        label: "block_gemm",
        layout: pipeline.getBindGroupLayout(0),
        entries: [slots[i], ...buffers.map((buffer) => ({ buffer }))].map(
          (resource, binding) => ({ binding, resource }),
        ),
      });
      const [gx, gy] = dispatch2d(gpu, count);
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    });
    return { steps, destroy: () => buffer.destroy() };
  }
  function bind(args: BlockGemmArgs): BoundPlan {
    const { steps, destroy } = bindAll([args]);
    return { encode: (pass) => steps[0].encode(pass), destroy };
  }
  return { bind, bindAll };
}
