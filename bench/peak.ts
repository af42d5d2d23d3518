/**
 * `deno task bench:peak [--iters 4096] [--workgroups 4096]`: the arithmetic ceilings this adapter gives WGSL,
 * so a kernel's figure can be read against what WebGPU can reach rather than the vendor's datasheet. Each
 * probe is a loop of independent dependency chains per invocation (enough invocations to fill the GPU), timed
 * with timestamp queries (best of 5 after a warm-up):
 * - `f32 fma`: `a = fma(a, x, y)`, 8 chains; counted as 2 flop each.
 * - `f16 vec2 fma` (with shader-f16): `vec2<f16>` fma, 8 chains; 4 flop each.
 * - `dot4I8Packed`: `s = dot4I8Packed(a, bitcast<u32>(s))`, 8 chains; 8 int8 ops (4 multiply-adds) each.
 * - `dot4 + add`: `s = s + dot4I8Packed(a, bitcast<u32>(s))`, 8 chains: if the add costs nothing against the
 *   line above, the compiler folds it into the dot's accumulator (NVIDIA's IDP4A has one).
 * - `8 dot4 summed`: `s = s + dot(a0, t) + … + dot(a7, t)` with t = bitcast<u32>(s), 4 chains, the shape
 *   of the int8 matmul kernels' inner sum (matmul_affine_q8mm_wgsl.ts `q8Dots`).
 * - `affine q8 step`: one output's piece of 4-bit codes unpacked into eight operands and applied to eight
 *   rows (8 dot4 summed, the int→float conversion and two fma each): the arithmetic of a lane of the batched
 *   int8 affine kernel at 64 rows, without its loads.
 * Operands depend on the chain's own value, so no compiler can hoist them out of the loop.
 */
import { parseArgs } from "node:util";
import {
  bindBuffers,
  checkPipelines,
  createStorage,
  describeGpu,
  dispatch2d,
  getPipeline,
  requestGpu,
  unroll,
} from "../kernels/core/mod.ts";
import { timePass } from "./gpu_timer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    iters: { type: "string", default: "4096" },
    workgroups: { type: "string", default: "4096" },
  },
});
const iters = Number(values.iters);
const workgroups = Number(values.workgroups);
const WG = 256;

/** One probe: its WGSL loop body over chains c{i}, the chains' type and start, ops per chain step. */
interface Probe {
  name: string;
  chains: number;
  decl: (i: number) => string;
  step: (i: number) => string;
  /** the chain folded into one u32 for the output (keeps the loop alive) */
  fold: (i: number) => string;
  opsPerStep: number;
  unit: string;
  f16?: boolean;
}

