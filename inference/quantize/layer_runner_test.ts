import assert from "node:assert/strict";
import { createLayerRunner, type HiddenStorage, LAYER_STAGES, type LayerStage } from "./layer_runner.ts";
import { loadModelConfig, type ModelConfig, ropeInvFreq } from "../model/model_config.ts";
import { uploadWeights } from "../model/upload.ts";
import { bindForward, createForwardState } from "../model/model.ts";
import { openLlamaWeights } from "../model/weights.ts";
import type { LayerWeights } from "../model/weights.ts";
import { checkPipelines } from "../../kernels/core/gpu.ts";
import { readF32, uploadStorage, writeBuffer } from "../../kernels/core/buffers.ts";
import {
  attentionRef,
  matmulRef,
  rmsNormRef,
  ropeFreqRef,
  siluMulRef,
} from "../../kernels/core/reference.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { assertNmse, nmse } from "../../tests/_assert.ts";

/** Rounds to f16 like the runner's f16 storage (identity for f32 storage). */
function storeRef(x: Float64Array, storage: HiddenStorage): Float64Array {
  return storage === "f16" ? Float64Array.from(new Float16Array(x)) : x;
}

/**
 * f64 reference of one decoder layer as the runner computes it: every capture, the stored post-attention
 * residual ("gateUp" writes it back) and the stored output, with the storage's rounding at each store.
 */
function layerRef(
  c: ModelConfig,
  L: LayerWeights,
  x: Float64Array,
  rows: number,
  storage: HiddenStorage,
): Record<LayerStage, Float64Array> & { mid: Float64Array } {
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
  const mid = storeRef(matmulRef(attn, L.wo.data, rows, qDim, c.dim, x), storage);
  const xn2 = rmsNormRef(mid, L.mlpNorm.data, rows, c.normEps);
  const act = siluMulRef(
    matmulRef(xn2, L.wGate.data, rows, c.dim, c.hiddenDim),
    matmulRef(xn2, L.wUp.data, rows, c.dim, c.hiddenDim),
  );
  const out = storeRef(matmulRef(act, L.wDown.data, rows, c.hiddenDim, c.dim, mid), storage);
  return { qkv: xn, o: attn, gateUp: xn2, down: act, out, mid };
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
  const L = await source.loadLayer(2);

  for (const storage of ["f32", "f16"] as const) {
    // The reference rounds its stores to f16 too. The GPU rounds its f32 values where the reference
    // rounds f64 ones, so an element right at a rounding boundary may land one f16 step (2^-11 relative)
    // away: one such element of the 2368 here would cost NMSE ~1e-10, hence 1e-9 (measured: ~1e-13).
    const tol = storage === "f32" ? 1e-10 : 1e-9;
    await t.step(`${storage} storage: each stage equals the f64 reference of layer 2`, async () => {
      const runner = createLayerRunner(gpu, config, { rows, storage });
      assert.equal(runner.bytes, 0, "no scratch before the first use");
      assert.equal(runner.hiddenBytes, rows * config.dim * (storage === "f16" ? 2 : 4));
      const hidden = runner.createHidden("hidden");
      runner.store(embed, hidden);
      const stored = await runner.read(hidden);
      assert.deepEqual(stored, Float32Array.from(storeRef(Float64Array.from(embed), storage)), "store()");
      const want = layerRef(config, L, Float64Array.from(stored), rows, storage);
      for (const stage of LAYER_STAGES) {
        const bound = runner.bind(weights.layers[2], stage);
        assert.equal(bound.writesHidden, stage === "gateUp" || stage === "out");
        bound.run(hidden);
        if (bound.capture) {
          const got = await readF32(gpu, bound.capture, rows * bound.captureCols);
          assertNmse(got, want[stage], tol, `stage ${stage}`);
        }
        if (stage === "o") {
          assert.deepEqual(await runner.read(hidden), stored, "stages before gateUp leave the window intact");
        }
        if (stage === "gateUp") assertNmse(await runner.read(hidden), want.mid, tol, "stored residual");
      }
      await checkPipelines(gpu);
      assertNmse(await runner.read(hidden), want.out, tol, "stored layer output");
      assert.ok(runner.bytes > 0);
      runner.release();
      assert.equal(runner.bytes, 0, "release() frees the scratch");
      runner.store(embed, hidden);
      runner.bind(weights.layers[2], "qkv").run(hidden);
      assertNmse(await runner.read(hidden), stored, 0, "scratch reallocated after release()");
      hidden.destroy();
      runner.destroy();
    });
  }

  const full = await (async () => {
    const s = createForwardState(gpu, config, { maxRows: rows });
    const idBuf = uploadStorage(gpu, ids, "ids");
    writeBuffer(gpu, s.state, new Uint32Array(4));
    const plan = bindForward(gpu, config, weights, s, { ids: idBuf, rows, logits: "none" });
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    plan.encode(pass);
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    return await readF32(gpu, s.x, rows * config.dim);
  })();
  // f16 storage rounds the residual twice per layer (relative error ≤ 2^-12 each); over 5 layers the
  // stored state stays within NMSE ~1e-6 of the f32 forward.
  for (const [storage, tol] of [["f32", 1e-12], ["f16", 1e-6]] as const) {
    await t.step(`${storage} storage: gateUp then out over all layers reproduces bindForward`, async () => {
      const runner = createLayerRunner(gpu, config, { rows, storage });
      const hidden = runner.createHidden("hidden");
      runner.store(embed, hidden);
      for (const layer of weights.layers) {
        runner.bind(layer, "gateUp").run(hidden);
        runner.bind(layer, "out").run(hidden);
      }
      const got = await runner.read(hidden);
      console.log(
        `[layer_runner] ${storage} storage: NMSE ${nmse(got, full).toExponential(2)} after 5 layers`,
      );
      assertNmse(got, full, tol, `hidden after 5 layers, ${storage} storage`);
      hidden.destroy();
      runner.destroy();
    });
  }

  await t.step("rejects more rows than the context and odd dims for f16", () => {
    assert.throws(
      () => createLayerRunner(gpu, config, { rows: config.seqLen + 1 }),
      /Cannot run a layer over 513 rows/,
    );
    assert.throws(
      () => createLayerRunner(gpu, { ...config, dim: 63 }, { rows, storage: "f16" }),
      /dim 63 is odd/,
    );
  });
  source.close();
  gpu.device.destroy();
});

