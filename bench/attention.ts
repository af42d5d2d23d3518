/**
 * `deno task bench:attention [--random llama3-8b] [--rows 16,64,128,256,512,2048] [--pos 0,1536]`:
 * GPU time of one layer's prompt attention at a model's head shape, per-row (kernels/ops/attention.ts, its
 * default splits) against tiled (kernels/ops/flash_attention.ts, one and two query rows per invocation
 * group: FlashTune.R; and the register-blocked build, flash_attention_blocked.ts), for a chunk of `rows` prompt rows that follows `pos` cached positions (a
 * single-sequence prefill of a long prompt runs such chunks). TFLOP/s count
 * the causal work only: 4·headDim·nHeads per (row, visible position). Timestamp-query, best of 5 after a
 * warm-up; the cache holds random values (the time does not depend on them).
 */
import { parseArgs } from "node:util";
import { checkPipelines, createStorage, describeGpu, requestGpu, writeBuffer } from "../kernels/core/mod.ts";
import { createAttention, createFillRandom, createFlashAttention } from "../kernels/ops/mod.ts";
import { presetConfig } from "./random_model.ts";
import { timePass } from "./gpu_timer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    random: { type: "string", default: "llama3-8b" },
    rows: { type: "string", default: "16,64,128,256,512,2048" },
    pos: { type: "string", default: "0,1536" },
  },
});
const gpu = await requestGpu();
if (!gpu.hasTimestamps) throw new Error("Cannot time kernels: the adapter has no timestamp-query");
console.log(`adapter: ${describeGpu(gpu)}`);
const c = presetConfig(values.random);
const rowsList = values.rows.split(",").map(Number);
const posList = values.pos.split(",").map(Number);
const maxRows = Math.max(...rowsList);
const seqLen = maxRows + Math.max(...posList);
const qDim = c.nHeads * c.headDim;
const f32 = (n: number, label: string) => createStorage(gpu, 4 * n, label);
const q = f32(maxRows * qDim, "q");
const out = f32(maxRows * qDim, "out");
const kCache = f32(seqLen * c.kvDim, "kCache");
const vCache = f32(seqLen * c.kvDim, "vCache");
const state = createStorage(gpu, 16, "step state");
const fill = createFillRandom(gpu, { f16: false });
const enc = gpu.device.createCommandEncoder();
const pass = enc.beginComputePass();
[q, kCache, vCache].forEach((buf, i) =>
  fill.bind({ out: buf, count: buf.size / 4, seed: i + 1, scale: 1 }).encode(pass)
);
pass.end();
gpu.device.queue.submit([enc.finish()]);

const kernels = [
  createAttention(gpu),
  createFlashAttention(gpu, { build: "rows" }),
  createFlashAttention(gpu, { R: 2, build: "rows" }),
  createFlashAttention(gpu, { build: "blocked" }),
];
console.log(`${values.random} heads ${c.nHeads}/${c.nKvHeads}×${c.headDim}: µs (TFLOP/s) per layer`);
console.log("rows  pos    per-row            tiled              tiled, 2 rows/group    tiled, blocked");
for (const pos of posList) {
  writeBuffer(gpu, state, new Uint32Array([pos, 0, 0, 0]));
  for (const rows of rowsList) {
    const args = { q, kCache, vCache, out, state, rows, nHeads: c.nHeads, nKvHeads: c.nKvHeads, seqLen };
    const visible = rows * pos + (rows * (rows + 1)) / 2;
    const flop = 4 * c.headDim * c.nHeads * visible;
    const cells: string[] = [];
    for (const kernel of kernels) {
      const step = kernel.bind({ ...args, headDim: c.headDim });
      await checkPipelines(gpu);
      await timePass(gpu, (p) => step.encode(p), 1);
      const s = await timePass(gpu, (p) => step.encode(p), 5);
      cells.push(`${(s * 1e6).toFixed(0).padStart(7)} (${(flop / s / 1e12).toFixed(1).padStart(4)})`);
    }
    console.log(`${String(rows).padEnd(5)} ${String(pos).padEnd(6)} ${cells.join("     ")}`);
  }
}
gpu.device.destroy();
