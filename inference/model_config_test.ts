import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModelConfig, type ModelConfig, parseModelConfig, ropeInvFreq } from "./model_config.ts";
import { sharedPath } from "../tests/_gpu.ts";

async function readJson(path: string) {
  return JSON.parse(await Deno.readTextFile(path));
}

/** A small valid Llama config in the older (transformers 4) form. */
function llama(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 2,
    num_attention_heads: 8,
    max_position_embeddings: 256,
    vocab_size: 100,
    rms_norm_eps: 1e-6,
    rope_theta: 500000.0,
    rope_scaling: null,
    ...overrides,
  };
}

Deno.test("loadModelConfig() maps the real models' config.json fields", async (t) => {
  for (const name of ["stories260K", "stories260K-bf16", "lq-49m"]) {
    await t.step(name, async () => {
      const dir = sharedPath(`models/${name}`);
      if (!dir) return;
      const raw = await readJson(join(dir, "config.json"));
      const gen = await readJson(join(dir, "generation_config.json"));
      const c = await loadModelConfig(dir);
      assert.ok(Object.isFrozen(c) && Object.isFrozen(c.eosTokenIds));
      assert.equal(c.dim, raw.hidden_size);
      assert.equal(c.hiddenDim, raw.intermediate_size);
      assert.equal(c.nLayers, raw.num_hidden_layers);
      assert.equal(c.nHeads, raw.num_attention_heads);
      assert.equal(c.nKvHeads, raw.num_key_value_heads);
      assert.equal(c.headDim, raw.head_dim);
      assert.equal(c.kvDim, raw.num_key_value_heads * raw.head_dim);
      assert.equal(c.vocabSize, raw.vocab_size);
      assert.equal(c.seqLen, raw.max_position_embeddings);
      assert.equal(c.normEps, raw.rms_norm_eps);
      assert.equal(c.ropeTheta, raw.rope_parameters.rope_theta);
      assert.equal(c.ropeScaling, null);
      assert.equal(c.tieWordEmbeddings, raw.tie_word_embeddings);
      assert.equal(c.torchDtype, raw.dtype);
      assert.equal(c.bosTokenId, gen.bos_token_id);
      assert.deepEqual(c.eosTokenIds, [gen.eos_token_id]);
      assert.equal(c.quantization, null);
    });
  }
  const lq = sharedPath("models/lq-49m");
  if (lq) {
    const c = await loadModelConfig(lq);
    assert.deepEqual([c.dim, c.nLayers, c.nKvHeads, c.headDim, c.vocabSize], [512, 8, 4, 64, 49152]);
    assert.equal(c.torchDtype, "bfloat16");
  }
});

