/**
 * `--calib self`: calibration text sampled from the model itself ("data-free" calibration as in LLM-QAT):
 * each window starts at the tokenizer's BOS (or, for tokenizers that add none, its document separator such as
 * `<|endoftext|>`), and the model samples the rest at temperature 1 with the GPU sampler (no top-p/top-k),
 * sampler seed 1000·seed + window index, so a run is reproducible. Costs one generation of nsamples·seqLen
 * tokens before quantizing (lq-49m on lavapipe: 204 s for 8 × 256 tokens), which is why the default source
 * is the built-in text (BENCHMARKS.md, "Calibration without a user file").
 */
import type { Gpu } from "../../kernels/core/mod.ts";
import { createSequenceRunner } from "../engine/mod.ts";
import { destroyGpuLayer, type GpuWeights, linearBuffers } from "../model/mod.ts";
import type { Tokenizer } from "../text/mod.ts";
import { loadEvalModel } from "./perplexity.ts";

/** The calibration source name that samples the model. */
export const SELF_CALIBRATION = "self";

/**
 * The token a sampled window starts with: BOS when the tokenizer adds one, else its document separator.
 * @param tok the model's tokenizer
 * @returns a token id
 */
export function selfStartToken(tok: Tokenizer): number {
  const bos = tok.encode("", { addSpecialTokens: true });
  if (bos.length > 0) return bos[0];
  for (const t of ["<|endoftext|>", "<|end_of_text|>", "</s>"]) {
    if (tok.specialTokens.has(t)) return tok.encode(t, { addSpecialTokens: false })[0];
  }
  if (tok.bosTokenId !== null) return tok.bosTokenId;
  throw new Error("Cannot sample calibration text: the tokenizer has no BOS or document separator");
}

/**
 * Samples `nsamples` windows of `seqLen` tokens from the full-precision model in `dir`.
 * @param gpu the device
 * @param dir the model folder
 * @param options window count, length and seed
 * @returns the windows (each starts with {@link selfStartToken})
 */
export async function sampleCalibration(
  gpu: Gpu,
  dir: string,
  { nsamples, seqLen, seed = 0 }: { nsamples: number; seqLen: number; seed?: number },
): Promise<Uint32Array[]> {
  const m = await loadEvalModel(gpu, dir);
  try {
    if (seqLen > m.config.seqLen) {
      throw new Error(
        `Cannot sample calibration windows of ${seqLen} tokens: the context is ${m.config.seqLen}`,
      );
    }
    const runner = createSequenceRunner(gpu, m.config, m.weights);
    try {
      const start = selfStartToken(m.tokenizer);
      const windows: Uint32Array[] = [];
      for (let i = 0; i < nsamples; i++) {
        const ids = [start];
        const sampling = { temperature: 1, topP: 1, topK: 0, minP: 0, seed: seed * 1000 + i };
        for await (const chunk of runner.run([start], { maxNewTokens: seqLen - 1, sampling })) {
          ids.push(...chunk);
        }
        windows.push(Uint32Array.from(ids.slice(0, seqLen)));
      }
      return windows;
    } finally {
      runner.destroy(); // activations, KV cache and the sampler's buffers
    }
  } finally {
    destroyAll(m.weights);
  }
}

function destroyAll(w: GpuWeights): void {
  w.tokenEmbedding.destroy();
  w.finalNorm.destroy();
  linearBuffers(w.lmHead).forEach((b) => b.destroy());
  w.layers.forEach(destroyGpuLayer);
}
