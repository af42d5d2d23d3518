import assert from "node:assert/strict";
import { buildDecoder, byteTokenValue } from "./tokenizer_decoders.ts";
import { toByteChars } from "./tokenizer_pretokenize.ts";

const LLAMA_DECODER = {
  type: "Sequence",
  decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
    { type: "Strip", content: " ", start: 1, stop: 0 },
  ],
};

Deno.test("SentencePiece decoder joins <0xNN> runs into UTF-8 and strips one leading space", () => {
  const decode = buildDecoder(LLAMA_DECODER)!;
  assert.deepEqual(decode(["▁Hi", "▁", "<0xE6>", "<0x97>", "<0xA5>", "!"]), ["Hi 日!"]);
  assert.deepEqual(decode(["▁▁two"]), [" two"], "only one space is stripped");
  // an invalid run gives one U+FFFD per byte, as HF's ByteFallback does
  assert.deepEqual(decode(["a", "<0xE6>", "<0x97>", "b"]), ["a\uFFFD\uFFFDb"]);
});

Deno.test("ByteLevel decoder maps byte chars back and keeps added-token text", () => {
  const decode = buildDecoder({ type: "ByteLevel" })!;
  assert.deepEqual(decode(["Hello", "Ġwor", "ld", "Ċ"]), ["Hello world\n"]);
  assert.deepEqual(decode(["ðŁĺ", "Ģ"]), ["😀"]);
  // split emoji bytes decode to a single U+FFFD (maximal subpart), like Rust's from_utf8_lossy
  assert.deepEqual(decode(["ðŁĺ"]), ["\uFFFD"]);
  assert.deepEqual(decode(["<|im_end|>", toByteChars(" 日本")]), ["<|im_end|> 日本"]);
  // a token with any char outside the byte table is taken as plain text, whole
  assert.deepEqual(decode(["Ġ日", "Ġ"]), ["Ġ日 "]);
});

Deno.test("Metaspace decoder drops the first token's ▁ unless prepend_scheme is never", () => {
  assert.deepEqual(buildDecoder({ type: "Metaspace", prepend_scheme: "first" })!(["▁a", "▁b"]), ["a", " b"]);
  assert.deepEqual(buildDecoder({ type: "Metaspace", prepend_scheme: "never" })!(["▁a", "▁b"]), [" a", " b"]);
  assert.throws(() => buildDecoder({ type: "WordPiece" }), /unsupported decoder type "WordPiece"/);
});

Deno.test("byteTokenValue() reads only exact <0xNN> tokens", () => {
  assert.equal(byteTokenValue("<0x0A>"), 10);
  assert.equal(byteTokenValue("<0xff>"), 255);
  assert.equal(byteTokenValue("<0x0A"), -1);
  assert.equal(byteTokenValue("<0xZZ>"), -1);
  assert.equal(byteTokenValue("▁<0x0A>"), -1);
});
