/**
 * `deno run -A bench/random_folder.ts --shape smollm2-360m|smollm2-135m|smollm2-tiny (--out <dir> | --hf-cache <dir>)
 *  [--tokenizer <dir>]`
 *
 * Writes a random-weight model in Hugging Face layout (config.json, model.safetensors in BF16, tokenizer files
 * copied from --tokenizer, default ../shared/models/lq-49m, which has SmolLM2's tokenizer and ChatML) at the
 * exact shape of a SmolLM2 instruct model, so the default model's first start (the startup quantization job)
 * can be timed on machines without internet. With --hf-cache the folder is written as the cached snapshot of the
 * real repo id (refs/main → a made-up commit), so `HF_HUB_CACHE=<dir> HF_HUB_OFFLINE=1 deno task start` runs the
 * README's first command unchanged. Every figure made with it says "random weights": the work done
 * (forwards, Hessians, GPTQ sweeps) is the real model's, the numbers are not.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { type TensorToWrite, writeSafetensors } from "../inference/formats/mod.ts";

/** The repo id each shape imitates. */
export const REPO_IDS: Readonly<Record<string, string>> = {
  "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
  "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
};

/** The made-up commit of the cached snapshot (40 hex digits, as the resolver expects). */
export const RANDOM_COMMIT = "0000000000000000000000000000000072616e64";

/** config.json of HuggingFaceTB/SmolLM2-{360M,135M}-Instruct (the fields the loader and the hash read). */
export const SHAPES: Readonly<Record<string, Record<string, unknown>>> = {
  "smollm2-360m": smolConfig({ hidden: 960, intermediate: 2560, layers: 32, heads: 15, kvHeads: 5 }),
  "smollm2-135m": smolConfig({ hidden: 576, intermediate: 1536, layers: 30, heads: 9, kvHeads: 3 }),
  // SmolLM2's vocabulary on a model small enough that a lavapipe decode step takes milliseconds (host-side
  // measurements such as bench/mask_stall.ts); no repo id.
  "smollm2-tiny": smolConfig({ hidden: 64, intermediate: 256, layers: 2, heads: 1, kvHeads: 1 }),
};

function smolConfig(
  s: { hidden: number; intermediate: number; layers: number; heads: number; kvHeads: number },
) {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    attention_bias: false,
    mlp_bias: false,
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 2,
    head_dim: 64,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    vocab_size: 49152,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 100000,
    rope_scaling: null,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
  };
}

/** Uniform ±scale BF16 values (the top halves of f32s) from a seeded xorshift, as little-endian bytes. */
function randomBf16(count: number, seed: number, scale = 0.02): Uint8Array {
  const f = new Float32Array(count);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    f[i] = ((s >>> 0) / 4294967296 - 0.5) * 2 * scale;
  }
  const halves = new Uint16Array(f.buffer);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = halves[2 * i + 1];
  return new Uint8Array(out.buffer);
}

function ones(count: number): Uint8Array {
  return new Uint8Array(new Uint16Array(count).fill(0x3f80).buffer); // 1.0 in BF16
}

/**
 * Writes the folder.
 * @param shape a key of {@link SHAPES}
 * @param out the folder to create (replaced files inside it)
 * @param tokenizerDir where tokenizer.json, tokenizer_config.json and generation_config.json come from
 */
export async function writeRandomFolder(shape: string, out: string, tokenizerDir: string): Promise<void> {
  const config = SHAPES[shape];
  if (!config) throw new Error(`Cannot build shape "${shape}": known shapes are ${Object.keys(SHAPES)}`);
  const d = config.hidden_size as number, f = config.intermediate_size as number;
  const q = (config.num_attention_heads as number) * 64, kv = (config.num_key_value_heads as number) * 64;
  let seed = 1;
  const t = (name: string, shape: number[], data?: Uint8Array): TensorToWrite => ({
    name,
    dtype: "BF16",
    shape,
    data: data ?? randomBf16(shape[0] * (shape[1] ?? 1), seed++),
  });
  const tensors = [t("model.embed_tokens.weight", [config.vocab_size as number, d])];
  for (let i = 0; i < (config.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}`;
    tensors.push(
      t(`${p}.input_layernorm.weight`, [d], ones(d)),
      t(`${p}.self_attn.q_proj.weight`, [q, d]),
      t(`${p}.self_attn.k_proj.weight`, [kv, d]),
      t(`${p}.self_attn.v_proj.weight`, [kv, d]),
      t(`${p}.self_attn.o_proj.weight`, [d, q]),
      t(`${p}.post_attention_layernorm.weight`, [d], ones(d)),
      t(`${p}.mlp.gate_proj.weight`, [f, d]),
      t(`${p}.mlp.up_proj.weight`, [f, d]),
      t(`${p}.mlp.down_proj.weight`, [d, f]),
    );
  }
  tensors.push(t("model.norm.weight", [d], ones(d)));
  await Deno.mkdir(out, { recursive: true });
  await Deno.writeTextFile(join(out, "config.json"), JSON.stringify(config, null, 2));
  for (const file of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    await Deno.copyFile(join(tokenizerDir, file), join(out, file));
  }
  await writeSafetensors(join(out, "model.safetensors"), tensors, { format: "pt" });
}

/** Makes `models--org--name/{refs/main, snapshots/<commit>}` in a hub cache; returns the snapshot folder. */
async function cachedSnapshot(cache: string, repoId: string): Promise<string> {
  const repoDir = join(cache, `models--${repoId.replace("/", "--")}`);
  await Deno.mkdir(join(repoDir, "refs"), { recursive: true });
  await Deno.writeTextFile(join(repoDir, "refs", "main"), RANDOM_COMMIT);
  return join(repoDir, "snapshots", RANDOM_COMMIT);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      shape: { type: "string", default: "smollm2-360m" },
      out: { type: "string" },
      tokenizer: { type: "string", default: "../shared/models/lq-49m" },
      "hf-cache": { type: "string" },
    },
  });
  const repo = REPO_IDS[values.shape];
  const out = values["hf-cache"] && repo ? await cachedSnapshot(values["hf-cache"], repo) : values.out;
  if (!out) throw new Error("Missing --out or --hf-cache: where to write the model");
  const t0 = performance.now();
  await writeRandomFolder(values.shape, out, values.tokenizer);
  console.log(
    `[random_folder] ${values.shape} (random weights) in ${out}, ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
}
