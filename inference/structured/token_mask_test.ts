import assert from "node:assert/strict";
import { sharedPath } from "../../tests/_gpu.ts";
import { loadTokenizer } from "../text/mod.ts";
import { compileJsonSchema, jsonObjectGrammar } from "./json_schema.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";

const has = (mask: Uint32Array, id: number) => ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;

/** The mask by brute force: every id's bytes fed from a copy of the matcher. */
function bruteMask(grammarMatcher: () => GrammarMatcher, prefix: number[], vocab: TokenVocab): Set<number> {
  const allowed = new Set<number>();
  const base = grammarMatcher();
  for (const id of prefix) assert.ok(base.accept(id));
  for (let id = 0; id < vocab.size; id++) {
    const m = grammarMatcher();
    for (const p of prefix) m.accept(p);
    if (m.accept(id)) allowed.add(id);
  }
  return allowed;
}

/** Text → ids by longest byte match over the vocabulary. */
function greedyIds(vocab: TokenVocab, text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  const ids: number[] = [];
  for (let at = 0; at < bytes.length;) {
    let best = -1;
    vocab.bytes.forEach((b, id) => {
      if (b && b.length > (vocab.bytes[best]?.length ?? 0) && b.every((x, k) => bytes[at + k] === x)) {
        best = id;
      }
    });
    assert.ok(best >= 0, `no token for byte ${at}`);
    ids.push(best);
    at += vocab.bytes[best]!.length;
  }
  return ids;
}

const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 16, pattern: "Ada" },
    n: { type: "integer" },
    kind: { enum: ["cat", "catalog", "dog"] },
    xs: { type: "array", items: { type: "number" } },
  },
  required: ["name", "kind"],
};

for (const model of ["stories260K", "lq-49m"]) {
  Deno.test(`token mask (${model}): the trie walk gives exactly the ids whose bytes the grammar accepts`, async () => {
    const dir = sharedPath(`models/${model}`);
    if (!dir) return;
    const tok = await loadTokenizer(dir);
    const vocab = new TokenVocab(tok.tokenBytesTable(), tok.vocabSize + 3); // padded logit rows: never allowed
    const grammar = compileJsonSchema(SCHEMA, "schema");
    const text = '{"name": "Ada \\"Lovelace\\" é", "n": -12, "kind": "catalog", "xs": [1.5, -2e3]}';
    const ids = greedyIds(vocab, text); // the tokenizer's own ids may start with a SentencePiece space
    const matcher = new GrammarMatcher(grammar, vocab);
    // Every position of a small vocabulary; a few (start, in a string, in a number, at the end) of a big one.
    const positions = vocab.size < 4096 ? ids.map((_, i) => i) : [0, 3, 5, 9, ids.length - 1];
    for (let i = 0; i < ids.length; i++) {
      if (positions.includes(i)) {
        const mask = matcher.mask([]);
        const brute = bruteMask(() => new GrammarMatcher(grammar, vocab), ids.slice(0, i), vocab);
        for (let id = 0; id < vocab.size; id++) {
          assert.equal(has(mask, id), brute.has(id), `position ${i}, id ${id}`);
        }
        assert.ok(brute.has(ids[i]), `position ${i}: the text's own id`);
      }
      assert.ok(matcher.accept(ids[i]), `position ${i}`);
    }
    assert.ok(matcher.complete);
  });
}

Deno.test("token mask: end ids only where the value may end; complete ends the output", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const vocab = new TokenVocab(tok.tokenBytesTable(), tok.vocabSize);
  const eos = tok.eosTokenId!;
  const num = new GrammarMatcher(compileJsonSchema({ type: "integer" }, "schema"), vocab);
  assert.ok(!has(num.mask([eos]), eos)); // nothing yet
  assert.ok(num.accept(tok.encode("4", { addSpecialTokens: false })[0]));
  assert.ok(has(num.mask([eos]), eos) && num.canEnd && !num.complete); // "4" or "42"…
  const obj = new GrammarMatcher(jsonObjectGrammar(), vocab);
  for (const id of tok.encode('{"a": [1, {}]}', { addSpecialTokens: false })) assert.ok(obj.accept(id));
  assert.ok(obj.complete);
  assert.equal(obj.mask([eos]).reduce((n, w) => n + (w === 0 ? 0 : 1), 0), 1); // only EOS
  // Special tokens are never text.
  assert.ok(!new GrammarMatcher(jsonObjectGrammar(), vocab).accept(eos));
});
