/**
 * llama.cpp's tokenizer test vectors (../shared/tokenizers/llamacpp-tokenizer-tests), which llama.cpp's
 * `convert_hf_to_gguf_update.py` wrote from the HF tokenizers with `add_special_tokens=False`:
 * `<name>.inp` holds the inputs, each followed by "\n__ggml_vocab_test__\n"; `<name>.out` one line of
 * space-separated ids per input. `ggml-vocab-llama-bpe` (Llama-3) is not run: ../shared has no Llama-3 vocabulary.
 */
import assert from "node:assert/strict";
import { createTokenizer, loadTokenizer, type Tokenizer, type TokenizerJson } from "./tokenizer.ts";
import { sharedPath } from "../../tests/_gpu.ts";

const VECTORS = "tokenizers/llamacpp-tokenizer-tests";

function readVectors(dir: string, name: string): { text: string; ids: number[] }[] {
  const inputs = Deno.readTextFileSync(`${dir}/${name}.inp`).split("\n__ggml_vocab_test__\n");
  assert.equal(inputs.pop(), "", `${name}.inp must end with a marker`);
  const lines = Deno.readTextFileSync(`${dir}/${name}.out`).split("\n");
  assert.equal(lines.pop(), "");
  assert.equal(lines.length, inputs.length, `${name}: one output line per input`);
  return inputs.map((text, i) => ({ text, ids: lines[i].split(" ").filter((s) => s !== "").map(Number) }));
}

function checkVectors(tok: Tokenizer, dir: string, name: string): void {
  const cases = readVectors(dir, name);
  assert.ok(cases.length >= 40);
  for (const { text, ids } of cases) {
    assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), ids, `${name}: ${JSON.stringify(text)}`);
    assert.equal(tok.decode(ids), text, `${name} decode: ${JSON.stringify(text)}`);
  }
}

Deno.test("Qwen3 tokenizer.json passes llama.cpp's qwen2 vectors (Qwen2 and Qwen3 share the BPE vocab)", async () => {
  const dir = sharedPath(VECTORS);
  const qwen = sharedPath("tokenizers/qwen3");
  if (!dir || !qwen) return;
  const tok = await loadTokenizer(qwen);
  checkVectors(tok, dir, "ggml-vocab-qwen2.gguf");
  assert.equal(tok.vocabSize, 151669);
  assert.equal(tok.bosTokenId, null);
  assert.equal(tok.eosTokenId, tok.tokenToId("<|im_end|>"));
  // <think> is an added token that is not special: parsed even with special parsing off, kept by decode
  const think = tok.tokenToId("<think>")!;
  assert.deepEqual(tok.encode("<think>", { parseSpecialTokens: false }), [think]);
  assert.notDeepEqual(tok.encode("<|im_start|>", { parseSpecialTokens: false }), [
    tok.tokenToId("<|im_start|>"),
  ]);
  assert.equal(tok.decode([think, tok.tokenToId("<|endoftext|>")!], { skipSpecialTokens: true }), "<think>");
});

Deno.test("GPT-2 vocab.json + merges.txt pass llama.cpp's gpt-2 vectors", () => {
  const dir = sharedPath(VECTORS);
  const gpt2 = sharedPath("tokenizers/gpt2");
  if (!dir || !gpt2) return;
  checkVectors(createTokenizer(gpt2Json(gpt2)), dir, "ggml-vocab-gpt-2.gguf");
});

Deno.test("Llama-2 tokenizer.model as HF BPE passes llama.cpp's llama-spm and phi-3 vectors", () => {
  const dir = sharedPath(VECTORS);
  const spm = sharedPath("tokenizers/llama2-spm/tokenizer.model");
  if (!dir || !spm) return;
  const tok = createTokenizer(llamaSpmJson(Deno.readFileSync(spm)));
  checkVectors(tok, dir, "ggml-vocab-llama-spm.gguf");
  // Phi-3 keeps Llama-2's 32000 pieces; its vectors only hold plain text
  checkVectors(tok, dir, "ggml-vocab-phi-3.gguf");
  assert.deepEqual(tok.encode("Hello"), [1, 15043]);
});