Deno.test("layerRunner() stages reproduce bindForward on every new architecture's layer", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  // 37 rows exceed the sliding window (24) of tiny-mistral-swa and tiny-gemma3's local layers.
  const rows = 37;
  for (const name of ["tiny-qwen2", "tiny-qwen3", "tiny-mistral-swa", "tiny-gemma3"]) {
    const dir = sharedPath(`models/${name}`);
    if (!dir) continue;
    await t.step(`${name}: gateUp then out over all layers, f32 storage`, async () => {
      const config = await loadModelConfig(dir);
      const weights = await uploadWeights(gpu, dir, config, { weightType: "f32" });
      const ids = Uint32Array.from({ length: rows }, (_, i) => (i * 97 + 5) % config.vocabSize);
      const s = createForwardState(gpu, config, { maxRows: rows });
      writeBuffer(gpu, s.state, new Uint32Array(4));
      const plan = bindForward(gpu, config, weights, s, {
        ids: uploadStorage(gpu, ids, "ids"),
        rows,
        logits: "none",
      });
      const enc = gpu.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      plan.encode(pass);
      pass.end();
      gpu.device.queue.submit([enc.finish()]);
      const full = await readF32(gpu, s.x, rows * config.dim);
      // The runner starts from the embeddings as the forward computes them (Gemma scales them by √dim).
      const source = await openLlamaWeights(dir, config);
      const table = (await source.loadTokenEmbedding()).data;
      source.close();
      const embed = Float32Array.from(
        { length: rows * config.dim },
        (_, i) =>
          Math.fround(
            table[ids[Math.floor(i / config.dim)] * config.dim + (i % config.dim)] * config.embedScale,
          ),
      );
      const runner = createLayerRunner(gpu, config, { rows, storage: "f32" });
      const hidden = runner.createHidden("hidden");
      runner.store(embed, hidden);
      for (const layer of weights.layers) {
        runner.bind(layer, "gateUp").run(hidden);
        runner.bind(layer, "out").run(hidden);
      }
      assertNmse(await runner.read(hidden), full, 1e-12, `${name}: hidden after ${config.nLayers} layers`);
      hidden.destroy();
      runner.destroy();
    });
  }
  gpu.device.destroy();
});
