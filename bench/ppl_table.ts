/**
 * `deno task bench:ppl --model <dir> --calib <file> --text <file>[,<file>...] [--ctx N] [--nsamples 128]
 *  [--seqlen N] [--runs rtn:4,gptq:3,leanquant-aff:4:128,...] [--seeds 0,1,2] [--max-windows N]
 *  [--text-chars N] [--lm-head 0|4|6|8] [--calib-storage auto|f32|f16] [--json <file>] [--md <file>]`
 *
 * The perplexity table of the quantizer issues (protocol in bench/ppl_protocol.ts): the full-precision model,
 * then every run quantized with each calibration seed (default seed 0 only) and evaluated through the
 * server's path. With several seeds each run is reported as mean (min–max, σ) over the seeds: the spread is
 * what one calibration draw moves a figure by, the yardstick of tests/ppl_guard_test.ts.
 * `--seeds` alone (no --runs) runs the issue-12 set: leanquant-nu, leanquant-aff row-wise and g128, gptq at
 * 4, 3 and 2 bits. `--guard` runs the regression guard's reduced protocol over its seeds (bench/ppl_protocol.ts
 * `guardProtocol`; ../shared beside the repository): `deno task bench:ppl --guard --json
 * tests/fixtures/ppl_guard.json` rewrites the guard's committed figures. `--json` gets every row as measured (rewritten after each, so a cut run keeps its rows)
 * plus the summaries at the end; `--md` gets the markdown table.
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import { resolve } from "node:path";
import type { HiddenStorageChoice } from "../inference/quantize/mod.ts";
import {
  GUARD_SEEDS,
  guardProtocol,
  markdownTable,
  parseRuns,
  type PplProtocol,
  type PplRow,
  runLabel,
  runPplProtocol,
  summarize,
} from "./ppl_protocol.ts";

const DEFAULT_RUNS =
  "rtn:4,gptq:4,leanquant-nu:4,leanquant-aff:4,rtn:3,gptq:3,leanquant-nu:3,leanquant-aff:3," +
  "rtn:2,gptq:2,leanquant-nu:2,leanquant-aff:2";
/** The issue-12 three-seed set. */
export const SEED_RUNS = [4, 3, 2].map((b) =>
  `leanquant-nu:${b},leanquant-aff:${b},leanquant-aff:${b}:128,gptq:${b}`
).join(",");

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    calib: { type: "string" },
    text: { type: "string" },
    ctx: { type: "string" },
    nsamples: { type: "string", default: "128" },
    seqlen: { type: "string" },
    runs: { type: "string" },
    seeds: { type: "string" },
    "max-windows": { type: "string" },
    "text-chars": { type: "string" },
    "lm-head": { type: "string", default: "0" },
    "calib-storage": { type: "string", default: "auto" },
    json: { type: "string" },
    md: { type: "string" },
    guard: { type: "boolean", default: false },
  },
});
const lmHeadBits = Number(values["lm-head"]) as 0 | 4 | 6 | 8;
const guard = values.guard ? guardProtocol(resolve(import.meta.dirname!, "../../shared")) : null;
if (!guard && (!values.model || !values.calib || !values.text)) {
  throw new Error("Missing --model, --calib or --text");
}
const seeds = guard ? GUARD_SEEDS : (values.seeds ?? "0").split(",").map(Number);
const runs = guard?.runs ?? parseRuns(values.runs ?? (values.seeds ? SEED_RUNS : DEFAULT_RUNS));
const protocol: PplProtocol = guard?.protocol ?? {
  model: values.model!,
  calib: values.calib!,
  texts: values.text!.split(","),
  ...(values["text-chars"] ? { textChars: Number(values["text-chars"]) } : {}),
  ...(values.ctx ? { ctx: Number(values.ctx) } : {}),
  ...(values["max-windows"] ? { maxWindows: Number(values["max-windows"]) } : {}),
  nsamples: Number(values.nsamples),
  ...(values.seqlen ? { seqLen: Number(values.seqlen) } : {}),
  quantize: { lmHeadBits },
  hiddenStorage: values["calib-storage"] as HiddenStorageChoice,
};
const gpu = await requestGpu();
const started = new Date();
console.log(`[ppl] ${describeGpu(gpu)}, ${started.toISOString()}`);
const rows: PplRow[] = [];
const save = async (done: boolean) => {
  if (!values.json) return;
  const meta = { adapter: describeGpu(gpu), date: started.toISOString(), args: Deno.args };
  const out = done ? { ...meta, rows, summaries: summarize(rows) } : { ...meta, rows };
  await Deno.writeTextFile(values.json, JSON.stringify(out, null, 2) + "\n");
};
await runPplProtocol(gpu, protocol, {
  runs,
  seeds,
  async onRow(row) {
    rows.push(row);
    await save(false);
    const ppl = Object.entries(row.ppl).map(([k, v]) => `${k} ${v.toFixed(3)}`).join("  ");
    const seed = row.seed >= 0 ? ` seed ${row.seed}` : "";
    const time = row.quantizeSeconds ? `  (quantized in ${row.quantizeSeconds.toFixed(1)} s)` : "";
    console.log(`${(row.run + seed).padEnd(32)} ${ppl}${time}`);
  },
});
await save(true);
const table = markdownTable(summarize(rows));
console.log(`\n${table}`);
if (values.md) await Deno.writeTextFile(values.md, table + "\n");
console.log(`[ppl] ${runs.length} runs × ${seeds.length} seeds (${runs.map(runLabel).join(", ")}) done`);
gpu.device.destroy();
