import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModelConfig, parseModelConfig, ropeInvFreq, SUPPORTED_ARCHITECTURES } from "./model_config.ts";
import { writeSafetensors } from "../formats/mod.ts";
import { sharedPath } from "../../tests/_gpu.ts";

/** A small Gemma 3 text config in the transformers 4 spelling (no layer_types, no rope_parameters). */
function gemma4x(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ["Gemma3ForCausalLM"],
    model_type: "gemma3_text",
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 7,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    head_dim: 32,
    max_position_embeddings: 8192,
    vocab_size: 100,
    sliding_window: 512,
    sliding_window_pattern: 3,
    rope_theta: 1000000,
    rope_local_base_freq: 10000,
    rope_scaling: { rope_type: "linear", factor: 8 },
    query_pre_attn_scalar: 256,
    final_logit_softcapping: 30,
    torch_dtype: "bfloat16",
    ...overrides,
  };
}

Deno.test("loadModelConfig() reads what each tiny architecture changes in the layer", async (t) => {
  const want: Record<string, Record<string, unknown>> = {
    "tiny-llama3": {
      family: "llama",
      qkvBias: false,
      qkNorm: false,
      tieWordEmbeddings: true,
      slidingWindow: null,
    },
    "tiny-qwen2": { family: "qwen2", qkvBias: true, qkNorm: false, ropeTheta: 1e6, slidingWindow: null },
    "tiny-qwen3": { family: "qwen3", qkvBias: false, qkNorm: true, headDim: 16, slidingWindow: null },
    "tiny-mistral-swa": {
      family: "mistral",
      slidingWindow: 24,
      layerTypes: ["sliding", "sliding", "sliding"],
    },
    "tiny-gemma3": {
      family: "gemma3",
      qkNorm: true,
      sandwichNorms: true,
      normWeightOffset: 1,
      activation: "gelu_tanh",
      embedScale: 8,
      attnScale: 0.25,
      slidingWindow: 24,
      layerTypes: ["sliding", "sliding", "full"],
      ropeTheta: 1e6,
      localRope: { theta: 10000, scaling: null },
      tieWordEmbeddings: true,
      finalSoftcap: null,
    },
  };
  for (const [name, fields] of Object.entries(want)) {
    await t.step(name, async () => {
      const dir = sharedPath(`models/${name}`);
      if (!dir) return;
      const c = await loadModelConfig(dir);
      for (const [k, v] of Object.entries(fields)) {
        assert.deepEqual(c[k as keyof typeof c], v, `${name} ${k}`);
      }
      assert.equal(c.tensorPrefix, "model.");
    });
  }
});

Deno.test("parseModelConfig() reads Gemma 3 in the transformers 4 spelling", () => {
  const c = parseModelConfig(gemma4x(), null);
  // Every third layer is global (sliding_window_pattern), the rest slide.
  assert.deepEqual(c.layerTypes, ["sliding", "sliding", "full", "sliding", "sliding", "full", "sliding"]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling], [1e6, { type: "linear", factor: 8 }]);
  assert.deepEqual(c.localRope, { theta: 10000, scaling: null });
  assert.equal(c.attnScale, 1 / 16);
  assert.equal(c.finalSoftcap, 30);
  assert.equal(c.attnSoftcap, null);
  assert.equal(c.embedScale, 8, "√64 is exact in bf16");
  assert.equal(c.tieWordEmbeddings, true, "Gemma ties by default");
  // √3072 = 55.43 becomes 55.5 in bf16 (transformers casts the scale to the weights' dtype), stays f32 in f32.
  assert.equal(parseModelConfig(gemma4x({ hidden_size: 3072 }), null).embedScale, 55.5);
  const f32 = parseModelConfig(gemma4x({ hidden_size: 3072, torch_dtype: "float32" }), null).embedScale;
  assert.equal(f32, Math.fround(Math.sqrt(3072)));
  // Linear scaling divides every inverse frequency by its factor.
  const plain = ropeInvFreq({ headDim: 32, ropeTheta: 1e6, ropeScaling: null });
  const linear = ropeInvFreq({ headDim: 32, ropeTheta: 1e6, ropeScaling: { type: "linear", factor: 8 } });
  assert.deepEqual(linear, plain.map((v) => Math.fround(v / 8)));
});

Deno.test("parseModelConfig() reads the text config of Gemma3ForConditionalGeneration", async () => {
  const { architectures: _, ...text } = gemma4x();
  const raw = {
    architectures: ["Gemma3ForConditionalGeneration"],
    model_type: "gemma3",
    text_config: text,
    vision_config: { hidden_size: 1152 },
    torch_dtype: "bfloat16",
  };
  const c = parseModelConfig(raw, null);
  assert.deepEqual([c.family, c.dim, c.nLayers, c.tensorPrefix], ["gemma3", 64, 7, "model.language_model."]);
  // Older checkpoints keep the text model under language_model.model.; the loader looks at the tensor names.
  const dir = await Deno.makeTempDir({ prefix: "model_arch_test_" });
  try {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(raw));
    const data = new Uint8Array(4);
    const tensor = {
      name: "language_model.model.embed_tokens.weight",
      dtype: "F32" as const,
      shape: [1],
      data,
    };
    await writeSafetensors(join(dir, "model.safetensors"), [tensor], {});
    assert.equal((await loadModelConfig(dir)).tensorPrefix, "language_model.model.");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseModelConfig() derives Qwen and Mistral windows as their configuration classes do", () => {
  const qwen = {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    max_position_embeddings: 1024,
    vocab_size: 100,
    sliding_window: 128,
  };
  assert.equal(parseModelConfig({ ...qwen, use_sliding_window: false }, null).slidingWindow, null);
  const sliding = parseModelConfig({ ...qwen, use_sliding_window: true, max_window_layers: 2 }, null);
  assert.deepEqual(sliding.layerTypes, ["full", "full", "sliding", "sliding"]);
  assert.equal(sliding.slidingWindow, 128);
  const { architectures: _, ...untyped } = qwen;
  assert.equal(parseModelConfig({ ...untyped, model_type: "qwen3" }, null).architecture, "Qwen3ForCausalLM");
  assert.throws(
    () => parseModelConfig({ ...qwen, use_sliding_window: true, layer_types: ["full_attention"] }, null),
    /layer_types has 1 entries for 4 layers/,
  );
  assert.throws(() => parseModelConfig({ ...qwen, mlp_bias: true }, null), /mlp_bias true is not supported/);
  assert.throws(() => parseModelConfig(gemma4x({ hidden_activation: "gelu" }), null), /hidden_act "gelu"/);
  assert.equal(SUPPORTED_ARCHITECTURES.length, 6);
});