/** The tokenizer.json that HF builds for GPT-2 from its two original files. */
function gpt2Json(dir: string): TokenizerJson {
  const vocab = JSON.parse(Deno.readTextFileSync(`${dir}/gpt2_vocab.json`)) as Record<string, number>;
  const merges = Deno.readTextFileSync(`${dir}/gpt2_merges.txt`).split("\n")
    .filter((line) => line !== "" && !line.startsWith("#version"));
  return {
    model: { type: "BPE", vocab, merges },
    added_tokens: [{ id: vocab["<|endoftext|>"], content: "<|endoftext|>", special: true }],
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    decoder: { type: "ByteLevel" },
  };
}

/**
 * The tokenizer.json that transformers' LlamaConverter writes for a SentencePiece BPE model.
 * Merges follow `SentencePieceExtractor`: every split of a piece into two vocabulary pieces, ranked by
 * the merged piece's score (highest first), ties by vocabulary order.
 */
function llamaSpmJson(model: Uint8Array): TokenizerJson {
  const pieces = readSentencePieces(model);
  const vocab: Record<string, number> = {};
  pieces.forEach((p, id) => vocab[p.piece] = id);
  const merges: { pair: [string, string]; score: number }[] = [];
  for (const { piece, score } of pieces) {
    const chars = Array.from(piece);
    const local: [string, string][] = [];
    for (let k = 1; k < chars.length; k++) {
      const pair: [string, string] = [chars.slice(0, k).join(""), chars.slice(k).join("")];
      if (pair[0] in vocab && pair[1] in vocab) local.push(pair);
    }
    local.sort((a, b) => vocab[a[0]] - vocab[b[0]] || vocab[a[1]] - vocab[b[1]]);
    for (const pair of local) merges.push({ pair, score });
  }
  merges.sort((a, b) => b.score - a.score); // stable, like Python's sorted
  const template = [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }];
  return {
    model: {
      type: "BPE",
      vocab,
      merges: merges.map((m) => m.pair),
      unk_token: "<unk>",
      fuse_unk: true,
      byte_fallback: true,
    },
    added_tokens: ["<unk>", "<s>", "</s>"].map((content) => ({ id: vocab[content], content, special: true })),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: "▁" }, {
        type: "Replace",
        pattern: { String: " " },
        content: "▁",
      }],
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    post_processor: { type: "TemplateProcessing", single: template, special_tokens: { "<s>": { ids: [1] } } },
  };
}

/** `ModelProto.pieces` of a SentencePiece model file: field 1 messages of {1: piece, 2: score}. */
function readSentencePieces(buf: Uint8Array): { piece: string; score: number }[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const utf8 = new TextDecoder();
  let pos = 0;
  const varint = () => {
    let value = 0;
    for (let scale = 1;; scale *= 128) {
      const b = buf[pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
    }
  };
  const skip = (wireType: number) => {
    if (wireType === 0) varint();
    else if (wireType === 1) pos += 8;
    else if (wireType === 2) {
      const len = varint(); // not `pos += varint()`: that reads pos before varint() moves it
      pos += len;
    } else if (wireType === 5) pos += 4;
    else throw new Error(`unexpected protobuf wire type ${wireType}`);
  };
  const pieces: { piece: string; score: number }[] = [];
  while (pos < buf.length) {
    const key = varint();
    if (key !== (1 << 3 | 2)) {
      skip(key & 7);
      continue;
    }
    const end = varint() + pos;
    const entry = { piece: "", score: 0 };
    while (pos < end) {
      const k = varint();
      if (k === (1 << 3 | 2)) {
        const len = varint();
        entry.piece = utf8.decode(buf.subarray(pos, pos + len));
        pos += len;
      } else if (k === (2 << 3 | 5)) {
        entry.score = view.getFloat32(pos, true);
        pos += 4;
      } else skip(k & 7);
    }
    pieces.push(entry);
  }
  return pieces;
}
