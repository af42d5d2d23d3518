/**
 * What the KV cache's element type costs in accuracy: greedy decode through the engine with f16 and int8 KV
 * against f32 KV, on a real model folder: how many leading ids agree, and the mean and largest |Δ logprob|
 * of the picks over them.
 *
 *   deno task bench:kv-dtype --model ../shared/models/lq-49m [--prompt "Once upon a time"] [--tokens 48]
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import type { KvType } from "../kernels/ops/mod.ts";
import { createEngine, loadModel } from "../inference/engine/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    prompt: { type: "string", default: "Once upon a time, there was a little" },
    tokens: { type: "string", default: "48" },
  },
});
if (!values.model) throw new Error("Cannot compare KV types: --model <folder> is required");
const tokens = Number(values.tokens);
const gpu = await requestGpu();
console.log(`adapter: ${describeGpu(gpu)}`);
const model = await loadModel(gpu, values.model, { weightType: "f32" });

/** Greedy ids and the logprob of each. */
async function decode(kvCacheDtype: KvType): Promise<{ ids: number[]; logprobs: number[] }> {
  // a small cache: one engine per type stays allocated until the process ends (engines have no close)
  const engine = createEngine("kv", {
    log: () => {},
    batch: { kvCacheDtype, kvCacheMemory: { bytes: 64 * 2 ** 20 } },
  });
  await engine.setModel(model);
  const out = { ids: [] as number[], logprobs: [] as number[] };
  for await (
    const ev of engine.generate({
      input: { kind: "text", prompt: values.prompt },
      maxTokens: tokens,
      stop: [],
      sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
      logprobs: 0,
      ignoreEos: true,
    })
  ) {
    if (ev.type !== "delta") continue;
    for (const e of ev.logprobs ?? []) {
      out.ids.push(e.id);
      out.logprobs.push(e.logprob ?? NaN);
    }
  }
  return out;
}

const reference = await decode("f32");
console.log(`| KV type | ids equal to f32's | mean / max |Δ logprob| over them |`);
console.log(`| --- | --- | --- |`);
for (const kvType of ["f16", "int8"] as const) {
  const got = await decode(kvType);
  const differs = got.ids.findIndex((id, i) => id !== reference.ids[i]);
  const n = differs < 0 ? got.ids.length : differs;
  const d = got.logprobs.slice(0, n).map((x, i) => Math.abs(x - reference.logprobs[i]));
  const mean = d.reduce((a, b) => a + b, 0) / Math.max(1, n);
  console.log(
    `| ${kvType} | ${n} of ${got.ids.length} | ${mean.toFixed(4)} / ${Math.max(0, ...d).toFixed(4)} |`,
  );
}
gpu.device.destroy();
Deno.exit(0);
