/**
 * `deno task bench:kernels [--formats dense,affine4,lut4,…] [--no-head] [--json <file>] [--quick]`: batch-1
 * GEMV speed of every (or the listed) weight format at
 * Llama-3-8B shapes, in GB/s of weight bytes read, against the read ceiling measured in the same run (a
 * plain vec4<u32> streaming read). Timed with timestamp-query over passes of many dispatches that rotate 8
 * copies of each weight, so the 50 MB L2 of an H100 cannot hold them. Weights are random.
 */
import { parseArgs } from "node:util";
import {
  checkPipelines,
  createStorage,
  describeGpu,
  type Encodable,
  getPipeline,
  type Gpu,
  requestGpu,
  uniformParams,
} from "../kernels/core/mod.ts";
import { createMatmul } from "../kernels/matmul/mod.ts";
import { bindLinear, type DenseLinear, type GpuLinear, linearBuffers } from "../inference/model/mod.ts";
import { presetConfig, randomWeights } from "./random_model.ts";
import { timePass } from "./gpu_timer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "string" },
    quick: { type: "boolean" },
    formats: { type: "string" },
    "no-head": { type: "boolean" },
  },
});
const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot time kernels: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}`);
const COPIES = 8;
const REPS = values.quick ? 16 : 400;

/** The read ceiling: every invocation streams vec4<u32> and folds them into one word it writes. */
function readCeilingKernel(g: Gpu, src: GPUBuffer, sink: GPUBuffer): Encodable {
  const vec4s = src.size / 16;
  const code = /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var acc = vec4<u32>(0u);
  let stride = nwg.x * 256u;
  for (var i = gid.x; i < params.n; i += stride) { acc ^= src[i]; }
  if (all(acc == vec4<u32>(1u, 2u, 3u, 4u))) { sink[0] = acc.x; }
}`;
  const pipeline = getPipeline(g, {
    name: "read_ceiling",
    code,
    bindings: ["uniform", "read-only-storage", "storage"],
  });
  const bindGroup = g.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [uniformParams(g, [["u32", vec4s]], "n"), src, sink].map((buffer, binding) => ({
      binding,
      resource: { buffer },
    })),
  });
  return {
    encode(pass) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(132 * 16);
    },
  };
}

const x = createStorage(gpu, 14336 * 4, "x");
const y = createStorage(gpu, 128256 * 4, "y");
const sink = createStorage(gpu, 16, "sink");

async function ceiling(bytes: number): Promise<number> {
  const bufs = Array.from({ length: COPIES }, (_, i) => createStorage(gpu, bytes, `ceiling ${i}`));
  const kernels = bufs.map((b) => readCeilingKernel(gpu, b, sink));
  await checkPipelines(gpu);
  const t = await timePass(gpu, (pass) => {
    for (let i = 0; i < REPS; i++) kernels[i % COPIES].encode(pass);
  });
  bufs.forEach((b) => b.destroy());
  return (bytes * REPS) / t / 1e9;
}

/**
 * COPIES random one-layer 8B-shaped models in `format` (their embeddings freed at once; the LM head kept
 * only when asked), from which we time the (outDim, inDim) shapes we need.
 */
async function linearsOf(format: Parameters<typeof randomWeights>[3], keepHead = false) {
  const c = presetConfig("llama3-8b");
  const small = { ...c, nLayers: 1 } as typeof c;
  const models = [];
  for (let i = 0; i < COPIES; i++) {
    const m = await randomWeights(gpu, small, "f16", format);
    m.tokenEmbedding.destroy();
    if (!keepHead) linearBuffers(m.lmHead).forEach((b) => b.destroy());
    models.push(m);
  }
  return models;
}

const SHAPES: { name: string; pick: (L: Awaited<ReturnType<typeof linearsOf>>[number]) => GpuLinear }[] = [
  { name: "4096×4096 (q/o)", pick: (w) => w.layers[0].wq },
  { name: "14336×4096 (gate/up)", pick: (w) => w.layers[0].wUp },
  { name: "4096×14336 (down)", pick: (w) => w.layers[0].wDown },
];

const rows: Record<string, unknown>[] = [];
const ceilingGBps = await ceiling(58_720_256);
console.log(`read ceiling: ${ceilingGBps.toFixed(0)} GB/s (vec4<u32> stream of 58.7 MB buffers × ${COPIES})`);
// Timings of one format drifted by up to 2× with the formats measured before it in the same process (the
// allocation history?); run one format per process (`--formats`) for figures to publish.
const formats = [
  { name: "dense", label: "f16 dense", format: { kind: "dense" as const } },
  ...([4, 3, 2] as const).flatMap((bits) => [
    { name: `affine${bits}`, label: `${bits}-bit affine g128`, format: { kind: "affine" as const, bits } },
    { name: `lut${bits}`, label: `${bits}-bit LUT`, format: { kind: "lut" as const, bits } },
  ]),
].filter((f) => !values.formats || values.formats.split(",").includes(f.name));
for (const { label, format } of formats) {
  const models = await linearsOf(format);
  for (const shape of SHAPES) {
    const linears = models.map(shape.pick);
    const bound = linears.map((l) => bindLinear(gpu, l, { x, y, rows: 1 }));
    await checkPipelines(gpu);
    const t = await timePass(gpu, (pass) => {
      for (let i = 0; i < REPS; i++) bound[i % COPIES].encode(pass);
    }) / REPS;
    const bytes = linearBuffers(linears[0]).reduce((s, b) => s + b.size, 0);
    const gbps = bytes / t / 1e9;
    rows.push({ format: label, shape: shape.name, us: t * 1e6, GBps: gbps, ofCeiling: gbps / ceilingGBps });
    console.log(
      `${label.padEnd(18)} ${shape.name.padEnd(22)} ${(t * 1e6).toFixed(1).padStart(8)} µs ` +
        `${gbps.toFixed(0).padStart(6)} GB/s  ${(100 * gbps / ceilingGBps).toFixed(0)} % of ceiling`,
    );
  }
  for (const L of models.flatMap((m) => m.layers)) {
    [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown].forEach((l) =>
      linearBuffers(l).forEach((b) => b.destroy())
    );
  }
}
// The LM head stays f16: 128256×4096.
if (!values["no-head"]) {
  const head = (await linearsOf({ kind: "dense" }, true)).map((m) => m.lmHead as DenseLinear);
  const kernel = createMatmul(gpu, { weightType: "f16", accumulate: false });
  const bound = head.map((l) =>
    kernel.bind({ x, w: l.panels[0].buffer, y, rows: 1, inDim: 4096, outDim: 128256 })
  );
  await checkPipelines(gpu);
  const t = await timePass(gpu, (pass) => {
    for (let i = 0; i < REPS / 4; i++) bound[i % COPIES].encode(pass);
  }) / (REPS / 4);
  const gbps = head[0].panels[0].buffer.size / t / 1e9;
  rows.push({
    format: "f16 dense",
    shape: "128256×4096 (LM head)",
    us: t * 1e6,
    GBps: gbps,
    ofCeiling: gbps / ceilingGBps,
  });
  console.log(`f16 dense          128256×4096 LM head ${(t * 1e6).toFixed(1)} µs ${gbps.toFixed(0)} GB/s`);
}
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify({ ceilingGBps, rows }, null, 2));
gpu.device.destroy();
