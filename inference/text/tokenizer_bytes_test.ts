/**
 * `Tokenizer.tokenBytes`: the bytes a token adds in the middle of a text must add up, with the first
 * token's decode, to the bytes of the whole decode, for every decoder chain of the ../shared tokenizers.
 */
import assert from "node:assert/strict";
import { createTokenizer, loadTokenizer, type Tokenizer, type TokenizerJson } from "./tokenizer.ts";
import { buildByteDecoder } from "./tokenizer_decoders.ts";
import { sharedPath } from "../../tests/_gpu.ts";

const UTF8 = new TextEncoder();

/** Each starts with a plain ASCII word, so the first token decodes alone without U+FFFD. */
const TEXTS = [
  "Hello world",
  "Hello, café naïve résumé à l'œuvre",
  "Hello 日本語の文章です。中文也可以",
  "Hello 😀🎉 emoji 👍🏽 and 🇫🇷",
  "Hello  two  spaces,\n\nnew lines\n\tand tabs   ",
  "Hello\nZürich — “quotes” ½ ∑ x² Ωmega",
];

function bytesOf(...parts: Uint8Array[]): number[] {
  return parts.flatMap((p) => [...p]);
}

/** Checks bytes(decode(ids)) == bytes(decode([ids[0]])) ++ tokenBytes(ids[1..]) for every text. */
function checkTexts(tok: Tokenizer, name: string, addSpecialTokens: boolean): void {
  for (const text of TEXTS) {
    const ids = tok.encode(text, { addSpecialTokens });
    const label = `${name}: ${JSON.stringify(text)} ${JSON.stringify(ids)}`;
    const head = tok.decode([ids[0]]);
    assert.ok(!head.includes("\uFFFD"), `${label}: first token decodes to ${JSON.stringify(head)}`);
    const rest = ids.slice(1).map((id) => {
      const bytes = tok.tokenBytes(id);
      assert.ok(bytes !== null, `${label}: no bytes for id ${id}`);
      return bytes;
    });
    assert.deepEqual(bytesOf(UTF8.encode(head), ...rest), bytesOf(UTF8.encode(tok.decode(ids))), label);
  }
}

/** Special ids give null, as do ids outside the vocabulary; the table is built once, vocabSize long. */
function checkSpecialAndTable(tok: Tokenizer): void {
  assert.ok(tok.specialTokenIds.size > 0);
  for (const id of tok.specialTokenIds) assert.equal(tok.tokenBytes(id), null, `special id ${id}`);
  for (const id of [-1, 1.5, tok.vocabSize, tok.vocabSize + 7]) assert.equal(tok.tokenBytes(id), null);
  const table = tok.tokenBytesTable();
  assert.equal(table.length, tok.vocabSize);
  assert.equal(tok.tokenBytesTable(), table, "the table is cached");
  assert.equal(table.filter((b) => b === null).length, tok.specialTokenIds.size);
}

/** Some token of the texts must end inside a UTF-8 character, or the test would not exercise bytes. */
function checkSplitsACharacter(tok: Tokenizer): void {
  const strict = new TextDecoder("utf-8", { fatal: true });
  const ids = TEXTS.flatMap((t) => tok.encode(t, { addSpecialTokens: false }));
  assert.ok(
    ids.some((id) => {
      try {
        strict.decode(tok.tokenBytes(id)!);
        return false;
      } catch {
        return true;
      }
    }),
    "no token of the texts is an incomplete UTF-8 sequence",
  );
}

Deno.test("tokenBytes() adds up to decode() for the byte-level lq-49m and SmolLM2 tokenizers", async () => {
  for (const rel of ["models/lq-49m", "tokenizers/smollm2-135m-instruct"]) {
    const dir = sharedPath(rel);
    if (!dir) return;
    const tok = await loadTokenizer(dir);
    checkTexts(tok, rel, true);
    checkSpecialAndTable(tok);
    checkSplitsACharacter(tok);
    assert.deepEqual(tok.tokenBytes(tok.tokenToId("Ġworld")!), UTF8.encode(" world"));
    assert.deepEqual(tok.tokenBytes(tok.tokenToId("Ċ")!), Uint8Array.of(10));
  }
});