Deno.test("loadModelConfig() falls back to config.json ids and defaults", async () => {
  const dir = await Deno.makeTempDir({ prefix: "model_config_test_" });
  try {
    const raw = llama({
      eos_token_id: [2, 7],
      bos_token_id: 1,
      torch_dtype: "float16",
      quantization_config: { b: 4 },
    });
    delete raw.num_key_value_heads;
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(raw));
    const c = await loadModelConfig(dir);
    assert.deepEqual(c.eosTokenIds, [2, 7]);
    assert.equal(c.bosTokenId, 1);
    assert.equal(c.nKvHeads, 8, "num_key_value_heads defaults to num_attention_heads");
    assert.equal(c.headDim, 8, "head_dim defaults to hidden_size / num_attention_heads");
    assert.equal(c.kvDim, 64);
    assert.equal(c.ropeTheta, 500000, "top-level rope_theta");
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.torchDtype, "float16");
    assert.deepEqual(c.quantization, { b: 4 });
    // generation_config.json wins when present, and may hold a list.
    await Deno.writeTextFile(
      join(dir, "generation_config.json"),
      JSON.stringify({ eos_token_id: [5, 6, 9] }),
    );
    assert.deepEqual((await loadModelConfig(dir)).eosTokenIds, [5, 6, 9]);
    await Deno.writeTextFile(join(dir, "config.json"), "{ nope");
    await assert.rejects(
      () => loadModelConfig(dir),
      /Cannot read model config ".*config\.json": invalid JSON/,
    );
    await Deno.remove(join(dir, "config.json"));
    await assert.rejects(() => loadModelConfig(dir), /Cannot read model config ".*config\.json"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseModelConfig() reads llama3 rope scaling in both spellings", () => {
  const params = {
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const expected = {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const v4 = parseModelConfig(llama({ rope_scaling: { rope_type: "llama3", ...params } }), null);
  assert.deepEqual(v4.ropeScaling, expected);
  const old = parseModelConfig(llama({ rope_scaling: { type: "llama3", ...params } }), null);
  assert.deepEqual(old.ropeScaling, expected);
  const raw = llama({ rope_parameters: { rope_type: "llama3", rope_theta: 1e6, ...params } });
  delete raw.rope_theta;
  const v5 = parseModelConfig(raw, null);
  assert.deepEqual([v5.ropeScaling, v5.ropeTheta], [expected, 1e6]);
  const plain = llama();
  delete plain.rope_theta;
  assert.equal(parseModelConfig(plain, null).ropeTheta, 10000, "rope_theta defaults to 10000");
});

Deno.test("parseModelConfig() rejects unsupported models naming the field", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      llama({ architectures: ["GPT2LMHeadModel"] }),
      /unsupported architecture "GPT2LMHeadModel"; supported: .*LlamaForCausalLM/,
    ],
    [llama({ model_type: "qwen2" }), /unsupported model_type "qwen2"/],
    [llama({ model_type: "mistral", sliding_window: 128 }), /sliding_window 128 is not supported/],
    [llama({ hidden_act: "gelu" }), /hidden_act "gelu" is not supported/],
    [llama({ attention_bias: true }), /attention_bias true is not supported/],
    [llama({ hidden_size: undefined }), /hidden_size is missing/],
    [llama({ num_hidden_layers: 2.5 }), /num_hidden_layers 2.5 is not a positive integer/],
    [llama({ num_key_value_heads: 3 }), /num_attention_heads 8 is not a multiple of num_key_value_heads 3/],
    [llama({ hidden_size: 60 }), /hidden_size 60 is not a multiple of num_attention_heads 8/],
    [llama({ head_dim: 7 }), /head_dim 7 must be even/],
    [llama({ rms_norm_eps: 0 }), /rms_norm_eps 0 is not a positive number/],
    [llama({ rope_scaling: { rope_type: "yarn", factor: 4 } }), /unsupported rope_scaling\.rope_type "yarn"/],
    [llama({ rope_scaling: { rope_type: "llama3", factor: 8 } }), /rope_scaling\.low_freq_factor undefined/],
    [llama({ tie_word_embeddings: "yes" }), /tie_word_embeddings "yes" is not a boolean/],
    [llama({ eos_token_id: "2" }), /eos_token_id "2" is not a token id/],
  ];
  for (const [raw, message] of cases) {
    assert.throws(() => parseModelConfig(raw, null, "m/config.json"), (err: Error) => {
      assert.match(err.message, /^Cannot load model config "m\/config\.json": /);
      assert.match(err.message, message);
      return true;
    });
  }
  // A window as long as the context never applies, so Mistral-style configs with one are served.
  const mistral = parseModelConfig(llama({ model_type: "mistral", sliding_window: 256 }), null);
  assert.equal(mistral.seqLen, 256);
});

type Rope = Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">;

Deno.test("ropeInvFreq() matches theta^(-2i/d) and the llama3 rule", () => {
  const plain: Rope = { headDim: 64, ropeTheta: 10000, ropeScaling: null };
  const inv = ropeInvFreq(plain);
  assert.equal(inv.length, 32);
  assert.equal(inv[0], 1);
  for (let i = 0; i < inv.length; i++) {
    const exact = 1 / Math.pow(10000, (2 * i) / 64);
    assert.ok(Math.abs(inv[i] - exact) <= 2 ** -23 * exact, `inv[${i}] ${inv[i]} vs ${exact}`);
  }
  const s = {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const base = ropeInvFreq({ headDim: 128, ropeTheta: 500000, ropeScaling: null });
  const scaled = ropeInvFreq({ headDim: 128, ropeTheta: 500000, ropeScaling: s as Rope["ropeScaling"] });
  let bands = [0, 0, 0];
  for (let i = 0; i < base.length; i++) {
    const wavelen = (2 * Math.PI) / base[i];
    if (wavelen < 8192 / 4) {
      assert.equal(scaled[i], base[i], `high frequency ${i} is kept`);
      bands = [bands[0] + 1, bands[1], bands[2]];
    } else if (wavelen > 8192 / 1) {
      assert.equal(scaled[i], Math.fround(base[i] / 8), `low frequency ${i} is divided by factor`);
      bands = [bands[0], bands[1], bands[2] + 1];
    } else {
      // f64 reference of the smooth blend.
      const smooth = (8192 / wavelen - 1) / (4 - 1);
      const want = (1 - smooth) * base[i] / 8 + smooth * base[i];
      assert.ok(Math.abs(scaled[i] - want) <= 1e-6 * want, `medium ${i}: ${scaled[i]} vs ${want}`);
      assert.ok(scaled[i] < base[i] && scaled[i] > base[i] / 8);
      bands = [bands[0], bands[1] + 1, bands[2]];
    }
  }
  assert.ok(bands.every((n) => n > 0), `each band is exercised: ${bands}`);
});
