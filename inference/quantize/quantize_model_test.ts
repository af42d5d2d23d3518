import assert from "node:assert/strict";
import { quantizeModel } from "./quantize_model.ts";
import { createLayerRunner, type HiddenStorage, LAYER_STAGES } from "./layer_runner.ts";
import { loadModelConfig, type ModelConfig, ropeInvFreq } from "../model/model_config.ts";
import { type LayerWeights, openLlamaWeights } from "../model/weights.ts";
import type { LinearField } from "../model/quant_format.ts";
import { QUANTIZE_DEFAULTS } from "../../quant/types.ts";
import type { LinearQuantizer } from "../../quant/types.ts";
import { addBatch, createHessian } from "../../quant/reference/reference_hessian.ts";
import { checkPipelines } from "../../kernels/core/gpu.ts";
import { asParts, type MatrixBuffer, readMatrix } from "../../kernels/core/matrix_parts.ts";
import {
  attentionRef,
  matmulRef,
  rmsNormRef,
  ropeFreqRef,
  siluMulRef,
} from "../../kernels/core/reference.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";

type Weights = Record<LinearField, Float64Array | Float32Array> & Pick<LayerWeights, "attnNorm" | "mlpNorm">;

/** Rounds to f16 like the pipeline's f16 hidden-state storage (identity for f32). */
function storeRef(x: Float64Array, storage: HiddenStorage): Float64Array {
  return storage === "f16" ? Float64Array.from(new Float16Array(x)) : x;
}

/**
 * f64 decoder layer with the given (possibly quantized) weights: the group inputs and the output, with the
 * pipeline's stores (the post-attention residual and the output) rounded as the storage does.
 */
function layerRef(c: ModelConfig, L: Weights, x: Float64Array, rows: number, storage: HiddenStorage) {
  const qDim = c.nHeads * c.headDim;
  const invFreq = ropeInvFreq(c);
  const rope = (t: Float64Array, nHeads: number) =>
    ropeFreqRef(t, invFreq, { rows, nHeads, headDim: c.headDim, pos0: 0 });
  const xn = rmsNormRef(x, L.attnNorm.data, rows, c.normEps);
  const q = rope(matmulRef(xn, L.wq, rows, c.dim, qDim), c.nHeads);
  const k = rope(matmulRef(xn, L.wk, rows, c.dim, c.kvDim), c.nKvHeads);
  const v = matmulRef(xn, L.wv, rows, c.dim, c.kvDim);
  const attn = attentionRef(q, k, v, {
    rows,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    pos0: 0,
  });
  const h = storeRef(matmulRef(attn, L.wo, rows, qDim, c.dim, x), storage);
  const xn2 = rmsNormRef(h, L.mlpNorm.data, rows, c.normEps);
  const act = siluMulRef(
    matmulRef(xn2, L.wGate, rows, c.dim, c.hiddenDim),
    matmulRef(xn2, L.wUp, rows, c.dim, c.hiddenDim),
  );
  return {
    qkv: xn,
    o: attn,
    gateUp: xn2,
    down: act,
    out: storeRef(matmulRef(act, L.wDown, rows, c.hiddenDim, c.dim, h), storage),
  };
}

/** H = (2/N_tokens)·Σ x xᵀ over the windows' rows. */
function hessianRef(xs: Float64Array[], cols: number): Float64Array {
  const acc = createHessian(cols, { perToken: true });
  for (const x of xs) addBatch(acc, x);
  return acc.H;
}

