/**
 * Batch invariance of pinned linears (linear.ts `path`): a row's outputs are the same bits whether it is
 * computed alone or with other rows, for dense and affine weights (GEMV and GEMM) and for LUT weights
 * through the GEMM, which is what lets batched greedy decode reproduce one-at-a-time greedy decode exactly
 * (inference/engine/batch_runner.ts), and for LUT weights on the int8 batched path (both pinned paths). LUT
 * decode GEMVs agree to f32 rounding.
 */
import assert from "node:assert/strict";
import {
  bindLinear,
  DENSE_PROMPT_GEMM_ROWS,
  type GpuLinear,
  type LinearPath,
  LUT_PROMPT_GEMM_ROWS,
} from "./linear.ts";
import { parseModelConfig } from "./model_config.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../../kernels/core/mod.ts";
import { type RandomFormat, randomWeights } from "../../bench/random_model.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";

const CONFIG = parseModelConfig(
  {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 256,
    intermediate_size: 384,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 64,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  },
  null,
  "test",
);

const FORMATS: [string, RandomFormat, "f32" | "f16"][] = [
  ["dense f32", { kind: "dense" }, "f32"],
  ["dense f16", { kind: "dense" }, "f16"],
  ["affine 4-bit", { kind: "affine", bits: 4 }, "f16"],
  ["affine 3-bit", { kind: "affine", bits: 3 }, "f16"],
  ["lut 4-bit", { kind: "lut", bits: 4 }, "f16"],
  ["lut 3-bit", { kind: "lut", bits: 3 }, "f16"],
];

Deno.test("a pinned linear gives each row the same bits alone and in a batch", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rows = 13;
  const c = CONFIG;
  const x = uploadStorage(gpu, randomF32(rows * c.hiddenDim, 5), "x");
  for (const [name, format, weightType] of FORMATS) {
    const weights = await randomWeights(gpu, c, weightType, format);
    const L = weights.layers[0];
    for (const path of ["gemv", "gemm"] as LinearPath[]) {
      const choices = { affine: ["q8", "f32"] as const, lut: ["f32", "q8"] as const, dense: [undefined] };
      for (const activations of choices[format.kind]) {
        await t.step(`${name} ${path}${activations ? ` ${activations}` : ""}`, async () => {
          for (const linear of [L.wGate, L.wDown]) {
            const l = activations && linear.format !== "dense" ? { ...linear, activations } : linear;
            const run = async (n: number, xRowOffset: number): Promise<Float32Array> => {
              const y = createStorage(gpu, n * l.outDim * 4, "y");
              const bound = bindLinear(gpu, l, { x, y, rows: n, xRowOffset, path });
              runPass(gpu, (pass) => bound.encode(pass));
              return await readF32(gpu, y, n * l.outDim);
            };
            const all = await run(rows, 0);
            for (const r of [0, 5, 12]) {
              const alone = await run(1, r);
              const batched = all.subarray(r * l.outDim, (r + 1) * l.outDim);
              const what = `row ${r} of ${l.outDim}×${l.inDim}`;
              if (format.kind !== "lut" || path === "gemm" || activations === "q8") {
                assert.deepEqual(batched, alone, what);
                continue;
              }
              // LUT GEMVs keep their fastest build per row count (the x-stationary one for one row), which
              // splits K differently: f32 rounding only, ≤ 1e-5 of the row's largest output.
              const scale = alone.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
              const err = alone.reduce((m, v, i) => Math.max(m, Math.abs(v - batched[i])), 0);
              assert.ok(err <= 1e-5 * scale, `${what}: max |diff| ${err} vs scale ${scale}`);
            }
          }
        });
      }
    }
  }
  gpu.device.destroy();
});

Deno.test("the prompt path takes the batched LUT kernel for small pieces, the GEMM from LUT_PROMPT_GEMM_ROWS", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const c = CONFIG;
  const x = uploadStorage(gpu, randomF32(LUT_PROMPT_GEMM_ROWS * c.hiddenDim, 7), "x");
  const run = async (l: GpuLinear, rows: number, path: LinearPath): Promise<Float32Array> => {
    const y = createStorage(gpu, rows * l.outDim * 4, "y");
    const bound = bindLinear(gpu, l, { x, y, rows, path });
    runPass(gpu, (pass) => bound.encode(pass));
    return await readF32(gpu, y, rows * l.outDim);
  };
  const formats = [{ kind: "lut", bits: 4, activations: "f32" }, {
    kind: "affine",
    bits: 4,
  }] as RandomFormat[];
  for (const format of formats) {
    const linear: GpuLinear = (await randomWeights(gpu, c, "f16", format)).layers[0].wDown;
    for (const rows of [13, LUT_PROMPT_GEMM_ROWS - 1, LUT_PROMPT_GEMM_ROWS]) {
      const small = format.kind === "lut" && rows < LUT_PROMPT_GEMM_ROWS;
      const want = await run(linear, rows, small ? "gemv" : "gemm");
      assert.deepEqual(await run(linear, rows, "prompt"), want, `${format.kind}, ${rows} rows`);
      // The two LUT families sum in other orders, so the check above tells them apart.
      if (small) assert.notDeepEqual(await run(linear, rows, "gemm"), want, `lut, ${rows} rows: gemm`);
    }
  }
  gpu.device.destroy();
});

Deno.test("the prompt path takes the batched f16 kernel for small pieces, the GEMM from DENSE_PROMPT_GEMM_ROWS", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const c = CONFIG;
  const x = uploadStorage(gpu, randomF32(DENSE_PROMPT_GEMM_ROWS * c.hiddenDim, 9), "x");
  const run = async (l: GpuLinear, rows: number, path?: LinearPath): Promise<Float32Array> => {
    const y = createStorage(gpu, rows * l.outDim * 4, "y");
    const bound = bindLinear(gpu, l, { x, y, rows, ...(path ? { path } : {}) });
    runPass(gpu, (pass) => bound.encode(pass));
    return await readF32(gpu, y, rows * l.outDim);
  };
  const linear = (await randomWeights(gpu, c, "f16", { kind: "dense" })).layers[0].wDown;
  for (const rows of [DENSE_PROMPT_GEMM_ROWS - 1, DENSE_PROMPT_GEMM_ROWS]) {
    const pinned = await run(linear, rows, "gemm"); // --batch-invariant: the batched kernel at every size
    const gemm = await run(linear, rows); // unpinned, this many rows take the tiled GEMM
    // The two families sum in other orders, so the check below tells which one the prompt path took.
    assert.notDeepEqual(gemm, pinned, `${rows} rows: the GEMM and the batched kernel agree bit for bit`);
    const want = rows < DENSE_PROMPT_GEMM_ROWS ? pinned : gemm;
    assert.deepEqual(await run(linear, rows, "prompt"), want, `${rows} rows`);
  }
  gpu.device.destroy();
});
