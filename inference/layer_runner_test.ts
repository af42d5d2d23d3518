import assert from "node:assert/strict";
import { createLayerRunner, LAYER_STAGES, type LayerStage } from "./layer_runner.ts";
import { loadModelConfig, type ModelConfig, ropeInvFreq } from "./model_config.ts";
import { uploadWeights } from "./load_model.ts";
import { bindForward, createForwardState } from "./model.ts";
import { openLlamaWeights } from "./weights.ts";
import type { LayerWeights } from "./weights.ts";
import { checkPipelines } from "../kernels/gpu.ts";
import { createStorage, readF32, uploadStorage, writeBuffer } from "../kernels/buffers.ts";
import { attentionRef, matmulRef, rmsNormRef, ropeFreqRef, siluMulRef } from "../kernels/reference.ts";
import { sharedPath, testGpu } from "../tests/_gpu.ts";
import { assertNmse } from "../tests/_assert.ts";

/** f64 reference of one decoder layer, returning every capture and the output. */
function layerRef(
  c: ModelConfig,
  L: LayerWeights,
  x: Float64Array,
  rows: number,
): Record<LayerStage, Float64Array> {
  const qDim = c.nHeads * c.headDim;
  const invFreq = ropeInvFreq(c);
  const xn = rmsNormRef(x, L.attnNorm.data, rows, c.normEps);
  const rope = (t: Float64Array, nHeads: number) =>
    ropeFreqRef(t, invFreq, { rows, nHeads, headDim: c.headDim, pos0: 0 });
  const q = rope(matmulRef(xn, L.wq.data, rows, c.dim, qDim), c.nHeads);
  const k = rope(matmulRef(xn, L.wk.data, rows, c.dim, c.kvDim), c.nKvHeads);
  const v = matmulRef(xn, L.wv.data, rows, c.dim, c.kvDim);
  const attn = attentionRef(q, k, v, {
    rows,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    pos0: 0,
  });
  const h = matmulRef(attn, L.wo.data, rows, qDim, c.dim, x);
  const xn2 = rmsNormRef(h, L.mlpNorm.data, rows, c.normEps);
  const act = siluMulRef(
    matmulRef(xn2, L.wGate.data, rows, c.dim, c.hiddenDim),
    matmulRef(xn2, L.wUp.data, rows, c.dim, c.hiddenDim),
  );
  const out = matmulRef(act, L.wDown.data, rows, c.hiddenDim, c.dim, h);
  return { qkv: xn, o: attn, gateUp: xn2, down: act, out };
}

Deno.test("layerRunner() captures the inputs of every linear group and matches bindForward", async (t) => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const config = await loadModelConfig(dir);
  const weights = await uploadWeights(gpu, dir, config, { weightType: "f32" });
  const source = await openLlamaWeights(dir, config);
  const rows = 37;
  const ids = Uint32Array.from({ length: rows }, (_, i) => (i * 97 + 5) % config.vocabSize);
  const table = (await source.loadTokenEmbedding()).data;
  const embed = Float32Array.from({ length: rows * config.dim }, (_, i) => {
    const r = Math.floor(i / config.dim);
    return table[ids[r] * config.dim + (i % config.dim)];
  });
  const runner = createLayerRunner(gpu, config, { rows });
  await checkPipelines(gpu);

  await t.step("each stage's capture and the output of layer 2 equal the f64 reference", async () => {
    const L = await source.loadLayer(2);
    const want = layerRef(config, L, Float64Array.from(embed), rows);
    const input = uploadStorage(gpu, embed, "input");
    for (const stage of LAYER_STAGES) {
      const bound = runner.bind(weights.layers[2], stage);
      const out = createStorage(gpu, embed.byteLength, "out");
      bound.run(input, stage === "out" ? out : undefined);
      const got = await readF32(
        gpu,
        bound.capture ?? out,
        rows * (stage === "out" ? config.dim : bound.captureCols),
      );
      assertNmse(got, want[stage], 1e-10, `stage ${stage}`);
    }
    assert.deepEqual(await readF32(gpu, input, embed.length), embed, "the input window is left intact");
  });

  await t.step("all layers run in place reproduce the full forward's hidden state", async () => {
    const s = createForwardState(gpu, config, { maxRows: rows });
    const idBuf = uploadStorage(gpu, ids, "ids");
    writeBuffer(gpu, s.state, new Uint32Array(4));
    const plan = bindForward(gpu, config, weights, s, { ids: idBuf, rows, logits: "none" });
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    plan.encode(pass);
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    const full = await readF32(gpu, s.x, rows * config.dim);
    const hidden = uploadStorage(gpu, embed, "hidden");
    for (const layer of weights.layers) runner.bind(layer, "out").run(hidden, hidden);
    assertNmse(await readF32(gpu, hidden, rows * config.dim), full, 1e-12, "hidden after 5 layers");
  });

  await t.step("rejects more rows than the context", () => {
    assert.throws(
      () => createLayerRunner(gpu, config, { rows: config.seqLen + 1 }),
      /Cannot run a layer over 513 rows/,
    );
  });
  source.close();
  runner.destroy();
  gpu.device.destroy();
});