Deno.test("quantizeModel() feeds each group inputs recomputed through the quantized groups before it", async (t) => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const c = await loadModelConfig(dir);
  const source = await openLlamaWeights(dir, c);
  const rows = 24;
  const windows = [0, 1].map((w) =>
    Uint32Array.from({ length: rows }, (_, i) => (i * 31 + w * 7 + 1) % c.vocabSize)
  );
  const fields: LinearField[] = ["wq", "wk", "wv", "wo", "wGate", "wUp", "wDown"];
  const table = (await source.loadTokenEmbedding()).data;

  /** Runs the pipeline with a stand-in quantizer (Q = W rounded to a 1/8 grid) recording each H. */
  async function runPipeline(storage: HiddenStorage, profile: boolean, gpuHiddenBytes = Infinity) {
    const calls: { field: string; H: Float32Array; Q: Float32Array }[] = [];
    const quantizer: LinearQuantizer = async ({ W, H, rows, cols }) => {
      const Q = W.map((w) => Math.round(w * 8) / 8);
      calls.push({
        field: fields[calls.length % 7],
        H: await readMatrix(gpu!, asParts(H as MatrixBuffer, cols, cols)),
        Q,
      });
      return {
        rows,
        cols,
        bits: 3,
        method: "rtn",
        codes: new Uint8Array(rows * cols),
        loss: calls.length,
        dampUsed: 0,
        Q,
      };
    };
    const seen: number[] = [];
    const result = await quantizeModel(gpu!, source, {
      quantize: { ...QUANTIZE_DEFAULTS, method: "rtn", bits: 3 },
      quantizer,
      windows,
      hiddenStorage: storage,
      profile,
      gpuHiddenBytes,
      onLayer: (i, layer) => {
        seen.push(i);
        assert.deepEqual(Object.keys(layer).sort(), [...fields].sort());
      },
    });
    await checkPipelines(gpu!);
    assert.deepEqual(seen, [0, 1, 2, 3, 4], "every layer reported in order");
    assert.equal(calls.length, 35);
    assert.equal(result.linears.length, 35);
    return { calls, result };
  }

  const byStorage = new Map<HiddenStorage, Awaited<ReturnType<typeof runPipeline>>["calls"]>();
  for (const [storage, profile] of [["f16", true], ["f32", false]] as const) {
    const { calls, result } = await runPipeline(storage, profile);
    byStorage.set(storage, calls);
    assert.equal(result.gpuWindows, windows.length);
    let xs: Float64Array[] = windows.map((ids) =>
      storeRef(
        Float64Array.from({ length: rows * c.dim }, (_, i) =>
          table[ids[Math.floor(i / c.dim)] * c.dim + (i % c.dim)]),
        storage,
      )
    );
    for (let l = 0; l < 2; l++) {
      await t.step(
        `${storage} storage, layer ${l}: H of q/k/v, o, gate/up, down and the output`,
        async () => {
          const host = await source.loadLayer(l);
          const mine = calls.slice(l * 7, l * 7 + 7);
          const L = { ...host } as unknown as Weights;
          for (const f of fields) L[f] = host[f].data;
          const stage = (name: "qkv" | "o" | "gateUp" | "down", cols: number) =>
            hessianRef(xs.map((x) => layerRef(c, L, x, rows, storage)[name]), cols);
          const want = stage("qkv", c.dim);
          for (const k of [0, 1, 2]) assertNmse(mine[k].H, want, 1e-10, `H of ${mine[k].field}`);
          [L.wq, L.wk, L.wv] = [mine[0].Q, mine[1].Q, mine[2].Q];
          assertNmse(
            mine[3].H,
            stage("o", c.nHeads * c.headDim),
            1e-10,
            "H of o_proj (after quantized q/k/v)",
          );
          L.wo = mine[3].Q;
          const gateUp = stage("gateUp", c.dim);
          assertNmse(mine[4].H, gateUp, 1e-10, "H of gate_proj (after quantized o)");
          assertNmse(mine[5].H, gateUp, 1e-10, "H of up_proj");
          [L.wGate, L.wUp] = [mine[4].Q, mine[5].Q];
          assertNmse(
            mine[6].H,
            stage("down", c.hiddenDim),
            1e-10,
            "H of down_proj (after quantized gate/up)",
          );
          L.wDown = mine[6].Q;
          xs = xs.map((x) => layerRef(c, L, x, rows, storage).out); // the next layer sees the quantized output
        },
      );
    }
    await t.step(`${storage} storage: peak bytes count every buffer the pipeline holds`, () => {
      // Candidates for the peak: the gate/up capture (every weight of the layer, q/k/v/o as Q of the same
      // size, and a dim² Hessian) and the down capture (q/k/v/o freed, a hiddenDim² Hessian); both hold
      // all windows, the scratch, the norms and the profiler's queries.
      const runner = createLayerRunner(gpu, c, { rows, storage });
      const probe = runner.createHidden("probe");
      runner.store(new Float32Array(rows * c.dim), probe); // allocates the scratch
      const scratch = runner.bytes;
      probe.destroy();
      runner.destroy();
      const align4 = (b: number) => Math.ceil(b / 4) * 4;
      const attention = 4 * (2 * c.nHeads * c.headDim * c.dim + 2 * c.kvDim * c.dim);
      const mlp = 4 * 3 * c.dim * c.hiddenDim;
      const always = windows.length * align4(runner.hiddenBytes) + scratch + 2 * 4 * c.dim +
        (profile && gpu.hasTimestamps ? 4096 * 8 : 0);
      const gateUpCapture = always + attention + mlp + 4 * c.dim ** 2;
      const downCapture = always + mlp + 4 * c.hiddenDim ** 2;
      assert.equal(result.peakGpuBytes, Math.max(gateUpCapture, downCapture));
    });
    if (profile) {
      await t.step("profile: per-layer phases, GPU time of each stage and the Hessians", () => {
        assert.equal(result.phases.length, c.nLayers);
        for (const p of result.phases) {
          const linearSeconds = result.linears.filter((r) => r.layer === p.layer).reduce(
            (s, r) => s + r.seconds,
            0,
          );
          assert.ok(
            p.quantizeSeconds >= linearSeconds,
            `layer ${p.layer}: quantize phase covers its linears`,
          );
          assert.ok(p.captureSeconds > 0 && p.propagateSeconds > 0);
          assert.ok(p.totalSeconds >= p.captureSeconds + p.quantizeSeconds + p.propagateSeconds);
          if (!gpu.hasTimestamps) continue;
          assert.ok(p.gpu !== null && p.gpu.hessian > 0, "Hessian passes timed");
          for (const stage of LAYER_STAGES) assert.ok(p.gpu.forward[stage]! > 0, `forward ${stage} timed`);
        }
      });
    } else {
      assert.deepEqual(result.phases, [], "no phases without profile");
    }
  }
  for (const storage of ["f32", "f16"] as const) {
    await t.step(
      `${storage}: windows streamed from host memory give bit-identical Hessians and Q`,
      async () => {
        // f32: window 0 stays on the GPU, window 1 streams (mixed); f16: both stream (the f16 embed path).
        const budget = storage === "f32" ? rows * c.dim * 4 : 0;
        const { calls, result } = await runPipeline(storage, false, budget);
        assert.equal(result.gpuWindows, storage === "f32" ? 1 : 0);
        const want = byStorage.get(storage)!;
        calls.forEach((call, i) => {
          assert.deepEqual(call.H, want[i].H, `H of call ${i} (${call.field})`);
          assert.deepEqual(call.Q, want[i].Q, `Q of call ${i}`);
        });
      },
    );
  }
  await t.step("rejects windows of different lengths", async () => {
    await assert.rejects(
      quantizeModel(gpu, source, {
        quantize: { ...QUANTIZE_DEFAULTS, method: "rtn", bits: 3 },
        quantizer: () => Promise.reject(new Error("not called")),
        windows: [new Uint32Array(4), new Uint32Array(5)],
      }),
      /all of the same length/,
    );
  });
  await t.step("refuses up front a Hessian larger than two storage bindings, naming the linear", async () => {
    const cols = Math.ceil(Math.sqrt(gpu.maxBindingBytes / 2)) + 4;
    const big = { ...source, config: { ...c, hiddenDim: cols } };
    await assert.rejects(
      quantizeModel(gpu, big, {
        quantize: { ...QUANTIZE_DEFAULTS, method: "rtn", bits: 3 },
        quantizer: () => Promise.reject(new Error("not called")),
        windows,
      }),
      new RegExp(`Hessian of mlp\\.down_proj \\(${cols} columns.*does not fit two storage bindings`),
    );
  });
  source.close();
  gpu.device.destroy();
});
