import assert from "node:assert/strict";
import { join } from "node:path";
import { createQuantizedWriter, openQuantizedModel } from "./quant_folder.ts";
import { LINEAR_FIELDS, type QuantizationInfo, type QuantizedLayer } from "./quant_format.ts";
import { loadModelConfig, type ModelConfig } from "./model_config.ts";
import { openLlamaWeights } from "./weights.ts";
import type { QuantizedLinear } from "../../quant/types.ts";
import { seededRandom, sharedPath } from "../../tests/_gpu.ts";

function shapeOf(c: ModelConfig, field: string): [number, number] {
  const q = c.nHeads * c.headDim;
  return ({
    wq: [q, c.dim],
    wk: [c.kvDim, c.dim],
    wv: [c.kvDim, c.dim],
    wo: [c.dim, q],
    wGate: [c.hiddenDim, c.dim],
    wUp: [c.hiddenDim, c.dim],
    wDown: [c.dim, c.hiddenDim],
  } as Record<string, [number, number]>)[field];
}

/** Deterministic fake results of the right shapes (nu: a LUT; else a row-wise affine grid). */
function fakeLayer(c: ModelConfig, info: QuantizationInfo, seed: number): QuantizedLayer {
  const rand = seededRandom(seed);
  const K = 2 ** info.bits;
  const layer = {} as QuantizedLayer;
  for (const field of LINEAR_FIELDS) {
    const [rows, cols] = shapeOf(c, field);
    const q: QuantizedLinear = {
      rows,
      cols,
      bits: info.bits,
      method: info.method,
      codes: Uint8Array.from({ length: rows * cols }, () => Math.floor(rand() * K)),
      loss: rand(),
      dampUsed: rand(),
    };
    if (info.method === "leanquant-nu") {
      q.lut = Float32Array.from({ length: rows * K }, () => new Float16Array([rand()])[0]);
    } else {
      q.scale = Float32Array.from({ length: rows }, () => new Float16Array([rand() / 10])[0]);
      q.zero = Float32Array.from({ length: rows }, () => Math.floor(rand() * K));
      q.gIdx = new Int32Array(cols);
    }
    layer[field] = q;
  }
  return layer;
}

Deno.test("createQuantizedWriter() publishes a folder that openQuantizedModel() reads back exactly", async (t) => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const config = await loadModelConfig(dir);
  const tmp = await Deno.makeTempDir();
  for (const method of ["leanquant-nu", "leanquant-aff"] as const) {
    await t.step(method, async () => {
      const info: QuantizationInfo = {
        method,
        bits: 3,
        groupSize: 0,
        actOrder: true,
        percdamp: 0.01,
        extra: { note: "test" },
      };
      const out = join(tmp, method);
      const source = await openLlamaWeights(dir, config);
      const writer = await createQuantizedWriter(source, { srcDir: dir, outDir: out, info });
      const layers = Array.from({ length: config.nLayers }, (_, i) => fakeLayer(config, info, i + 1));
      await assert.rejects(writer.writeLayer(1, layers[1]), /expected layer 0 next/);
      for (const [i, layer] of layers.entries()) await writer.writeLayer(i, layer);
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "nothing is published before finish()");
      await writer.finish();
      const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      assert.ok(files.includes("model.safetensors.index.json") && files.includes("tokenizer.json"));
      assert.equal(files.includes("quantize_config.json"), method !== "leanquant-nu");
      assert.equal(files.filter((f) => f.endsWith(".safetensors")).length, config.nLayers + 1);
      const qconfig = await loadModelConfig(out);
      assert.equal((qconfig.quantization as { leanserve: { note: string } }).leanserve.note, "test");
      const reader = await openQuantizedModel(out, qconfig);
      for (let i = 0; i < config.nLayers; i++) {
        const got = await reader.loadLayer(i);
        assert.deepEqual(got.linears, layers[i], `layer ${i} linears, losses included`);
        const src = await source.loadLayer(i);
        assert.deepEqual(got.attnNorm.data, src.attnNorm.data, "norms copied unchanged");
      }
      const embed = await reader.loadTensor("model.embed_tokens.weight");
      assert.deepEqual(embed.data, (await source.loadTokenEmbedding()).data);
      reader.close();
      source.close();
    });
  }
  await t.step("refuses an existing destination and leaves nothing behind on abort", async () => {
    const source = await openLlamaWeights(dir, config);
    const info: QuantizationInfo = { method: "gptq", bits: 4, groupSize: 0, actOrder: true, percdamp: 0.01 };
    await assert.rejects(
      createQuantizedWriter(source, { srcDir: dir, outDir: join(tmp, "leanquant-nu"), info }),
      /already exists/,
    );
    const before = [...Deno.readDirSync(tmp)].length;
    const writer = await createQuantizedWriter(source, { srcDir: dir, outDir: join(tmp, "aborted"), info });
    await writer.writeLayer(0, fakeLayer(config, info, 9));
    await assert.rejects(writer.finish(), /1 of 5 layers written/);
    await writer.abort();
    assert.equal([...Deno.readDirSync(tmp)].length, before, "the temporary folder is gone");
    source.close();
  });
  await Deno.remove(tmp, { recursive: true });
});
