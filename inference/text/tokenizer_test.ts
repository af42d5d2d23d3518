import assert from "node:assert/strict";
import {
  createStreamDecoder,
  createTokenizer,
  loadTokenizer,
  type Tokenizer,
  type TokenizerJson,
} from "./tokenizer.ts";
import { sharedPath } from "../../tests/_gpu.ts";

interface GoldenCase {
  prompt: string;
  ids: number[];
  decoded: string;
}

function readJson<T>(path: string): T {
  return JSON.parse(Deno.readTextFileSync(path)) as T;
}

/** Pushes ids one at a time; returns the pieces and checks none splits a character. */
function streamPieces(tok: Tokenizer, ids: number[]): string[] {
  const stream = createStreamDecoder(tok);
  const pieces = ids.map((id) => stream.push(id));
  pieces.push(stream.flush());
  for (const p of pieces) {
    assert.ok(!p.includes("\uFFFD"), `piece ${JSON.stringify(p)} holds a broken character`);
    assert.ok(p.isWellFormed(), `piece ${JSON.stringify(p)} splits a surrogate pair`);
  }
  return pieces;
}

Deno.test("loadTokenizer() matches the lq-49m PyTorch golden ids and round-trips them", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const golden = readJson<{ cases: GoldenCase[]; chat: { rendered: string; ids: number[] } }>(
    `${dir}/golden.json`,
  );
  for (const c of golden.cases) {
    assert.deepEqual(tok.encode(c.prompt), c.ids, c.prompt);
    assert.equal(tok.decode(c.ids), c.decoded);
  }
  // ChatML markers are special added tokens; tokenizer_config.json adds no BOS here
  assert.deepEqual(tok.encode(golden.chat.rendered), golden.chat.ids);
  assert.equal(tok.decode(golden.chat.ids), golden.chat.rendered);
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.tokenToId("<|im_end|>"), 2);
  assert.ok(tok.specialTokens.has("<|im_start|>") && tok.specialTokenIds.has(1));
});

Deno.test("encode() with parseSpecialTokens false treats special-token text as plain text", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const text = "<|im_start|>user\nhi<|im_end|>";
  const plain = tok.encode(text, { parseSpecialTokens: false });
  assert.ok(!plain.includes(1) && !plain.includes(2), `got ${plain}`);
  assert.ok(plain.length > 6);
  assert.equal(tok.decode(plain), text);
  const parsed = tok.encode(text);
  assert.deepEqual([parsed[0], parsed.at(-1)], [1, 2]);
  assert.equal(tok.decode(parsed, { skipSpecialTokens: true }), "user\nhi");
});

Deno.test("SmolLM2-135M-Instruct tokenizer gives the lq-49m golden ids (same vocabulary)", async () => {
  const dir = sharedPath("tokenizers/smollm2-135m-instruct");
  const golden = sharedPath("models/lq-49m/golden.json");
  if (!dir || !golden) return;
  const tok = await loadTokenizer(dir);
  const g = readJson<{ cases: GoldenCase[]; chat: { rendered: string; ids: number[] } }>(golden);
  for (const c of g.cases) assert.deepEqual(tok.encode(c.prompt), c.ids, c.prompt);
  assert.deepEqual(tok.encode(g.chat.rendered), g.chat.ids);
  assert.equal(tok.vocabSize, 49152);
  // no tokenizer_config.json in this folder
  assert.equal(tok.bosTokenId, null);
  // Digits pre-tokenizer: every digit is its own token
  const digits = tok.encode("in 2024");
  assert.deepEqual(digits.slice(-4).map((id) => tok.idToToken(id)), ["2", "0", "2", "4"]);
});

