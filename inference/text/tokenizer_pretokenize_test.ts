import assert from "node:assert/strict";
import {
  buildNormalizer,
  buildPreTokenizer,
  BYTE_TO_CHAR,
  CHAR_TO_BYTE,
  splitBy,
  toByteChars,
  toJsRegex,
} from "./tokenizer_pretokenize.ts";

const QWEN_PATTERN = String
  .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

Deno.test("toJsRegex() rewrites (?i:...) into both-case letters", () => {
  const regex = toJsRegex(QWEN_PATTERN);
  assert.ok(!regex.source.includes("(?i"), regex.source);
  assert.ok(regex.source.startsWith("(?:'[sS]|'[tT]|'[rR][eE]|"), regex.source);
  const split = (text: string) => splitBy(text, toJsRegex(QWEN_PATTERN), "Isolated");
  assert.deepEqual(split("Hello WORLD'S  123\n\n"), [
    "Hello",
    " WORLD",
    "'S",
    " ",
    " ",
    "1",
    "2",
    "3",
    "\n\n",
  ]);
  assert.deepEqual(split("we'RE x"), ["we", "'RE", " x"]);
  // letters outside the group stay case-sensitive
  assert.deepEqual([..."aBc".matchAll(toJsRegex("(?i:a)b|(?i:b)"))].map((m) => m[0]), ["B"]);
});

Deno.test("toJsRegex() gives \\s Oniguruma's meaning: U+0085 yes, U+FEFF no", () => {
  const ws = toJsRegex(String.raw`\s+`);
  assert.deepEqual("a\u0085\u00a0b".match(ws), ["\u0085\u00a0"]);
  assert.equal("a\ufeffb".match(ws), null);
  const notWs = toJsRegex(String.raw`\S+`);
  assert.deepEqual("\ufeffa b".match(notWs), ["\ufeffa", "b"]);
  const inClass = toJsRegex(String.raw`[^\s\p{L}]+`);
  assert.deepEqual("ab.,\u0085!".match(inClass), [".,", "!"]);
});

Deno.test("splitBy() implements every HF delimiter behavior", () => {
  const dash = /-/gu;
  assert.deepEqual(splitBy("a-b--c", dash, "Removed"), ["a", "b", "c"]);
  assert.deepEqual(splitBy("a-b--c", dash, "Isolated"), ["a", "-", "b", "-", "-", "c"]);
  assert.deepEqual(splitBy("a-b--c", dash, "MergedWithPrevious"), ["a-", "b-", "-", "c"]);
  assert.deepEqual(splitBy("a-b--c", dash, "MergedWithNext"), ["a", "-b", "-", "-c"]);
  assert.deepEqual(splitBy("a-b--c", dash, "Contiguous"), ["a", "-", "b", "--", "c"]);
  assert.deepEqual(splitBy("a-b--c", dash, "Removed", true), ["-", "-", "-"]);
  assert.deepEqual(splitBy("", dash, "Isolated"), []);
});

Deno.test("byte-level table covers all 256 bytes with distinct visible chars", () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[0x20], "Ġ");
  assert.equal(BYTE_TO_CHAR[0x0a], "Ċ");
  assert.equal(BYTE_TO_CHAR[0x41], "A");
  for (let b = 0; b < 256; b++) assert.equal(CHAR_TO_BYTE[BYTE_TO_CHAR[b].codePointAt(0)!], b);
  assert.equal(toByteChars(" é"), "ĠÃ©");
});

Deno.test("buildPreTokenizer() runs Sequence steps in order over every piece", () => {
  const smol = buildPreTokenizer({
    type: "Sequence",
    pretokenizers: [
      { type: "Digits", individual_digits: true },
      { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    ],
  })!;
  assert.deepEqual(smol(["I have 42 cats."], true), ["I", "Ġhave", "Ġ", "4", "2", "Ġcats", "."]);
  const prefixed = buildPreTokenizer({ type: "ByteLevel", add_prefix_space: true, use_regex: false })!;
  assert.deepEqual(prefixed(["hi there", " x"], true), ["ĠhiĠthere", "Ġx"]);
  const meta = buildPreTokenizer({
    type: "Metaspace",
    replacement: "▁",
    prepend_scheme: "always",
    split: true,
  })!;
  assert.deepEqual(meta(["a b  c"], false), ["▁a", "▁b", "▁", "▁c"]);
  const ws = buildPreTokenizer({ type: "WhitespaceSplit" })!;
  assert.deepEqual(ws([" a\tbc  d "], true), ["a", "bc", "d"]);
  assert.throws(
    () => buildPreTokenizer({ type: "BertPreTokenizer" }),
    /unsupported pre_tokenizer type "BertPreTokenizer"/,
  );
});

Deno.test("buildNormalizer() chains Prepend, Replace, NFC and Lowercase", () => {
  const spm = buildNormalizer({
    type: "Sequence",
    normalizers: [{ type: "Prepend", prepend: "▁" }, {
      type: "Replace",
      pattern: { String: " " },
      content: "▁",
    }],
  })!;
  assert.equal(spm("a b"), "▁a▁b");
  assert.equal(spm(""), "", "Prepend leaves empty text alone");
  assert.equal(buildNormalizer({ type: "NFC" })!("e\u0301"), "é");
  assert.equal(buildNormalizer({ type: "Lowercase" })!("ÀB"), "àb");
  const regex = buildNormalizer({ type: "Replace", pattern: { Regex: " {2,}" }, content: " " })!;
  assert.equal(regex("a   b  c"), "a b c");
  assert.equal(buildNormalizer(null), null);
});
