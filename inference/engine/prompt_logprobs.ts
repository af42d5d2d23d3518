/**
 * Log probabilities of a prompt's own tokens (the completions API's `echo` with `logprobs`, what
 * lm-evaluation-harness scores continuations with): one forward over the prompt as a single sequence, then
 * the LM head in row chunks, each chunk's rows through the sampler's logprobs kernel (kernels/ops/logprobs.ts)
 * with the next prompt id as the "chosen" token: entry t is log p(ids[t + 1] | ids ≤ t) and the `top` most
 * likely ids there, as generation reports them (raw logits, ties to the lower id).
 *
 * It runs beside the scheduler on the same queue, with its own activations and cache, one prompt at a time
 * (the engine serializes the calls): a 2,048-id prompt at the 8B shape holds ~1 GiB of activations while
 * it runs, freed at the end.
 */
import {
  checkPipelines,
  createStorage,
  type Encodable,
  type Gpu,
  readU32,
  writeBuffer,
} from "../../kernels/core/mod.ts";
import {
  createLogprobs,
  createRmsNorm,
  GREEDY_SLOT,
  LOGPROB_RECORD_WORDS,
  packSlotParams,
  SLOT_PARAMS_BYTES,
} from "../../kernels/ops/mod.ts";
import {
  bindForward,
  bindLmHead,
  createForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type ModelConfig,
} from "../model/mod.ts";

/** Most bytes of logits computed at once (the LM head runs in row chunks of this size). */
const MAX_LOGITS_BYTES = 64 * 2 ** 20;

/** One prompt position's record: the next id's logprob and the best `top` (id, logprob) pairs. */
export interface PromptLogprob {
  logprob: number;
  top: [id: number, logprob: number][];
}

/**
 * Scores a prompt.
 * @param gpu the device
 * @param config the model
 * @param weights its weights as served
 * @param ids the prompt (≥ 2 ids, all in the vocabulary)
 * @param top alternatives per position, 0..20
 * @returns ids.length − 1 records: entry t for ids[t + 1]
 */
export async function scorePrompt(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  ids: readonly number[],
  top: number,
): Promise<PromptLogprob[]> {
  const n = ids.length;
  const preds = n - 1;
  if (preds < 1) return [];
  const fit = Math.floor(Math.min(MAX_LOGITS_BYTES, gpu.maxBindingBytes) / (config.vocabSize * 4));
  const chunk = Math.max(1, Math.min(preds, fit));
  const s = createForwardState(gpu, config, { maxRows: n, maxLogitRows: chunk });
  const u32 = (words: number, label: string) => createStorage(gpu, words * 4, label);
  const idBuf = u32(n, "score ids"); // (n) u32
  const targets = u32(chunk, "score targets"); // (chunk) u32: the next id of each row of a chunk
  const rowIndex = u32(chunk, "score rows"); // (chunk) u32: 0, 1, …: row r is "slot" r
  const slotParams = createStorage(gpu, chunk * SLOT_PARAMS_BYTES, "score slot params");
  const records = u32(chunk * LOGPROB_RECORD_WORDS, "score records"); // (chunk, REC) u32
  const all = u32(preds * LOGPROB_RECORD_WORDS, "score records all"); // (n − 1, REC) u32
  const owned = [idBuf, targets, rowIndex, slotParams, records, all, ...forwardStateBuffers(s)];
  try {
    writeBuffer(gpu, idBuf, Uint32Array.from(ids));
    writeBuffer(gpu, s.state, new Uint32Array(4)); // position 0, step 0
    writeBuffer(gpu, rowIndex, Uint32Array.from({ length: chunk }, (_, r) => r));
    const params = new Uint8Array(packSlotParams({ ...GREEDY_SLOT, logprobs: true, nTop: top }, {
      maxBias: 0,
      maxBan: 0,
    }));
    const packed = new Uint8Array(chunk * SLOT_PARAMS_BYTES);
    for (let r = 0; r < chunk; r++) packed.set(params, r * SLOT_PARAMS_BYTES);
    writeBuffer(gpu, slotParams, packed);
    const head: Encodable[] = [
      bindForward(gpu, config, weights, s, { ids: idBuf, rows: n, logits: "none" }),
      createRmsNorm(gpu).bind({
        x: s.x,
        weight: weights.finalNorm,
        y: s.xn,
        rows: n,
        dim: config.dim,
        eps: config.normEps,
      }),
    ];
    const logprobs = createLogprobs(gpu);
    await checkPipelines(gpu);
    for (let off = 0; off < preds; off += chunk) {
      const rows = Math.min(chunk, preds - off);
      writeBuffer(gpu, targets, Uint32Array.from(ids.slice(off + 1, off + 1 + rows)));
      const steps: Encodable[] = [
        ...(off === 0 ? head : []),
        ...bindLmHead(gpu, config, weights, { x: s.xn, y: s.logits, rows, xRowOffset: off }).map((h) =>
          h.step
        ),
        logprobs.bind({
          logits: s.logits,
          slotParams,
          gather: rowIndex,
          rowSlot: rowIndex,
          rows,
          vocabSize: config.vocabSize,
          maxSlots: chunk,
          state: s.state,
          outTokens: targets,
          outLogprobs: records,
        }),
      ];
      const enc = gpu.device.createCommandEncoder({ label: "score prompt" });
      const pass = enc.beginComputePass();
      steps.forEach((step) => step.encode(pass));
      pass.end();
      enc.copyBufferToBuffer(
        records,
        0,
        all,
        off * LOGPROB_RECORD_WORDS * 4,
        rows * LOGPROB_RECORD_WORDS * 4,
      );
      gpu.device.queue.submit([enc.finish()]);
    }
    const words = await readU32(gpu, all, preds * LOGPROB_RECORD_WORDS);
    const f = new Float32Array(words.buffer, words.byteOffset, words.length);
    return Array.from({ length: preds }, (_, t) => {
      const at = t * LOGPROB_RECORD_WORDS;
      const k = words[at + 1];
      return {
        logprob: f[at],
        top: Array.from(
          { length: k },
          (_, j): [number, number] => [words[at + 2 + 2 * j], f[at + 3 + 2 * j]],
        ),
      };
    });
  } finally {
    owned.forEach((b) => b.destroy());
  }
}