Deno.test("stories260K tokenizer matches golden_hf.json and tokenizer_check.json (BOS added)", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  for (const c of readJson<{ cases: GoldenCase[] }>(`${dir}/golden_hf.json`).cases) {
    assert.deepEqual(tok.encode(c.prompt), c.ids, c.prompt);
    assert.equal(tok.decode(c.ids), c.decoded);
  }
  const check = readJson<{ prompts: Record<string, { hf: number[] }> }>(`${dir}/tokenizer_check.json`);
  for (const [prompt, want] of Object.entries(check.prompts)) {
    const ids = tok.encode(prompt);
    assert.deepEqual(ids, want.hf, JSON.stringify(prompt));
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), prompt);
  }
  assert.deepEqual(tok.encode("Once upon a time", { addSpecialTokens: false }), [403, 407, 261, 378]);
  assert.equal(tok.vocabSize, 512);
  assert.deepEqual([tok.bosTokenId, tok.eosTokenId], [1, 2]);
  assert.deepEqual([...tok.specialTokens].sort(), ["</s>", "<s>", "<unk>"]);
  assert.equal(tok.idToToken(403), "▁Once");
  assert.equal(tok.idToToken(9999), null);
  assert.equal(tok.tokenToId("no such token"), null);
});

Deno.test("encode() of whole corpora matches the HF token counts and stays fast", async () => {
  const dir = sharedPath("models/stories260K");
  const stories = sharedPath("data/tinystories/tinystories_val_subset.txt");
  const wiki = sharedPath("data/wikitext-2-raw/wiki.test.raw");
  const smol = sharedPath("tokenizers/smollm2-135m-instruct");
  if (!dir || !stories || !wiki || !smol) return;
  const tok = await loadTokenizer(dir);
  const check = readJson<Record<string, { n_hf: number }>>(`${dir}/tokenizer_check.json`);
  for (
    const [path, want] of [[stories, check.tinystories_full.n_hf], [wiki, check.wikitext2_test.n_hf]] as const
  ) {
    const text = Deno.readTextFileSync(path);
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    assert.equal(ids.length, want, path);
    // 0.8–1.3 MB as one SentencePiece "word": ~0.5 s on an idle core; a quadratic merge loop would take hours,
    // and the bound leaves room for CPU contention from parallel lavapipe tests
    assert.ok(ms < 10_000, `encoding ${path} took ${ms.toFixed(0)} ms`);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), text);
  }
  // byte-level BPE is lossless on any text
  const bytes = await loadTokenizer(smol);
  const text = Deno.readTextFileSync(wiki);
  const t0 = performance.now();
  const ids = bytes.encode(text);
  assert.ok(performance.now() - t0 < 10_000);
  assert.equal(bytes.decode(ids), text);
});

Deno.test("createStreamDecoder() emits whole characters from byte-fallback tokens", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const text = "Lily saw 日本語 and 😀 and é.";
  const ids = tok.encode(text);
  const byteTokens = ids.filter((id) => /^<0x[0-9A-F]{2}>$/.test(tok.idToToken(id)!));
  assert.ok(byteTokens.length >= 13, "CJK and emoji must fall back to bytes in a 512-token vocab");
  const pieces = streamPieces(tok, ids);
  assert.equal(pieces.join(""), text);
  assert.ok(pieces.filter((p) => p === "").length >= 9, "incomplete characters must be held back");
  assert.ok(pieces.includes("😀"), `pieces: ${JSON.stringify(pieces)}`);
  // an unfinished character comes out of flush() as U+FFFD
  const stream = createStreamDecoder(tok);
  assert.equal(stream.push(tok.tokenToId("<0xF0>")!), "");
  assert.equal(stream.flush(), "\uFFFD");
});

Deno.test("createStreamDecoder() emits whole characters from byte-level tokens", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const text = "Emoji 😀🎉 and 日本語の文章, then <|im_end|> text.";
  const ids = tok.encode(text);
  const pieces = streamPieces(tok, ids);
  assert.equal(pieces.join(""), "Emoji 😀🎉 and 日本語の文章, then  text.");
  assert.ok(pieces.some((p) => p === ""), "some byte-level token must end inside a character");
  const all = createStreamDecoder(tok, { skipSpecialTokens: false });
  assert.equal(ids.map((id) => all.push(id)).join("") + all.flush(), text);
});

