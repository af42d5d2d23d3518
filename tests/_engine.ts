/** Shared by the engine tests: quantized copies of stories260K made in process, and request helpers. */
import { join } from "node:path";
import type { Gpu } from "../kernels/core/mod.ts";
import { runQuantize } from "../cli/quantize.ts";
import { parseQuantizeRequest } from "../inference/quantize/mod.ts";
import type {
  BatchOptions,
  EngineHandle,
  GenerateRequest,
  TokenEvent,
  TokenLogprob,
} from "../inference/engine/mod.ts";
import { createEngine, type LoadedModel, loadModel } from "../inference/engine/mod.ts";
import { BatchRunner } from "../inference/engine/batch_runner.ts";
import { MAX_BAN, MAX_BIAS } from "../inference/engine/engine.ts";
import { KvCache, sizeKvCache } from "../inference/engine/kv_cache.ts";
import { Scheduler, type SeqConstraint } from "../inference/engine/scheduler.ts";
import { loadModelConfig, uploadModelWeights } from "../inference/model/mod.ts";
import { GREEDY_SLOT } from "../kernels/ops/mod.ts";

/**
 * Quantizes `model` into `dir`: "affine" is RTN 4-bit with groups of 32 (no calibration text needed),
 * "lut" LeanQuant-nu 4-bit on a few windows of `calib`.
 */
export async function quantizeInto(
  gpu: Gpu,
  model: string,
  dir: string,
  kind: "affine" | "lut",
  calib: string | null,
): Promise<string> {
  const out = join(dir, kind);
  const lut = kind === "lut";
  await runQuantize({
    model,
    out,
    quantizer: "gpu",
    calibDirs: [],
    request: parseQuantizeRequest({
      method: lut ? "leanquant-nu" : "rtn",
      bits: 4,
      group_size: lut ? 0 : 32,
      act_order: lut,
      ...(lut ? { calibration: { file: calib, nsamples: 4, seqlen: 128 } } : {}),
    }),
  }, { gpu, quiet: true });
  return out;
}

/** An engine serving `dir` (f32 weights for full-precision folders). */
export async function engineFor(
  gpu: Gpu,
  dir: string,
  batch: Partial<BatchOptions>,
  logs: string[] = [],
  weightType: "f32" | "f16" = "f32",
): Promise<{ engine: EngineHandle; model: LoadedModel }> {
  const model = await loadModel(gpu, dir, { weightType });
  const engine = createEngine("test", { batch, log: (m) => logs.push(m) });
  await engine.setModel(model);
  return { engine, model };
}

/**
 * One finished choice: its ids (from the logprob entries), text, finish reason and entries, and the prompt
 * ids its end event says the prefix cache served.
 */
export interface Finished {
  ids: number[];
  text: string;
  finish: string;
  logprobs: TokenLogprob[];
  cached: number;
}

/** A greedy /v1/completions-like request with logprobs (top 2: the margin of each pick). */
export function greedy(
  prompt: string,
  maxTokens: number,
  extra: Partial<GenerateRequest> = {},
): GenerateRequest {
  return {
    input: { kind: "text", prompt },
    maxTokens,
    stop: [],
    sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
    logprobs: 2,
    ...extra,
  };
}

/**
 * Runs a request to the end; `onEvent` sees every event (e.g. to start the next request after a first
 * token). Returns its choices in index order.
 */
export async function collect(
  engine: EngineHandle,
  request: GenerateRequest,
  { signal, onEvent }: { signal?: AbortSignal; onEvent?: (ev: TokenEvent) => void } = {},
): Promise<Finished[]> {
  const out: Finished[] = [];
  const at = (i: number) => (out[i] ??= { ids: [], text: "", finish: "", logprobs: [], cached: -1 });
  for await (const ev of engine.generate(request, signal)) {
    onEvent?.(ev);
    if (ev.type === "delta") {
      const c = at(ev.index ?? 0);
      c.text += ev.text;
      c.logprobs.push(...(ev.logprobs ?? []));
      c.ids.push(...(ev.logprobs ?? []).map((l) => l.id));
    }
    if (ev.type === "end") {
      [at(ev.index ?? 0).finish, at(ev.index ?? 0).cached] = [ev.finishReason, ev.cachedTokens ?? -1];
    }
  }
  return out;
}

/**
 * A folder's f32 weights behind a batch runner and a scheduler, without the engine around them (tests that
 * watch what the scheduler submits, or the paged path of every architecture): `generate` adds one greedy
 * sequence and resolves with its `limit` ids; `onToken(n)` sees the count after each id.
 */
export async function schedulerFor(
  gpu: Gpu,
  dir: string,
  { maxModelLen, maxRows }: { maxModelLen: number; maxRows: number },
): Promise<{
  runner: BatchRunner;
  generate: (
    prompt: readonly number[],
    limit: number,
    onToken?: (n: number) => void,
    constraint?: SeqConstraint,
  ) => Promise<number[]>;
  destroy: () => void;
}> {
  const config = await loadModelConfig(dir);
  const weights = await uploadModelWeights(gpu, dir, config, { weightType: "f32" });
  const shape = sizeKvCache(gpu, config, { memory: null, maxModelLen, maxNumSeqs: 4, kvType: "f32" });
  const cache = new KvCache(gpu, config, shape);
  const runner = new BatchRunner(gpu, config, weights, cache, {
    maxSlots: 4,
    maxRows,
    maxChunk: 8,
    maxBias: MAX_BIAS,
    maxBan: MAX_BAN,
  });
  const scheduler = new Scheduler();
  const entry = scheduler.addModel(runner, () => {});
  const generate = (
    prompt: readonly number[],
    limit: number,
    onToken?: (n: number) => void,
    constraint?: SeqConstraint,
  ) =>
    new Promise<number[]>((resolve, reject) => {
      const out: number[] = [];
      scheduler.add(entry, [{
        prompt,
        limit,
        settings: constraint ? { ...GREEDY_SLOT, masked: true } : GREEDY_SLOT,
        ...(constraint ? { constraint } : {}),
        sink: {
          token(id) {
            out.push(id);
            onToken?.(out.length);
            if (out.length === limit) resolve(out);
            return false;
          },
          fail: reject,
        },
      }]);
    });
  return {
    runner,
    generate,
    destroy: () => {
      runner.destroy();
      cache.destroy();
    },
  };
}
