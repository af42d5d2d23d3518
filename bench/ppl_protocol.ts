/**
 * The perplexity protocol shared by `deno task bench:ppl` (bench/ppl_table.ts) and the quality regression
 * guard (tests/ppl_guard_test.ts): quantize a model with each run (method, bits, group size) and each
 * calibration seed through `deno task quantize`'s pipeline (GPU quantizer, act-order, percdamp 0.01), then
 * evaluate every text through the server's path (fused quantized kernels) on non-overlapping windows of
 * `ctx` tokens, tail dropped. Everything runs on one device, so kernels compile once.
 */
import { join } from "node:path";
import type { Gpu } from "../kernels/core/mod.ts";
import { destroyGpuLayer, type GpuWeights, linearBuffers } from "../inference/model/mod.ts";
import {
  BUILTIN_DATASET,
  evaluatePerplexity,
  type HiddenStorageChoice,
  loadEvalModel,
  parseQuantizeRequest,
} from "../inference/quantize/mod.ts";
import { runQuantize } from "../cli/quantize.ts";
import type { QuantizeOptions, QuantMethod } from "../quant/mod.ts";

/** One quantization setting of the table. */
export interface PplRun {
  method: QuantMethod;
  bits: 2 | 3 | 4;
  /** 0: one grid per row */
  groupSize: number;
}

/** What the protocol quantizes with and evaluates on. */
export interface PplProtocol {
  model: string;
  calib: string;
  /** Evaluation texts; each is read whole, or its first `textChars` characters. */
  texts: string[];
  textChars?: number;
  /** Evaluation window (default: the model context). */
  ctx?: number;
  maxWindows?: number;
  nsamples: number;
  /** Calibration window length (default min(context, 2048)). */
  seqLen?: number;
  /** Extra quantize options: the LM head's bits. */
  quantize?: Pick<QuantizeOptions, "lmHeadBits">;
  /** Storage of the calibration hidden states (default "auto"). */
  hiddenStorage?: HiddenStorageChoice;
}

/** One measured row: a run at one seed (or the full-precision model, with seed −1). */
export interface PplRow {
  run: string;
  seed: number;
  /** Perplexity per text file name. */
  ppl: Record<string, number>;
  quantizeSeconds: number;
}

/**
 * Parses "leanquant-nu:3,gptq:4:128" into runs.
 * @param spec comma-separated method:bits[:groupSize]
 * @returns the runs
 */
export function parseRuns(spec: string): PplRun[] {
  return spec.split(",").map((s) => {
    const [method, bits, group = "0"] = s.trim().split(":");
    if (!["rtn", "gptq", "leanquant-nu", "leanquant-aff"].includes(method)) {
      throw new Error(`Invalid run "${s}": unknown method "${method}"`);
    }
    if (!["2", "3", "4"].includes(bits)) throw new Error(`Invalid run "${s}": bits must be 2, 3 or 4`);
    return { method: method as QuantMethod, bits: Number(bits) as 2 | 3 | 4, groupSize: Number(group) };
  });
}

/** A run's label, e.g. "leanquant-aff 3-bit g128". */
export function runLabel(r: PplRun): string {
  return `${r.method} ${r.bits}-bit ${
    r.groupSize > 0 && r.method !== "leanquant-nu" ? `g${r.groupSize}` : "row"
  }`;
}

/** Frees every buffer of a model's weights (so one process can load many). */
export function destroyWeights(w: GpuWeights): void {
  w.tokenEmbedding.destroy();
  w.finalNorm.destroy();
  linearBuffers(w.lmHead).forEach((b) => b.destroy());
  w.layers.forEach(destroyGpuLayer);
}

/**
 * Perplexity of a model folder on every text of the protocol.
 * @param gpu the device
 * @param dir a full-precision or quantized folder
 * @param p the protocol
 * @returns perplexity per text file name
 */
export async function evaluateFolder(gpu: Gpu, dir: string, p: PplProtocol): Promise<Record<string, number>> {
  const m = await loadEvalModel(gpu, dir);
  try {
    const out: Record<string, number> = {};
    for (const text of p.texts) {
      const raw = await Deno.readTextFile(text);
      const ids = m.tokenizer.encode(p.textChars ? raw.slice(0, p.textChars) : raw, {
        addSpecialTokens: false,
      });
      const r = await evaluatePerplexity(gpu, m.config, m.weights, ids, {
        ...(p.ctx ? { ctx: p.ctx } : {}),
        maxWindows: p.maxWindows ?? Infinity,
      });
      out[text.split("/").at(-1)!] = r.perplexity;
    }
    return out;
  } finally {
    destroyWeights(m.weights);
  }
}

/**
 * Quantizes with every run × seed and evaluates each result; `onRow` sees each row as it is measured.
 * @param gpu the device (shared by every step)
 * @param p the protocol
 * @param runs the settings
 * @param seeds calibration seeds
 * @param onRow called after each row (e.g. to print it and save partial results)
 * @returns the rows, the full-precision model first (seed −1)
 */
