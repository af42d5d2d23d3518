/**
 * `deno task bench:ppl --model <dir> --calib <file> --text <file>[,<file>...] [--ctx N] [--nsamples 128]
 *  [--runs rtn:4,gptq:3,leanquant-aff:4:128,...] [--max-windows N] [--json <file>]`
 *
 * The perplexity table of the quantizer issue: quantizes the model with each run (method:bits[:groupSize])
 * through the real pipeline (`deno task quantize`'s code, GPU quantizer, act-order, percdamp 0.01, seed 0),
 * then evaluates every text through the server's path (fused quantized kernels) with non-overlapping windows
 * of `ctx` tokens, tail dropped. The first row is the full-precision model.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { requestGpu } from "../kernels/core/mod.ts";
import { evaluatePerplexity, loadEvalModel, parseQuantizeRequest } from "../inference/quantize/mod.ts";
import { runQuantize } from "../cli/quantize.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    calib: { type: "string" },
    text: { type: "string" },
    ctx: { type: "string" },
    nsamples: { type: "string", default: "128" },
    runs: {
      type: "string",
      default: "rtn:4,gptq:4,leanquant-nu:4,leanquant-aff:4,rtn:3,gptq:3,leanquant-nu:3,leanquant-aff:3," +
        "rtn:2,gptq:2,leanquant-nu:2,leanquant-aff:2",
    },
    "max-windows": { type: "string" },
    json: { type: "string" },
  },
});
if (!values.model || !values.calib || !values.text) throw new Error("Missing --model, --calib or --text");
const texts = values.text.split(",");
const ctx = values.ctx ? Number(values.ctx) : undefined;
const maxWindows = values["max-windows"] ? Number(values["max-windows"]) : Infinity;
const tmp = await Deno.makeTempDir({ prefix: "leanserve-ppl-" });
const rows: Record<string, unknown>[] = [];

async function evaluate(dir: string): Promise<Record<string, number>> {
  const gpu = await requestGpu();
  try {
    const m = await loadEvalModel(gpu, dir);
    const out: Record<string, number> = {};
    for (const text of texts) {
      const ids = m.tokenizer.encode(await Deno.readTextFile(text), { addSpecialTokens: false });
      const r = await evaluatePerplexity(gpu, m.config, m.weights, ids, {
        ...(ctx ? { ctx } : {}),
        maxWindows,
      });
      out[text.split("/").at(-1)!] = r.perplexity;
    }
    return out;
  } finally {
    gpu.device.destroy();
  }
}

async function report(label: string, ppl: Record<string, number>, seconds: number) {
  rows.push({ run: label, ...ppl, quantizeSeconds: seconds });
  // Written after every row, so a run cut short still leaves what it measured.
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(rows, null, 2));
  console.log(
    `${label.padEnd(24)} ${Object.entries(ppl).map(([k, v]) => `${k} ${v.toFixed(3)}`).join("  ")}` +
      (seconds ? `  (quantized in ${seconds.toFixed(1)} s)` : ""),
  );
}

await report("fp", await evaluate(values.model), 0);
for (const spec of values.runs.split(",")) {
  const [method, bits, group = "0"] = spec.split(":");
  const out = join(tmp, spec.replaceAll(":", "_"));
  const t0 = performance.now();
  await runQuantize({
    model: values.model,
    out,
    quantizer: "gpu",
    calibDirs: [],
    request: parseQuantizeRequest({
      method,
      bits: Number(bits),
      group_size: Number(group),
      act_order: true,
      calibration: { file: values.calib, nsamples: Number(values.nsamples) },
    }),
  });
  const seconds = (performance.now() - t0) / 1000;
  await report(`${method} ${bits}-bit ${group === "0" ? "row" : `g${group}`}`, await evaluate(out), seconds);
  await Deno.remove(out, { recursive: true });
}
await Deno.remove(tmp, { recursive: true });
