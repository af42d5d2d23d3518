/**
 * The lane layout the batched decode kernels share (matmul_affine_q8mm_wgsl.ts, matmul_rows_wgsl.ts,
 * matmul_lut_rows_wgsl.ts): KS lanes split K for one output (lane s takes K steps s, s + KS, …),
 * ⌈rows / RL⌉ lanes split the rows (RL each), NO outputs per lane, as many such lane groups per workgroup
 * as fit. Each lane keeps its sums in registers `a{j}_{i}` (output j, row i of its row group); the KS
 * partial sums of an (output, row) are then added in lane order. The order of every sum depends on KS
 * alone, never on the rows of the dispatch, RL, NO or the workgroup size, so a row's result is the same
 * whatever batch it runs in (the engine's batched greedy decode equals one-at-a-time decode).
 */
import { unroll } from "../core/mod.ts";

/** Shape of a batched build's lanes. */
export interface RowLanes {
  /** activation rows of the dispatch */
  rows: number;
  /** lanes splitting K for one output (fixed per weight: it sets the order of every sum) */
  ks: number;
  /** activation rows per lane */
  rl: number;
  /** outputs per lane */
  no: number;
  /** lanes per workgroup at most (rounded down to whole lane groups) */
  wg: number;
}

/** Which batched kernel a build is for: its lane defaults differ (see {@link rowLanesFor}). */
export type RowLanesKernel = "q8" | "dense" | "lut" | "lutq8";

/**
 * Rows per dispatch of the batched kernels, which split larger calls. The weights are read once per
 * dispatch, and lanes split the rows, so registers do not grow with them. One 64-row dispatch beat four of 16
 * rows on the H100 (BENCHMARKS.md, "Serving under load"); for the int8 kernels, which the engine also
 * prefills quantized prompts with, 128-row dispatches took one 8B layer's linears at 512 rows from 6.28 to
 * 5.58 ms (LUT) and 4.97 to 4.35 ms (affine), most of it on the narrow k/v (BENCHMARKS.md, "seventeenth
 * session"). 128 rows of four per lane are 32 row groups of 8 K lanes: 256 invocations, the most a
 * workgroup may have. Dense f16 and f32 LUT stay at 64 (not timed at 128).
 */
export const ROW_LANES_MAX_ROWS: Record<RowLanesKernel, number> = { q8: 128, lutq8: 128, dense: 64, lut: 64 };
/** Lanes splitting K for one output. It fixes the order of every sum, so it never depends on the rows. */
export const ROW_LANES_KS = 8;

/** Build overrides for sweeps and tests: any lane field, the rows per dispatch, K steps per iteration. */
export type RowLanesTune = Partial<RowLanes & { unroll: number }>;

/**
 * The lanes of one dispatch of `rows` rows: `tune`'s fields, else the defaults, swept per kernel on the
 * H100 with `deno task bench:gemm --variants mm…` (BENCHMARKS.md, "Serving under load", 2026-12-06):
 * one output per lane and four K steps per loop iteration for one or two rows (a GEMV: loads in flight
 * matter), fewer steps beyond (registers). More outputs per workgroup mean fewer reads of the activations
 * through L2, which bound all three kernels at tens of rows, so outputs per lane grow with the rows, but
 * only for matrices of 4096 outputs or more (`minOutDim`: the smallest matrix of the dispatch): k/v's 1024
 * outputs then launch too few workgroups (64 rows, 8 outputs per lane: 0.044 against 0.030 ms):
 * - q8 (affine): 2 outputs up to 31 rows, then 4; 8 outputs and 8 rows per lane from 48 rows (64 rows:
 *   0.63 ms per layer against 0.71 with 4 × 4; 512 rows: 5.19 against 5.94);
 * - dense f16: 2 outputs up to 15 rows, then 8 (the LM head at 16 rows 0.84 against 1.30 ms, at 64 rows
 *   2.99 against 3.05); narrow matrices 4 from 32 rows (k/v at 64 rows: 59 µs against 73 with 2);
 * - LUT: 1 output up to 8 rows, then 4 (64 rows: 4.38 against 8.57 ms per layer; k/v faster too);
 * - LUT on int8 (matmul_lut_q8mm_wgsl.ts, chunk tables): q8's, but eight rows per lane from 32 rows (32 rows:
 *   0.49 against 0.53 ms per layer; eleventh session).
 */
