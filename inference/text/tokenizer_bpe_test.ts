import assert from "node:assert/strict";
import { BpeModel, type BpeModelJson } from "./tokenizer_bpe.ts";

function model(
  vocabList: string[],
  merges: BpeModelJson["merges"],
  extra: Partial<BpeModelJson> = {},
): BpeModel {
  const vocab = Object.fromEntries(vocabList.map((t, i) => [t, i]));
  return new BpeModel({ type: "BPE", vocab, merges, ...extra });
}

/** Token strings of a word. */
function pieces(m: BpeModel, word: string): string[] {
  return m.tokenize(word).map((id) => m.idToToken[id]);
}

Deno.test("BpeModel applies merges by rank, not by position", () => {
  const vocab = ["a", "b", "c", "ab", "bc", "abc"];
  assert.deepEqual(pieces(model(vocab, ["b c", "a b", "a bc"]), "abc"), ["abc"]);
  assert.deepEqual(pieces(model(vocab, ["b c", "a b"]), "abc"), ["a", "bc"]);
  assert.deepEqual(pieces(model(vocab, ["a b", "b c"]), "abc"), ["ab", "c"]);
  // ["a", "b"] pairs mean the same as "a b" strings
  assert.deepEqual(pieces(model(vocab, [["a", "b"], ["b", "c"]]), "abc"), ["ab", "c"]);
});

Deno.test("BpeModel breaks rank ties leftmost first and re-queues new pairs", () => {
  const m = model(["a", "aa", "aaaa"], ["a a", "aa aa"]);
  assert.deepEqual(pieces(m, "aaa"), ["aa", "a"]);
  assert.deepEqual(pieces(m, "aaaaa"), ["aaaa", "a"]);
  assert.deepEqual(pieces(m, "aaaaaaa"), ["aaaa", "aa", "a"]);
  // a long word exercises the heap; result must equal the repeated short word
  assert.deepEqual(pieces(m, "a".repeat(4001)), [...Array(1000).fill("aaaa"), "a"]);
});

Deno.test("BpeModel falls back to <0xNN> bytes, else to a (fused) unk token", () => {
  const bytes = ["<0xC3>", "<0xA9>"];
  const withBytes = model(["<unk>", "c", "a", "f", ...bytes], [], {
    byte_fallback: true,
    unk_token: "<unk>",
  });
  assert.deepEqual(pieces(withBytes, "café"), ["c", "a", "f", "<0xC3>", "<0xA9>"]);
  // a character whose bytes are not all in the vocabulary becomes unk
  assert.deepEqual(pieces(withBytes, "cü"), ["c", "<unk>"]);
  const fused = model(["<unk>", "a"], [], { unk_token: "<unk>", fuse_unk: true });
  assert.deepEqual(pieces(fused, "xyaz"), ["<unk>", "a", "<unk>"]);
  const unfused = model(["<unk>", "a"], [], { unk_token: "<unk>" });
  assert.deepEqual(pieces(unfused, "xya"), ["<unk>", "<unk>", "a"]);
  // without an unk token unknown characters are dropped, as in HF
  assert.deepEqual(pieces(model(["a"], []), "xa"), ["a"]);
});

Deno.test("BpeModel with ignore_merges takes a whole-word vocabulary hit first", () => {
  const vocab = ["a", "b", "c", "ab", "abc"];
  assert.deepEqual(pieces(model(vocab, ["a b"], { ignore_merges: true }), "abc"), ["abc"]);
  assert.deepEqual(pieces(model(vocab, ["a b"]), "abc"), ["ab", "c"]);
});

Deno.test("BpeModel rejects merges outside the vocabulary and dropout", () => {
  assert.throws(() => model(["a", "b"], ["a b"]), /invalid merge "a b": a token is not in the vocabulary/);
  assert.throws(() => model(["a"], ["ab"]), /expected two tokens separated by a space/);
  assert.throws(() => model(["a"], [], { dropout: 0.1 }), /unsupported BPE dropout/);
  assert.throws(() => model(["a"], [], { unk_token: "<unk>" }), /unk_token "<unk>" is not in the vocabulary/);
});