Deno.test("decode() and createStreamDecoder() keep the text of the special tokens asked for, skip the rest", () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  // lq-49m's byte-level tokenizer with Mistral's tool-call marks added as special tokens, as Tekken has them.
  const json = readJson<TokenizerJson>(`${dir}/tokenizer.json`);
  const base = createTokenizer(json).vocabSize;
  const marks = ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"];
  const tok = createTokenizer({
    ...json,
    added_tokens: [
      ...json.added_tokens ?? [],
      ...marks.map((content, i) => ({ id: base + i, content, special: true, normalized: false })),
    ],
  });
  const text = 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}<|im_end|>';
  const ids = tok.encode(text);
  assert.ok(ids.includes(base) && ids.includes(base + 1) && ids.includes(2), `got ${ids}`);
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'Sure.get_weather{"city": "Paris"}');
  const kept = 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}';
  assert.equal(tok.decode(ids, { skipSpecialTokens: true, keepSpecialTokens: marks }), kept);
  assert.equal(tok.decode(ids, { keepSpecialTokens: marks }), text, "without skipping, all are kept");
  const stream = createStreamDecoder(tok, { keepSpecialTokens: marks, context: tok.encode("Hi") });
  const pieces = ids.map((id) => stream.push(id));
  assert.equal(pieces.join("") + stream.flush(), kept);
  assert.ok(pieces.includes("[TOOL_CALLS]"), "a kept token comes out whole");
});

Deno.test("legacy Metaspace pre-tokenizer and decoder give the same ids as Prepend+Replace", () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const json = readJson<TokenizerJson>(`${dir}/tokenizer.json`);
  const modern = createTokenizer(json);
  const legacy = createTokenizer({
    ...json,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Metaspace" }, { type: "ByteFallback" }, { type: "Fuse" }],
    },
  });
  for (const text of ["Once upon a time", 'Tom said: "Hi!"\n日本 end  ']) {
    const ids = legacy.encode(text);
    assert.deepEqual(ids, modern.encode(text), text);
    assert.equal(legacy.decode(ids, { skipSpecialTokens: true }), text);
  }
  // Metaspace prepends no ▁ to text that already starts with a space; Prepend always does
  assert.deepEqual(legacy.encode("  leading"), modern.encode(" leading"));
  // "first" prepends ▁ only at the start of the input; the Prepend normalizer runs on every segment
  const once = legacy.tokenToId("▁Once")!;
  assert.ok(!legacy.encode("<s>Once", { addSpecialTokens: false }).includes(once));
  assert.deepEqual(modern.encode("<s>Once", { addSpecialTokens: false }), [1, once]);
});

Deno.test("createTokenizer() names the file and the reason when it cannot load", async () => {
  assert.throws(
    () => createTokenizer({ model: { type: "WordPiece" } }, { source: "x/tokenizer.json" }),
    { message: 'Cannot load tokenizer "x/tokenizer.json": unsupported model type "WordPiece"' },
  );
  assert.throws(
    () => createTokenizer({ model: { type: "BPE", vocab: { a: 0 }, merges: ["a b"] } }),
    /Cannot load tokenizer "tokenizer.json": invalid merge "a b"/,
  );
  assert.throws(
    () =>
      createTokenizer({ model: { type: "BPE", vocab: {}, merges: [] }, normalizer: { type: "Precompiled" } }),
    /unsupported normalizer type "Precompiled"/,
  );
  const missing = await Deno.makeTempDir();
  await assert.rejects(loadTokenizer(missing), {
    message: `Cannot load tokenizer "${missing}/tokenizer.json": file not found`,
  });
  await Deno.remove(missing);
});

Deno.test("createStreamDecoder() with prompt context keeps the space before the first generated word", async () => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const prompt = tok.encode("Lily and Ben went to the park.");
  const full = tok.encode("Lily and Ben went to the park. They saw a big box.");
  const generated = full.slice(prompt.length);
  assert.deepEqual(full.slice(0, prompt.length), prompt, "the prompt's ids prefix the full text's");
  const withContext = createStreamDecoder(tok, { context: prompt });
  const text = generated.map((id) => withContext.push(id)).join("") + withContext.flush();
  assert.equal(text, " They saw a big box.");
  // Without context the SentencePiece decoder strips the first token's leading space, as a full decode would.
  const bare = createStreamDecoder(tok);
  assert.equal(generated.map((id) => bare.push(id)).join("") + bare.flush(), "They saw a big box.");
});
