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
import {
  type RowLanes,
  rowLanesDecl,
  rowLanesOutputsPerWorkgroup,
  rowLanesReduce,
  rowLanesSetup,
  rowLanesWorkgroupSize,
} from "./row_lanes_wgsl.ts";

/** Shape of one build: the lanes (row_lanes_wgsl.ts) and the units per lane per loop iteration. */
export interface DenseRowsBuild extends RowLanes {
  unroll: number;
}

/**
 * The shader body after matmul.ts's params block (which declares `params`, `y` and `store`). Bindings:
 * 1 x (f32 rows, inDim a multiple of 8), 2 w (outDim, inDim) f16 pairs.
 */
export function denseRowsWgsl(b: DenseRowsBuild): string {
  const { ks, rl, no } = b;
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
${rowLanesDecl(b)}

@compute @workgroup_size(${rowLanesWorkgroupSize(b)})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let o0 = (wid.x + wid.y * nwg.x) * ${rowLanesOutputsPerWorkgroup(b)}u;
  if (o0 >= params.outDim) { return; }  // uniform per workgroup
  let units = params.inDim / 8u;
  ${
    rowLanesSetup(b, "params.outDim", (i, row) =>
      `let xr${i} = (params.xRowOffset + ${row}) * (params.inDim / 4u);`)
  }
  for (var c = s; c < units; c += ${ks * b.unroll}u) {
    ${unroll(b.unroll, unit, "\n    ")}
  }
  ${rowLanesReduce(b, "params.outDim", (r, o, v) => `store(${r}, ${o}, ${v})`)}
}
`;
}