export function rowLanesFor(
  rows: number,
  kernel: RowLanesKernel,
  tune: RowLanesTune = {},
  minOutDim = Infinity,
): RowLanes & { unroll: number } {
  const wide = minOutDim >= 4096;
  // [outputs per lane, rows per lane]
  const defaults = {
    q8: rows <= 2 ? [1, 4] : rows < 32 ? [2, 4] : rows < 48 || !wide ? [4, 4] : [8, 8],
    dense: rows <= 2 ? [1, 4] : rows < 16 ? [2, 4] : wide ? [8, 4] : rows < 32 ? [2, 4] : [4, 4],
    lut: rows <= 8 ? [1, 4] : [4, 4],
    lutq8: rows <= 2 ? [1, 4] : rows < 32 ? [2, 4] : !wide ? [4, 4] : rows < 48 ? [4, 8] : [8, 8],
  }[kernel];
  return {
    rows,
    ks: tune.ks ?? ROW_LANES_KS,
    rl: Math.min(tune.rl ?? defaults[1], rows),
    no: tune.no ?? defaults[0],
    wg: tune.wg ?? 256,
    unroll: tune.unroll ?? (rows <= 2 ? 4 : rows <= 8 ? 2 : 1),
  };
}

/** Lanes per workgroup: whole groups of KS · ⌈rows / RL⌉ lanes, at most `wg` (at least one group). */
export function rowLanesWorkgroupSize(b: Omit<RowLanes, "no">): number {
  const perGroup = b.ks * Math.ceil(b.rows / b.rl);
  return perGroup * Math.max(1, Math.floor(b.wg / perGroup));
}

/** Outputs one workgroup computes. */
export function rowLanesOutputsPerWorkgroup(b: RowLanes): number {
  return (rowLanesWorkgroupSize(b) / (b.ks * Math.ceil(b.rows / b.rl))) * b.no;
}

/** Bytes of the reduction's workgroup memory. */
export function rowLanesReduceBytes(b: RowLanes): number {
  return rowLanesWorkgroupSize(b) * b.rl * 4;
}

/** Derived sizes of a build: row groups, lanes, output groups per workgroup, rows padded to row groups. */
function derived(b: RowLanes) {
  const rg = Math.ceil(b.rows / b.rl);
  const wg = rowLanesWorkgroupSize(b);
  return { rg, wg, groups: wg / (b.ks * rg), rp: rg * b.rl };
}

/** The reduction buffer's declaration (module scope). */
export function rowLanesDecl(b: RowLanes): string {
  const { groups, rp } = derived(b);
  return `var<workgroup> red: array<f32, ${
    groups * rp * b.ks
  }>;  // [group][row][K slice], one output at a time`;
}

/**
 * The lane's place (`s`, `rg`, `g`), its output rows `orow{j}` (clamped to od − 1; `o0` the workgroup's
 * first output) and its zeroed sums; `rowBase(i, row)` declares what the lane needs of its row i, `row` being
 * that row's WGSL index in the dispatch.
 */
export function rowLanesSetup(b: RowLanes, od: string, rowBase: (i: number, row: string) => string): string {
  const { rg, groups } = derived(b);
  return `let s = lid % ${b.ks}u;
  let rg = (lid / ${b.ks}u) % ${rg}u;
  let g = lid / ${b.ks * rg}u;
  ${unroll(b.no, (j) => `let orow${j} = min(o0 + ${j * groups}u + g, ${od} - 1u);`)}
  ${unroll(b.rl, (i) => rowBase(i, `min(rg * ${b.rl}u + ${i}u, ${b.rows - 1}u)`))}
  ${unroll(b.no, (j) => unroll(b.rl, (i) => `var a${j}_${i} = 0.0;`, " "))}`;
}

/** Adds each (output, row)'s KS partial sums in lane order and stores them with `store(r, o, v)`. */
export function rowLanesReduce(
  b: RowLanes,
  od: string,
  store: (r: string, o: string, v: string) => string,
): string {
  const { wg, groups, rp } = derived(b);
  const { ks, rl, rows } = b;
  return unroll(
    b.no,
    (j) =>
      `${unroll(rl, (i) => `red[(g * ${rp}u + rg * ${rl}u + ${i}u) * ${ks}u + s] = a${j}_${i};`)}
  workgroupBarrier();
  for (var q = lid; q < ${groups * rows}u; q += ${wg}u) {
    let gg = q / ${rows}u;
    let r = q % ${rows}u;
    var t = 0.0;
    for (var k = 0u; k < ${ks}u; k++) { t += red[(gg * ${rp}u + r) * ${ks}u + k]; }
    let o = o0 + ${j * groups}u + gg;
    if (o < ${od}) { ${store("r", "o", "t")}; }
  }
  workgroupBarrier();`,
    "\n  ",
  );
}
