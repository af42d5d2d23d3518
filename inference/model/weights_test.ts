import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModelConfig, type ModelConfig, parseModelConfig } from "./model_config.ts";
import { fromFloat32, toFloat32 } from "../formats/float_codec.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../formats/safetensors.ts";
import { openSafetensorsModel } from "../formats/checkpoint.ts";
import { type HostTensor, type LlamaWeights, loadLlamaWeights, openLlamaWeights } from "./weights.ts";
import { sharedPath } from "../../tests/_gpu.ts";

/** Every tensor of a checkpoint folder, raw, in file order. */
async function readAllRaw(dir: string): Promise<TensorToWrite[]> {
  const model = await openSafetensorsModel(dir);
  try {
    const out: TensorToWrite[] = [];
    for (const [name, { entry }] of model.tensors) {
      out.push({ name, dtype: entry.dtype, shape: entry.shape, data: await model.readTensor(name) });
    }
    return out;
  } finally {
    model.close();
  }
}

/** Runs `fn` on a temp folder holding stories260K's config and `tensors` as model.safetensors. */
async function withModel(
  tensors: TensorToWrite[],
  fn: (dir: string, config: ModelConfig) => Promise<void>,
  configPatch: Record<string, unknown> = {},
): Promise<void> {
  const src = sharedPath("models/stories260K")!;
  const dir = await Deno.makeTempDir({ prefix: "weights_test_" });
  try {
    const raw = { ...JSON.parse(await Deno.readTextFile(join(src, "config.json"))), ...configPatch };
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(raw));
    if (tensors.length > 0) await writeSafetensors(join(dir, "model.safetensors"), tensors);
    await fn(dir, await loadModelConfig(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** All tensors of a weights struct with their struct path, in a fixed order. */
function flatten(w: LlamaWeights): [string, HostTensor][] {
  const out: [string, HostTensor][] = [["tokenEmbedding", w.tokenEmbedding]];
  w.layers.forEach((l, i) =>
    out.push(...Object.entries(l).map(([k, t]) => [`layers[${i}].${k}`, t] as [string, HostTensor]))
  );
  out.push(["finalNorm", w.finalNorm], ["lmHead", w.lmHead]);
  return out;
}

function assertSameWeights(a: LlamaWeights, b: LlamaWeights): void {
  const fa = flatten(a);
  const fb = flatten(b);
  assert.equal(fa.length, fb.length);
  fa.forEach(([name, t], k) => {
    assert.deepEqual(t.shape, fb[k][1].shape, name);
    assert.deepEqual(t.data, fb[k][1].data, name);
  });
}

Deno.test("loadLlamaWeights() loads stories260K with every shape checked", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const c = await loadModelConfig(dir);
  const seen: number[] = [];
  const w = await loadLlamaWeights(dir, c, { onTensor: (_name, loaded, total) => seen.push(loaded, total) });
  const nTensors = 2 + 9 * c.nLayers; // embedding + final norm + 9 per layer; lm_head is tied
  assert.equal(seen.length, 2 * nTensors);
  assert.equal(seen[seen.length - 2], nTensors);
  assert.equal(w.layers.length, 5);
  assert.equal(w.lmHead, w.tokenEmbedding, "tied lm_head is the embedding itself");
  assert.deepEqual(w.tokenEmbedding.shape, [512, 64]);
  const l = w.layers[4];
  assert.deepEqual(
    [l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.mlpNorm, l.wGate, l.wUp, l.wDown].map((t) => t.shape),
    [[64], [64, 64], [32, 64], [32, 64], [64, 64], [64], [172, 64], [172, 64], [64, 172]],
  );
  for (const [name, t] of flatten(w)) {
    assert.equal(t.data.length, t.shape.reduce((a, d) => a * d, 1), name);
  }
  // Values: the layer-3 down projection against an independent decode of the file bytes.
  using st = await openSafetensors(join(dir, "model.safetensors"));
  const bytes = await st.readTensor("model.layers.3.mlp.down_proj.weight");
  const view = new DataView(bytes.buffer);
  for (let k = 0; k < w.layers[3].wDown.data.length; k++) {
    assert.equal(w.layers[3].wDown.data[k], view.getFloat32(4 * k, true));
  }
});

Deno.test("stories260K-bf16 equals the f32 weights rounded to bf16, bit for bit", async () => {
  const f32Dir = sharedPath("models/stories260K");
  const bf16Dir = sharedPath("models/stories260K-bf16");
  if (!f32Dir || !bf16Dir) return;
  const f32 = await loadLlamaWeights(f32Dir, await loadModelConfig(f32Dir));
  const bf16 = await loadLlamaWeights(bf16Dir, await loadModelConfig(bf16Dir));
  const rounded = flatten(f32).map((
    [name, t],
  ) => [name, { data: toFloat32(fromFloat32(t.data, "BF16"), "BF16"), shape: t.shape }]);
  flatten(bf16).forEach(([name, t], k) => {
    assert.equal(name, rounded[k][0]);
    const want = rounded[k][1] as HostTensor;
    assert.deepEqual(new Uint32Array(t.data.buffer), new Uint32Array(want.data.buffer), name);
  });
  const source = await openLlamaWeights(bf16Dir, await loadModelConfig(bf16Dir));
  const raw = await source.readTensorRaw("model.layers.0.self_attn.k_proj.weight");
  source.close();
  assert.deepEqual([raw.dtype, raw.shape, raw.bytes.length], ["BF16", [32, 64], 32 * 64 * 2]);
});

Deno.test("openLlamaWeights() streams lq-49m one layer at a time", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const c = await loadModelConfig(dir);
  const source = await openLlamaWeights(dir, c);
  try {
    assert.equal(source.tensorCount, 2 + 9 * 8);
    const layer = await source.loadLayer(7);
    assert.deepEqual(layer.wUp.shape, [1408, 512]);
    assert.deepEqual(layer.wk.shape, [256, 512]);
    const raw = await source.readTensorRaw("model.layers.7.mlp.up_proj.weight");
    assert.equal(raw.dtype, "BF16");
    const halves = new Uint16Array(raw.bytes.buffer);
    for (let k = 0; k < halves.length; k += 997) {
      assert.equal(new Uint32Array(layer.wUp.data.buffer, 4 * k, 1)[0], halves[k] << 16 >>> 0);
    }
    assert.ok(layer.wUp.data.some((v) => v !== 0) && layer.wUp.data.every(Number.isFinite));
    const embed = await source.loadTokenEmbedding();
    assert.deepEqual(embed.shape, [49152, 512]);
    assert.equal(await source.loadLmHead(embed), embed, "tied");
    assert.deepEqual((await source.loadFinalNorm()).shape, [512]);
    await assert.rejects(() => source.loadLayer(8), /Cannot load layer 8: the model has layers 0 to 7/);
    const all = await source.loadAll();
    assert.equal(all.layers.length, 8);
    assert.deepEqual(all.layers[7].wUp.data, layer.wUp.data, "streamed layer equals the full load");
    assert.equal(all.lmHead, all.tokenEmbedding);
  } finally {
    source.close();
  }
});

Deno.test("a sharded copy of stories260K loads the same as the single file", async () => {
  const src = sharedPath("models/stories260K");
  if (!src) return;
  const config = await loadModelConfig(src);
  const tensors = await readAllRaw(src);
  await withModel([], async (dir) => {
    // Three shards: by layer number modulo 3 (non-layer tensors land in shard 0).
    const weightMap: Record<string, string> = {};
    const shards: TensorToWrite[][] = [[], [], []];
    for (const t of tensors) {
      const k = Number(/layers\.(\d+)\./.exec(t.name)?.[1] ?? 0) % 3;
      shards[k].push(t);
      weightMap[t.name] = `model-0000${k + 1}-of-00003.safetensors`;
    }
    for (let k = 0; k < 3; k++) {
      await writeSafetensors(join(dir, `model-0000${k + 1}-of-00003.safetensors`), shards[k]);
    }
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const model = await openSafetensorsModel(dir);
    assert.equal(model.files.length, 3);
    model.close();
    assertSameWeights(await loadLlamaWeights(dir, config), await loadLlamaWeights(src, config));
  });
});

Deno.test("loadLlamaWeights() handles F16, untied heads and extra tensors", async () => {
  const src = sharedPath("models/stories260K");
  if (!src) return;
  const tensors = await readAllRaw(src);
  const embed = tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  const f16 = tensors.map((t) => ({
    ...t,
    dtype: "F16" as const,
    data: fromFloat32(toFloat32(t.data, "F32"), "F16"),
  }));
  const head = {
    ...embed,
    name: "lm_head.weight",
    data: embed.data.map((b, k) => (k % 4 === 3 ? b ^ 0x80 : b)),
  };
  const extra = {
    name: "model.layers.0.self_attn.rotary_emb.inv_freq",
    dtype: "F32" as const,
    shape: [4],
    data: new Uint8Array(16),
  };
  await withModel([...f16, head, extra], async (dir, config) => {
    const w = await loadLlamaWeights(dir, config);
    assert.notEqual(w.lmHead, w.tokenEmbedding);
    assert.deepEqual(
      w.lmHead.data,
      toFloat32(embed.data, "F32").map((v) => -v),
      "untied head has its own values",
    );
    const norm = tensors.find((x) => x.name === "model.layers.0.input_layernorm.weight")!;
    const want = toFloat32(fromFloat32(toFloat32(norm.data, "F32"), "F16"), "F16");
    assert.deepEqual(w.layers[0].attnNorm.data, want, "F16 widens exactly");
  }, { tie_word_embeddings: false });
});

Deno.test("loadLlamaWeights() rejects missing, misshapen and non-float tensors by name", async (t) => {
  const src = sharedPath("models/stories260K");
  if (!src) return;
  const tensors = await readAllRaw(src);
  const up = "model.layers.2.mlp.up_proj.weight";
  const cases: [string, TensorToWrite[], RegExp, Record<string, unknown>?][] = [
    [
      "missing tensor",
      tensors.filter((x) => x.name !== up),
      /Cannot load tensor "model\.layers\.2\.mlp\.up_proj\.weight" from ".*": missing from the checkpoint/,
    ],
    [
      "transposed tensor",
      tensors.map((x) => (x.name === up ? { ...x, shape: [64, 172] } : x)),
      /Cannot load tensor "model\.layers\.2\.mlp\.up_proj\.weight" from ".*model\.safetensors": expected shape \[172, 64\], got \[64, 172\]/,
    ],
    [
      "integer tensor",
      tensors.map((x) => (x.name === up ? { ...x, dtype: "I32" as const } : x)),
      /Cannot load tensor "model\.layers\.2\.mlp\.up_proj\.weight" from ".*": dtype I32 is not a float type/,
    ],
    ["untied without lm_head", tensors, /Cannot load tensor "lm_head\.weight" from ".*": missing/, {
      tie_word_embeddings: false,
    }],
    [
      "config disagrees",
      tensors,
      /Cannot load tensor "model\.embed_tokens\.weight" from ".*": expected shape \[600, 64\], got \[512, 64\]/,
      { vocab_size: 600 },
    ],
  ];
  for (const [what, files, message, patch] of cases) {
    await t.step(what, async () => {
      await withModel(files, async (dir, config) => {
        await assert.rejects(() => loadLlamaWeights(dir, config), message);
      }, patch);
    });
  }
  // A config built in memory goes through the same checks.
  const small = parseModelConfig({
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 6,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    vocab_size: 512,
    max_position_embeddings: 512,
    tie_word_embeddings: true,
  }, null);
  await assert.rejects(
    () => loadLlamaWeights(src, small),
    /Cannot load tensor "model\.layers\.5\.input_layernorm\.weight" from ".*": missing/,
  );
});