export async function runPplProtocol(
  gpu: Gpu,
  p: PplProtocol,
  { runs, seeds, onRow }: { runs: PplRun[]; seeds: number[]; onRow?: (row: PplRow) => void | Promise<void> },
): Promise<PplRow[]> {
  const rows: PplRow[] = [];
  const add = async (row: PplRow) => {
    rows.push(row);
    await onRow?.(row);
  };
  await add({ run: "fp", seed: -1, ppl: await evaluateFolder(gpu, p.model, p), quantizeSeconds: 0 });
  const tmp = await Deno.makeTempDir({ prefix: "leanserve-ppl-" });
  try {
    for (const run of runs) {
      for (const seed of seeds) {
        const out = join(tmp, `${run.method}_${run.bits}_${run.groupSize}_${seed}`);
        const t0 = performance.now();
        await runQuantize({
          model: p.model,
          out,
          quantizer: "gpu",
          calibDirs: [],
          request: parseQuantizeRequest({
            method: run.method,
            bits: run.bits,
            group_size: run.groupSize,
            act_order: true,
            lm_head_bits: p.quantize?.lmHeadBits ?? 0,
            calibration: {
              ...(p.calib === BUILTIN_DATASET ? { dataset: p.calib } : { file: p.calib }),
              nsamples: p.nsamples,
              ...(p.seqLen ? { seqlen: p.seqLen } : {}),
              seed,
              storage: p.hiddenStorage ?? "auto",
            },
          }),
        }, { gpu, quiet: true });
        const quantizeSeconds = (performance.now() - t0) / 1000;
        await add({ run: runLabel(run), seed, ppl: await evaluateFolder(gpu, out, p), quantizeSeconds });
        await Deno.remove(out, { recursive: true });
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return rows;
}

/** Mean, spread and extremes of one run on one text over its seeds. */
export interface PplSummary {
  run: string;
  text: string;
  seeds: number[];
  values: number[];
  mean: number;
  min: number;
  max: number;
  /** sample standard deviation (0 for one seed) */
  std: number;
}

/**
 * Groups rows by run and text over seeds.
 * @param rows measured rows
 * @returns one summary per (run, text), in first-seen order
 */
export function summarize(rows: readonly PplRow[]): PplSummary[] {
  const by = new Map<string, PplSummary>();
  for (const row of rows) {
    for (const [text, v] of Object.entries(row.ppl)) {
      const key = `${row.run}\u0000${text}`;
      const s = by.get(key) ??
        { run: row.run, text, seeds: [], values: [], mean: 0, min: Infinity, max: -Infinity, std: 0 };
      by.set(key, s);
      s.seeds.push(row.seed);
      s.values.push(v);
    }
  }
  for (const s of by.values()) {
    const n = s.values.length;
    s.mean = s.values.reduce((a, b) => a + b, 0) / n;
    s.min = Math.min(...s.values);
    s.max = Math.max(...s.values);
    s.std = n > 1 ? Math.sqrt(s.values.reduce((a, v) => a + (v - s.mean) ** 2, 0) / (n - 1)) : 0;
  }
  return [...by.values()];
}

/**
 * The markdown table of summaries: one row per run, one column per text ("mean (min–max)").
 * @param summaries from {@link summarize}
 * @returns markdown
 */
export function markdownTable(summaries: readonly PplSummary[]): string {
  const texts = [...new Set(summaries.map((s) => s.text))];
  const runs = [...new Set(summaries.map((s) => s.run))];
  const digits = (v: number) => v >= 100 ? 1 : v >= 10 ? 2 : 3;
  const cell = (s: PplSummary | undefined) => {
    if (!s) return "";
    const d = digits(s.mean);
    if (s.values.length === 1) return s.mean.toFixed(d);
    return `${s.mean.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)}, σ ${s.std.toFixed(d)})`;
  };
  const lines = [
    `| run | ${texts.join(" | ")} |`,
    `|---|${texts.map(() => "---").join("|")}|`,
    ...runs.map((r) =>
      `| ${r} | ${texts.map((t) => cell(summaries.find((s) => s.run === r && s.text === t))).join(" | ")} |`
    ),
  ];
  return lines.join("\n");
}

/**
 * The quality regression guard's reduced protocol (tests/ppl_guard_test.ts; sized for lavapipe on two cores):
 * stories260K, 8 calibration windows of 128 tokens from its calibration half, perplexity on the first 32
 * windows of 128 tokens of the in-domain evaluation half, leanquant-nu and leanquant-aff (row-wise) at 2 and
 * 3 bits. `deno task bench:ppl --guard --json tests/fixtures/ppl_guard.json` measures it over seeds 0, 1, 2.
 * @param shared the ../shared folder
 * @returns the protocol and its runs
 */
export function guardProtocol(shared: string): { protocol: PplProtocol; runs: PplRun[] } {
  return {
    protocol: {
      model: join(shared, "models/stories260K"),
      calib: join(shared, "data/calib/tinystories_calib_second_half.txt"),
      texts: [join(shared, "data/tinystories/tinystories_eval_first_half.txt")],
      textChars: 24_000,
      ctx: 128,
      maxWindows: 32,
      nsamples: 8,
      seqLen: 128,
    },
    runs: parseRuns("leanquant-nu:2,leanquant-nu:3,leanquant-aff:2,leanquant-aff:3"),
  };
}

/** Seeds of the guard's committed figures. */
export const GUARD_SEEDS = [0, 1, 2];
