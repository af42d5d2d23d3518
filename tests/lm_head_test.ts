/**
 * `--quantize-lm-head` end to end on stories260K (tied embeddings): the pipeline quantizes the head after the
 * last layer, the folder records it and stores it as `lm_head.*`, the reader returns the same codes, a 4-bit
 * head loads into the fused affine kernels and an 8-bit head loads dequantized, and the served model's
 * perplexity stays close to the same decoder with a full-precision head. Small calibration for lavapipe.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withGpuFixtures } from "./_gpu.ts";
import { runQuantize } from "../cli/quantize.ts";
import { parseQuantizeRequest } from "../inference/quantize/options.ts";
import { loadModelConfig } from "../inference/model/model_config.ts";
import { openLlamaWeights } from "../inference/model/weights.ts";
import { openQuantizedModel, uploadQuantizedWeights } from "../inference/model/quant_folder.ts";
import { dequantizeLinear } from "../inference/model/quant_format.ts";
import { evaluatePerplexity, loadEvalModel } from "../inference/quantize/perplexity.ts";
import { destroyWeights } from "../bench/ppl_protocol.ts";
import type { Gpu } from "../kernels/core/gpu.ts";

Deno.test("a quantized LM head is written, reloaded, served fused at 4 bits and costs little perplexity", () =>
  withGpuFixtures({
    model: "models/stories260K",
    calib: "data/calib/tinystories_calib_second_half.txt",
    evalText: "data/tinystories/tinystories_eval_first_half.txt",
  }, async (gpu, { model, calib, evalText }, tmp) => {
    const quantize = (lmHeadBits: 0 | 4 | 8) =>
      runQuantize({
        model,
        out: join(tmp, `head${lmHeadBits}`),
        quantizer: "gpu",
        calibDirs: [],
        request: parseQuantizeRequest({
          method: "leanquant-nu",
          bits: 4,
          lm_head_bits: lmHeadBits,
          calibration: { file: calib, nsamples: 4, seqlen: 128 },
        }),
      }, { gpu, quiet: true }).then((r) => r.pipeline);
    const config = await loadModelConfig(model);
    const r4 = await quantize(4);
    assert.ok(r4.lmHead, "the result carries the head");
    assert.deepEqual([r4.lmHead.rows, r4.lmHead.cols, r4.lmHead.bits], [config.vocabSize, config.dim, 4]);
    const dir4 = join(tmp, "head4");
    const cfg4 = await loadModelConfig(dir4);
    const src = await openQuantizedModel(dir4, cfg4);
    assert.deepEqual(src.quantization.lmHead, { bits: 4, groupSize: 128, method: "gptq" });
    const head = await src.loadLmHead();
    src.close();
    assert.deepEqual(head.codes, r4.lmHead.codes);
    assert.deepEqual(head.gIdx, r4.lmHead.gIdx);
    // The dequantized head stays near the embedding it came from (4-bit: a few % of its energy).
    const emb = await tiedEmbedding(model);
    const Q = dequantizeLinear(head);
    let num = 0, den = 0;
    for (let i = 0; i < emb.length; i++) [num, den] = [num + (Q[i] - emb[i]) ** 2, den + emb[i] ** 2];
    assert.ok(num / den < 0.05, `relative error energy ${num / den}`);
    const fused = await uploadQuantizedWeights(gpu, dir4, cfg4);
    assert.equal(fused.lmHead.format, "affine");
    destroyWeights(fused);

    await quantize(8);
    await quantize(0);
    const cfg8 = await loadModelConfig(join(tmp, "head8"));
    const w8 = await uploadQuantizedWeights(gpu, join(tmp, "head8"), cfg8);
    assert.equal(w8.lmHead.format, "dense", "8-bit heads are served dequantized");
    destroyWeights(w8);

    const ppl = async (dir: string) => await perplexity(gpu, dir, evalText);
    const [p0, p8, p4] = [await ppl(join(tmp, "head0")), await ppl(join(tmp, "head8")), await ppl(dir4)];
    console.log(
      `[lm head] perplexity: fp head ${p0.toFixed(3)}, 8-bit ${p8.toFixed(3)}, 4-bit ${p4.toFixed(3)}`,
    );
    assert.ok(Math.abs(p8 / p0 - 1) < 0.01, `8-bit head moved perplexity ${p0} → ${p8}`);
    assert.ok(p4 / p0 < 1.05, `4-bit head moved perplexity ${p0} → ${p4}`);
  }));

async function tiedEmbedding(dir: string): Promise<Float32Array> {
  const source = await openLlamaWeights(dir, await loadModelConfig(dir));
  try {
    return (await source.loadTokenEmbedding()).data;
  } finally {
    source.close();
  }
}

async function perplexity(gpu: Gpu, dir: string, text: string): Promise<number> {
  const m = await loadEvalModel(gpu, dir);
  try {
    const ids = m.tokenizer.encode((await Deno.readTextFile(text)).slice(0, 12_000), {
      addSpecialTokens: true,
    });
    return (await evaluatePerplexity(gpu, m.config, m.weights, ids, { ctx: 128, maxWindows: 16 })).perplexity;
  } finally {
    destroyWeights(m.weights);
  }
}
