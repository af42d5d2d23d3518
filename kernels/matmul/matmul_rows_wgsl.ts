/**
 * WGSL for the batched decode path of kernels/matmul.ts ("rows"): f16 weights applied to many activation
 * rows, each weight read once per dispatch, the dense counterpart of the affine kernel's batched q8 path
 * (matmul_affine_q8mm_wgsl.ts, whose lane layout it shares).
 *
 * Why: the dense GEMV holds a chunk of every activation row in registers, so it serves at most 8 rows per
 * dispatch and reads the weights again for every 8 rows (the LM head of a 64-row decode step read its
 * 1 GB eight times); the tiled GEMM launches too few workgroups at tens of rows.
 *
 * Layout: a "unit" is 8 consecutive weights (one vec4<u32> of f16 pairs). KS lanes split K for one output
 * (lane s takes units s, s + KS, …), ⌈rows / RL⌉ lanes split the rows (RL each), NO outputs per lane. Each
 * lane sums its units in order with explicit FMAs (8 per unit and row, in element order), then the KS
 * partial sums of an (output, row) are added in lane order: the order of every sum depends on KS alone,
 * so a row's result never depends on its batch.
 */
import { unroll } from "../core/mod.ts";

/** Shape of one build. */
export interface DenseRowsBuild {
  /** activation rows of the dispatch */
  rows: number;
  /** lanes splitting K for one output (fixed: it sets the order of every sum) */
  ks: number;
  /** activation rows per lane */
  rl: number;
  /** outputs per lane */
  no: number;
  /** lanes per workgroup at most (rounded down to whole lane groups) */
  wg: number;
  /** units per lane per loop iteration */
  unroll: number;
}

/** Lanes per workgroup of a build: whole groups of KS · ⌈rows / RL⌉ lanes, at most `wg` (at least one). */
export function denseRowsWorkgroupSize(b: Pick<DenseRowsBuild, "rows" | "ks" | "rl" | "wg">): number {
  const perGroup = b.ks * Math.ceil(b.rows / b.rl);
  return perGroup * Math.max(1, Math.floor(b.wg / perGroup));
}

/** Outputs one workgroup of a build computes. */
export function denseRowsOutputsPerWorkgroup(b: DenseRowsBuild): number {
  return (denseRowsWorkgroupSize(b) / (b.ks * Math.ceil(b.rows / b.rl))) * b.no;
}

/**
 * The shader body after matmul.ts's params block (which declares `params`, `y` and `store`). Bindings:
 * 1 x (f32 rows, inDim a multiple of 8), 2 w (outDim, inDim) f16 pairs.
 */
export function denseRowsWgsl(b: DenseRowsBuild): string {
  const { rows, ks, rl, no } = b;
  const rg = Math.ceil(rows / rl);
  const wg = denseRowsWorkgroupSize(b);
  const groups = wg / (ks * rg);
  const rp = rg * rl;
  const unit = (u: number) => {
    const lines = [
      `let c${u} = min(c + ${u * ks}u, units - 1u);`,
      `let ok${u} = c + ${u * ks}u < units;`,
    ];
    for (let j = 0; j < no; j++) {
      const id = `${j}_${u}`;
      lines.push(
        `let v${id} = w[orow${j} * units + c${u}];`,
        `let wa${id} = select(vec4f(), vec4f(unpack2x16float(v${id}.x), unpack2x16float(v${id}.y)), ok${u});`,
        `let wb${id} = select(vec4f(), vec4f(unpack2x16float(v${id}.z), unpack2x16float(v${id}.w)), ok${u});`,
      );
    }
    for (let i = 0; i < rl; i++) {
      lines.push(
        `let xa${i}_${u} = x[xr${i} + c${u} * 2u];`,
        `let xb${i}_${u} = x[xr${i} + c${u} * 2u + 1u];`,
      );
      for (let j = 0; j < no; j++) {
        const [id, acc] = [`${j}_${u}`, `a${j}_${i}`];
        const terms = [..."xyzw"].map((e) => [`wa${id}.${e}`, `xa${i}_${u}.${e}`])
          .concat([..."xyzw"].map((e) => [`wb${id}.${e}`, `xb${i}_${u}.${e}`]));
        lines.push(terms.map(([p, q]) => `${acc} = fma(${p}, ${q}, ${acc});`).join(" "));
      }
    }
    return lines.join("\n    ");
  };
  return /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<vec4f>;      // (xRowOffset + rows, inDim) f32
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // (outDim, inDim) f16 pairs
var<workgroup> red: array<f32, ${groups * rp * ks}>;  // [group][row][K slice], one output per lane at a time

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o0 = (wid.x + wid.y * nwg.x) * ${groups * no}u;
  if (o0 >= params.outDim) { return; }  // uniform per workgroup
  let units = params.inDim / 8u;
  let s = lid % ${ks}u;
  let rg = (lid / ${ks}u) % ${rg}u;
  let g = lid / ${ks * rg}u;
  ${unroll(no, (j) => `let orow${j} = min(o0 + ${j * groups}u + g, params.outDim - 1u);`)}
  ${
    unroll(rl, (i) =>
      `let xr${i} = (params.xRowOffset + min(rg * ${rl}u + ${i}u, ${rows - 1}u)) * (params.inDim / 4u);`)
  }
  ${unroll(no, (j) => unroll(rl, (i) => `var a${j}_${i} = 0.0;`, " "))}
  for (var c = s; c < units; c += ${ks * b.unroll}u) {
    ${unroll(b.unroll, unit, "\n    ")}
  }
  ${
    unroll(no, (j) =>
      `${
        unroll(rl, (i) => `red[(g * ${rp}u + rg * ${rl}u + ${i}u) * ${ks}u + s] = a${j}_${i};`)
      }
  workgroupBarrier();
  for (var q = lid; q < ${groups * rows}u; q += ${wg}u) {
    let gg = q / ${rows}u;
    let r = q % ${rows}u;
    var t = 0.0;
    for (var k = 0u; k < ${ks}u; k++) { t += red[(gg * ${rp}u + r) * ${ks}u + k]; }
    let o = o0 + ${j * groups}u + gg;
    if (o < params.outDim) { store(r, o, t); }
  }
  workgroupBarrier();`, "\n  ")
  }
}
`;
}
