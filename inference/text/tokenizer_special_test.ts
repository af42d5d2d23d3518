import assert from "node:assert/strict";
import { AddedTokenMatcher, buildPostProcessor } from "./tokenizer_special.ts";
import { type AddedTokenJson, createTokenizer, type TokenizerJson } from "./tokenizer.ts";

/** A character-level tokenizer over a–z and space, with the given added tokens from id 100. */
function charTokenizer(added: AddedTokenJson[], extra: Partial<TokenizerJson> = {}) {
  const vocab = Object.fromEntries([..."abcdefghijklmnopqrstuvwxyz "].map((c, i) => [c, i]));
  for (const t of added) vocab[t.content] = t.id;
  return createTokenizer({ model: { type: "BPE", vocab, merges: [] }, added_tokens: added, ...extra });
}

Deno.test("AddedTokenMatcher takes the leftmost, then longest token", () => {
  const matcher = new AddedTokenMatcher([
    { id: 1, content: "<a>" },
    { id: 2, content: "<a>b" },
    { id: 3, content: "b<" },
  ], (t) => t.content);
  assert.deepEqual(matcher.split("x<a>b<a>"), [{ text: "x", start: 0 }, { id: 2 }, { id: 1 }]);
  assert.deepEqual(matcher.split("xb<a>"), [{ text: "x", start: 0 }, { id: 3 }, { text: "a>", start: 3 }]);
  assert.deepEqual(new AddedTokenMatcher([], (t) => t.content).split("abc"), [{ text: "abc", start: 0 }]);
});

Deno.test("encode() honours lstrip, rstrip and single_word of added tokens", () => {
  const tok = charTokenizer([
    { id: 100, content: "<mask>", lstrip: true, special: true },
    { id: 101, content: "[x]", rstrip: true, special: true },
    { id: 102, content: "tok", single_word: true, normalized: false },
  ]);
  const space = tok.tokenToId(" ")!;
  assert.deepEqual(tok.encode("a  <mask>"), [0, 100]);
  assert.deepEqual(tok.encode("[x]  b"), [101, 1]);
  assert.deepEqual(tok.encode("a tok b"), [0, space, 102, space, 1]);
  assert.ok(!tok.encode("atok").includes(102), "glued to a word it is not a single word");
  assert.ok(!tok.encode("toks").includes(102));
  // special parsing off: special tokens become text, a non-special one is still cut out
  assert.ok(!tok.encode("<mask>", { parseSpecialTokens: false }).includes(100));
  assert.deepEqual(tok.encode("tok", { parseSpecialTokens: false }), [102]);
});

Deno.test("normalized added tokens are matched after the normalizer", () => {
  const tok = charTokenizer([{ id: 100, content: "hi", normalized: true }], {
    normalizer: { type: "Lowercase" },
  });
  assert.deepEqual(tok.encode("oh HI"), [14, 7, 26, 100]);
  const raw = charTokenizer([{ id: 100, content: "HI", normalized: false }], {
    normalizer: { type: "Lowercase" },
  });
  assert.deepEqual(raw.encode("oh HI"), [14, 7, 26, 100]);
  assert.deepEqual(raw.encode("oh hi"), [14, 7, 26, 7, 8]);
});

Deno.test("buildPostProcessor() prefers the JSON template, else tokenizer_config flags", () => {
  const ctx = { addBos: true, addEos: true, bosId: 1, eosId: 2 };
  const template = buildPostProcessor({
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
  }, ctx);
  assert.deepEqual(template([5, 6]), [1, 5, 6]);
  assert.deepEqual(buildPostProcessor(null, ctx)([5]), [1, 5, 2]);
  assert.deepEqual(buildPostProcessor({ type: "ByteLevel" }, { ...ctx, addEos: false })([5]), [1, 5]);
  assert.deepEqual(buildPostProcessor(null, { ...ctx, addBos: false, addEos: false })([5]), [5]);
  const bert = buildPostProcessor({ type: "BertProcessing", cls: ["[CLS]", 7], sep: ["[SEP]", 8] }, ctx);
  assert.deepEqual(bert([5]), [7, 5, 8]);
  assert.throws(() => buildPostProcessor({ type: "Magic" }, ctx), /unsupported post_processor type "Magic"/);
});

Deno.test("tokenizer_config.json bos/eos feed bosTokenId and add_bos_token", () => {
  const added = [{ id: 100, content: "<s>", special: true }, { id: 101, content: "</s>", special: true }];
  const config = { add_bos_token: true, bos_token: { content: "<s>" }, eos_token: "</s>" };
  const tok = charTokenizer(added);
  const withConfig = createTokenizer(
    { model: { type: "BPE", vocab: { a: 0, "<s>": 100, "</s>": 101 }, merges: [] }, added_tokens: added },
    { config },
  );
  assert.deepEqual([tok.bosTokenId, tok.encode("a")], [null, [0]]);
  assert.deepEqual([withConfig.bosTokenId, withConfig.eosTokenId, withConfig.encode("a")], [100, 101, [
    100,
    0,
  ]]);
  assert.deepEqual(withConfig.encode("a", { addSpecialTokens: false }), [0]);
  assert.throws(
    () =>
      createTokenizer({ model: { type: "BPE", vocab: { a: 0 }, merges: [] } }, {
        config: { bos_token: "<s>" },
      }),
    /bos_token "<s>" is not a token/,
  );
});
