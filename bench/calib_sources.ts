/**
 * `deno run -A bench/calib_sources.ts --model <dir> --text <eval file> --sources <list> [--method leanquant-aff]
 *  [--bits 4] [--group-size 128] [--nsamples 16] [--seqlen 256] [--ctx 512] [--max-windows 8] [--json <file>]`
 *
 * Compares calibration sources for quantizing without a user file (issue 11): each source gives `nsamples`
 * windows of `seqlen` tokens, the model is quantized with them (the pipeline of `deno task quantize`) and
 * evaluated on the held-out text. Sources (comma-separated):
 *   file:<path>  windows drawn from a text file (seed --seed, default 0), e.g. the real calibration text or the built-in text;
 *   self         text sampled from the model itself (LLM-QAT-style "data-free" calibration): each window starts
 *                at the tokenizer's BOS (or its document separator when it adds none) and is sampled at
 *                temperature 1 with the GPU sampler, seed = window index;
 *   none         no quantization (the full-precision row).
 * A source may end in `@lm<b>` to also quantize the LM head to b bits (`--quantize-lm-head`).
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { describeGpu, type Gpu, requestGpu } from "../kernels/core/mod.ts";
import { createSequenceRunner } from "../inference/engine/mod.ts";
import { loadModelConfig } from "../inference/model/mod.ts";
import { loadTokenizer, type Tokenizer } from "../inference/text/mod.ts";
import { drawWindows } from "../inference/quantize/calibration.ts";
import { evaluateFolder } from "./ppl_protocol.ts";
import { runQuantize } from "../cli/quantize.ts";
import { BUILTIN_DATASET, parseQuantizeRequest } from "../inference/quantize/mod.ts";
import { destroyWeights } from "./ppl_protocol.ts";
import { loadEvalModel } from "../inference/quantize/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    text: { type: "string" },
    sources: { type: "string" },
    method: { type: "string", default: "leanquant-aff" },
    bits: { type: "string", default: "4" },
    "group-size": { type: "string", default: "128" },
    nsamples: { type: "string", default: "16" },
    seqlen: { type: "string", default: "256" },
    ctx: { type: "string", default: "512" },
    "max-windows": { type: "string", default: "8" },
    json: { type: "string" },
    seed: { type: "string", default: "0" },
  },
});
const seed = Number(values.seed);
if (!values.model || !values.text || !values.sources) throw new Error("Missing --model, --text or --sources");
const nsamples = Number(values.nsamples), seqLen = Number(values.seqlen);
const gpu = await requestGpu();
const tokenizer = await loadTokenizer(values.model);
const protocol = {
  model: values.model,
  calib: "",
  texts: [values.text],
  ctx: Number(values.ctx),
  maxWindows: Number(values["max-windows"]),
  nsamples,
};
console.log(`[calib] ${describeGpu(gpu)}, ${new Date().toISOString()}`);
const rows: Record<string, unknown>[] = [];
const tmp = await Deno.makeTempDir({ prefix: "leanserve-calib-" });
for (const spec of values.sources.split(",")) {
  const [source, lm] = spec.split("@lm");
  const t0 = performance.now();
  let dir = values.model;
  let prepSeconds = 0;
  if (source !== "none") {
    const windows = source === "self"
      ? await sampleWindows(gpu, values.model, tokenizer, nsamples, seqLen, seed)
      : drawWindows(
        tokenizer.encode(await Deno.readTextFile(source.replace(/^file:/, "")), { addSpecialTokens: true }),
        { nsamples, seqLen, seed },
      );
    prepSeconds = (performance.now() - t0) / 1000;
    dir = join(tmp, `q${rows.length}`);
    await runQuantize({
      model: values.model,
      out: dir,
      quantizer: "gpu",
      calibDirs: [],
      request: parseQuantizeRequest({
        method: values.method,
        bits: Number(values.bits),
        group_size: Number(values["group-size"]),
        lm_head_bits: lm ? Number(lm) : 0,
        calibration: { dataset: BUILTIN_DATASET, nsamples, seqlen: seqLen },
      }),
    }, { gpu, quiet: true, calibWindows: windows });
  }
  const quantizeSeconds = (performance.now() - t0) / 1000 - prepSeconds;
  const ppl = await evaluateFolder(gpu, dir, protocol);
  rows.push({ source: spec, ppl, prepSeconds, quantizeSeconds });
  console.log(
    `${spec.padEnd(48)} ${JSON.stringify(ppl)} (windows ${prepSeconds.toFixed(1)} s, quantize ${
      quantizeSeconds.toFixed(1)
    } s)`,
  );
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify({ args: Deno.args, rows }, null, 2));
}
await Deno.remove(tmp, { recursive: true });
gpu.device.destroy();

/** The token a sampled window starts with: BOS when the tokenizer adds one, else its document separator. */
function startToken(tok: Tokenizer): number {
  const bos = tok.encode("", { addSpecialTokens: true });
  if (bos.length > 0) return bos[0];
  for (const t of ["<|endoftext|>", "<|end_of_text|>", "</s>"]) {
    if (tok.specialTokens.has(t)) return tok.encode(t, { addSpecialTokens: false })[0];
  }
  if (tok.bosTokenId !== null) return tok.bosTokenId;
  throw new Error("Cannot sample calibration text: the tokenizer has no BOS or document separator");
}

/** `n` windows of `len` tokens sampled from the model at temperature 1 (seed = window index). */
async function sampleWindows(gpu: Gpu, dir: string, tok: Tokenizer, n: number, len: number, seed: number) {
  const config = await loadModelConfig(dir);
  const m = await loadEvalModel(gpu, dir);
  try {
    const runner = createSequenceRunner(gpu, config, m.weights);
    const start = startToken(tok);
    const windows: Uint32Array[] = [];
    for (let i = 0; i < n; i++) {
      const ids = [start];
      const sampling = { temperature: 1, topP: 1, topK: 0, minP: 0, seed: seed * 1000 + i };
      for await (const chunk of runner.run([start], { maxNewTokens: len - 1, sampling })) ids.push(...chunk);
      windows.push(Uint32Array.from(ids.slice(0, len)));
      if (i === 0) console.log(`[calib] sample 0: ${JSON.stringify(tok.decode(ids.slice(0, 80)))}`);
    }
    return windows;
  } finally {
    destroyWeights(m.weights);
  }
}