Deno.test("tokenBytes() adds up to decode() for Qwen3 (NFC, no-regex ByteLevel, non-special added tokens)", async () => {
  const dir = sharedPath("tokenizers/qwen3");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  checkTexts(tok, "qwen3", true);
  checkSpecialAndTable(tok);
  checkSplitsACharacter(tok);
  // <think> is an added token that is not special: it is text, and decodes to its content
  assert.deepEqual(tok.tokenBytes(tok.tokenToId("<think>")!), UTF8.encode("<think>"));
  const ids = tok.encode("Hello <think>ok</think> 😀");
  assert.ok(ids.includes(tok.tokenToId("<think>")!));
  assert.deepEqual(
    bytesOf(UTF8.encode(tok.decode([ids[0]])), ...ids.slice(1).map((id) => tok.tokenBytes(id)!)),
    [...UTF8.encode(tok.decode(ids))],
  );
});

Deno.test("tokenBytes() adds up to decode() for stories260K (Replace, ByteFallback, Fuse, Strip)", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  checkTexts(tok, "stories260K", false);
  checkTexts(tok, "stories260K with BOS", true); // ids[0] is then <s>, and the Strip finds no space to drop
  checkSpecialAndTable(tok);
  checkSplitsACharacter(tok);
  // a byte-fallback token is its one byte; a ▁ is a space, since the leading-space Strip is for the text's start
  assert.deepEqual(tok.tokenBytes(tok.tokenToId("<0xE6>")!), Uint8Array.of(0xe6));
  assert.deepEqual(tok.tokenBytes(tok.tokenToId("<0x0A>")!), Uint8Array.of(10));
  assert.deepEqual(tok.tokenBytes(tok.tokenToId("▁Once")!), UTF8.encode(" Once"));
});

Deno.test("tokenBytes() adds up to decode() for Metaspace (Mistral) and Replace-without-Strip (Gemma) chains", () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const json = JSON.parse(Deno.readTextFileSync(`${dir}/tokenizer.json`)) as TokenizerJson;
  const chains = {
    "Metaspace first": [{ type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false }],
    "Metaspace never": [{ type: "Metaspace", replacement: "▁", prepend_scheme: "never", split: false }],
    "Gemma Replace": [{ type: "Replace", pattern: { String: "▁" }, content: " " }],
  };
  for (const [name, head] of Object.entries(chains)) {
    const decoders = [...head, { type: "ByteFallback" }, { type: "Fuse" }];
    const tok = createTokenizer({ ...json, decoder: { type: "Sequence", decoders } });
    checkTexts(tok, name, false);
    checkSpecialAndTable(tok);
    assert.deepEqual(tok.tokenBytes(tok.tokenToId("▁Once")!), UTF8.encode(" Once"), name);
    assert.deepEqual(tok.tokenBytes(tok.tokenToId("<0xF0>")!), Uint8Array.of(0xf0), name);
  }
});

Deno.test("tokenBytes() of a tokenizer without a decoder is the token after a space, as decode() joins them", () => {
  const tok = createTokenizer({
    model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2, "<s>": 3 }, merges: ["a b"] },
    added_tokens: [{ id: 3, content: "<s>", special: true }, { id: 5, content: "<x>", special: false }],
  });
  assert.equal(tok.decode([2, 0, 5]), "ab a <x>");
  assert.deepEqual(tok.tokenBytes(0), UTF8.encode(" a"));
  assert.deepEqual(tok.tokenBytes(5), UTF8.encode(" <x>"));
  assert.equal(tok.tokenBytes(3), null, "special");
  assert.equal(tok.tokenBytes(4), null, "an id between the vocabulary and the added tokens is unknown");
  assert.equal(tok.tokenBytesTable().length, 6);
});

Deno.test("buildByteDecoder() follows each step for a token that is not the first", () => {
  assert.equal(buildByteDecoder(null), null);
  const byteLevel = buildByteDecoder({ type: "ByteLevel" })!;
  assert.deepEqual(byteLevel("Ġæ"), Uint8Array.of(32, 0xe6), "a space, then the first byte of 日");
  assert.deepEqual(byteLevel("<|im_end|>"), UTF8.encode("<|im_end|>"));
  assert.deepEqual(
    byteLevel("Ġ日"),
    UTF8.encode("Ġ日"),
    "a char outside the byte table keeps the token whole",
  );
  // a Strip before any Fuse strips every token, as HF's per-token decode_chain does
  const perToken = buildByteDecoder({
    type: "Sequence",
    decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, {
      type: "Strip",
      content: " ",
      start: 1,
      stop: 0,
    }],
  })!;
  assert.deepEqual(perToken("▁▁a"), UTF8.encode(" a"));
  assert.throws(() => buildByteDecoder({ type: "WordPiece" }), /unsupported decoder type "WordPiece"/);
});