const seed = (i: number) => `(gid * 2654435761u) ^ ${(0x9e3779b9 * (i + 1)) >>> 0}u`;
const probes: Probe[] = [
  {
    name: "f32 fma",
    chains: 8,
    // multiplier and addend in registers (values the compiler cannot know), as a GEMM's operands are
    decl: (i) => `var c${i} = f32(${seed(i)} & 255u) * 1e-3; let m${i} = 0.999 - f32(gid & 1u) * 1e-7;`,
    step: (i) => `c${i} = fma(c${i}, m${i}, m${i} - 0.998);`,
    fold: (i) => `bitcast<u32>(c${i})`,
    opsPerStep: 2,
    unit: "TFLOP/s",
  },
  {
    name: "f16 vec2 fma",
    chains: 8,
    decl: (i) =>
      `var c${i} = vec2<f16>(f16(${
        seed(i)
      } & 255u) * 1e-3h, 0.5h); let m${i} = vec2<f16>(0.999h - f16(gid & 1u) * 1e-4h);`,
    step: (i) => `c${i} = fma(c${i}, m${i}, m${i} - vec2<f16>(0.998h));`,
    fold: (i) => `pack2x16float(vec2f(c${i}))`,
    opsPerStep: 4,
    unit: "TFLOP/s",
    f16: true,
  },
  {
    name: "dot4I8Packed",
    chains: 8,
    decl: (i) => `var c${i} = bitcast<i32>(${seed(i)}); let a${i} = ${seed(i + 8)};`,
    step: (i) => `c${i} = dot4I8Packed(a${i}, bitcast<u32>(c${i}));`,
    fold: (i) => `bitcast<u32>(c${i})`,
    opsPerStep: 8,
    unit: "TOPS",
  },
  {
    name: "dot4 + add",
    chains: 8,
    decl: (i) => `var c${i} = bitcast<i32>(${seed(i)}); let a${i} = ${seed(i + 8)};`,
    step: (i) => `c${i} = c${i} + dot4I8Packed(a${i}, bitcast<u32>(c${i}));`,
    fold: (i) => `bitcast<u32>(c${i})`,
    opsPerStep: 8,
    unit: "TOPS",
  },
  {
    name: "8 dot4 summed",
    chains: 4,
    decl: (i) =>
      `var c${i} = bitcast<i32>(${seed(i)}); ${
        unroll(8, (k) => `let a${i}_${k} = ${seed(8 * i + k + 8)};`, " ")
      }`,
    step: (i) =>
      `{ let t = bitcast<u32>(c${i}); c${i} = c${i} + ${
        unroll(8, (k) => `dot4I8Packed(a${i}_${k}, t)`, " + ")
      }; }`,
    fold: (i) => `bitcast<u32>(c${i})`,
    opsPerStep: 64,
    unit: "TOPS",
  },
  {
    // one output's piece of 4-bit codes (four words, eight dot4 operands) applied to eight rows, as a lane of
    // the batched int8 affine kernel does at 64 rows (8 outputs × 8 rows per lane), minus the memory loads
    name: "affine q8 step",
    chains: 1,
    decl: () =>
      `var a0 = 0.0; ${unroll(7, (r) => `var a${r + 1} = 0.0;`, " ")}
  ${unroll(8, (r) => unroll(8, (k) => `let x${r}_${k} = ${seed(8 * r + k + 40)};`, " "))}`,
    step: () => {
      const mask = "0x0F0F0F0Fu";
      const words = [`cw`, `cw * 3u`, `cw ^ 0x5a5a5a5au`, `cw + 0x01234567u`];
      const ops = unroll(
        8,
        (k) => `let o${k} = ${k & 1 ? `(w${k >> 1} >> 4u)` : `w${k >> 1}`} & ${mask};`,
        " ",
      );
      return `{ let cw = bitcast<u32>(a0) ^ it;
    ${unroll(4, (t) => `let w${t} = ${words[t]};`, " ")}
    ${ops}
    ${
        unroll(
          8,
          (r) =>
            `a${r} = fma(0.5, fma(1e-3, f32(${
              unroll(8, (k) => `dot4I8Packed(o${k}, x${r}_${k})`, " + ")
            }), -0.25), a${r});`,
          "\n    ",
        )
      } }`;
    },
    fold: () => unroll(8, (r) => `bitcast<u32>(a${r})`, " ^ "),
    opsPerStep: 512,
    unit: "TOPS",
  },
];

const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot time kernels: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}`);
console.log(`${workgroups} workgroups × ${WG} invocations × ${iters} iterations`);
const out = createStorage(gpu, workgroups * WG * 4, "peak out");
const grid = dispatch2d(gpu, workgroups);
const timed: { probe: Probe; encode: (pass: GPUComputePassEncoder) => void }[] = [];
for (const p of probes) {
  if (p.f16 && !gpu.hasF16) {
    console.log(`${p.name.padEnd(16)} skipped: no shader-f16`);
    continue;
  }
  const code = `${p.f16 ? "enable f16;" : ""}
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let gid = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  ${unroll(p.chains, p.decl)}
  for (var it = 0u; it < ${iters}u; it++) {
    ${unroll(p.chains, p.step, "\n    ")}
  }
  if (gid < ${workgroups * WG}u) { out[gid] = ${unroll(p.chains, p.fold, " ^ ")}; }
}`;
  const pipeline = getPipeline(gpu, { name: `peak ${p.name}`, code, bindings: ["storage"] });
  await checkPipelines(gpu);
  const group = bindBuffers(gpu, pipeline, [out]);
  timed.push({
    probe: p,
    encode: (pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(grid[0], grid[1]);
    },
  });
}
// A first round only warms up: the GPU's clocks ramp over the first busy tens of milliseconds, and the first
// probe of a fresh process ran at half its rate without it.
for (const round of [0, 1]) {
  for (const { probe: p, encode } of timed) {
    const s = await timePass(gpu, encode, round === 0 ? 3 : 5);
    if (round === 0) continue;
    const ops = workgroups * WG * iters * p.chains * p.opsPerStep;
    console.log(
      `${p.name.padEnd(16)} ${(s * 1e3).toFixed(2).padStart(8)} ms  ${(ops / s / 1e12).toFixed(1)} ${p.unit}`,
    );
  }
}
out.destroy();
gpu.device.destroy();
