/**
 * Structured output through the engine (stories260K): a grammar-constrained choice yields JSON of its
 * schema and ends when the value does, sampled choices stay inside the grammar at every id, and the
 * constrained sequence leaves an unconstrained one beside it unchanged.
 */
import assert from "node:assert/strict";
import { collect, engineFor, greedy } from "../../tests/_engine.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { GrammarMatcher, TokenVocab } from "../structured/mod.ts";
import { choiceGrammar, compileJsonSchema, gbnfGrammar, regexGrammar } from "./mod.ts";

const PROMPT = "Once upon a time there was a little girl named Lily.";

/** Bounded everywhere, so a random model finishes it within the test's ids. */
const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 6 },
    mood: { enum: ["happy", "sad", 3, null] },
    ok: { type: "boolean" },
    friends: { type: "array", items: { type: "string", maxLength: 4 }, maxItems: 2 },
  },
  required: ["name", "ok"],
};

/** Checks a parsed value against SCHEMA's meaning (keys in order, required ones present, types). */
function checkValue(v: Record<string, unknown>): void {
  const keys = Object.keys(v);
  const order = Object.keys(SCHEMA.properties);
  assert.deepEqual(keys, order.filter((k) => k in v), "keys in schema order");
  assert.ok(typeof v.name === "string" && [...v.name].length <= 6);
  assert.equal(typeof v.ok, "boolean");
  if ("mood" in v) assert.ok(["happy", "sad", 3, null].includes(v.mood as string));
  if ("friends" in v) {
    const f = v.friends as unknown[];
    assert.ok(Array.isArray(f) && f.length <= 2 && f.every((x) => typeof x === "string" && x.length <= 4));
  }
}

Deno.test("structured output: greedy and sampled choices are JSON of the schema", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const { engine, model } = await engineFor(gpu, dir, { batchInvariant: true });
  const grammar = compileJsonSchema(SCHEMA, "schema");
  const vocab = new TokenVocab(model.tokenizer.tokenBytesTable(), model.config.vocabSize);
  /** The ids, fed one by one to a fresh matcher: every one must be allowed where it came. */
  const replay = (ids: number[]) => {
    const m = new GrammarMatcher(grammar, vocab);
    ids.forEach((id, i) => assert.ok(m.accept(id), `id ${i} (${id}) is outside the grammar`));
    return m;
  };

  // Greedy, next to an unconstrained request: that one gives its ids of running alone (batch-invariant).
  const [alone] = await collect(engine, greedy(PROMPT, 24));
  const [[json], [beside]] = await Promise.all([
    collect(engine, greedy(PROMPT, 200, { grammar })),
    collect(engine, greedy(PROMPT, 24)),
  ]);
  assert.deepEqual(beside.ids, alone.ids);
  assert.equal(json.finish, "stop", json.text);
  checkValue(JSON.parse(json.text));
  assert.ok(replay(json.ids).complete);

  // Sampled choices (n = 4, hot): every id inside the grammar; a finished choice parses.
  const sampled = await collect(
    engine,
    greedy(PROMPT, 120, {
      grammar,
      n: 4,
      sampling: { temperature: 1.5, topP: 1, topK: 0, minP: 0, seed: 11 },
    }),
  );
  assert.equal(sampled.length, 4);
  let whole = 0;
  for (const c of sampled) {
    const m = replay(c.ids);
    if (c.finish === "stop") {
      assert.ok(m.complete || m.canEnd, c.text);
      checkValue(JSON.parse(c.text));
      whole++;
    }
  }
  assert.ok(whole >= 1, `no sampled choice finished: ${sampled.map((c) => c.text).join(" | ")}`);
  assert.ok(new Set(sampled.map((c) => c.text)).size > 1, "sampled choices differ");

  // A choice of strings (vLLM's guided_choice): every answer is exactly one of them.
  const options = ["happy", "sad", "sleepy"];
  const picked = await collect(
    engine,
    greedy(PROMPT, 20, {
      grammar: choiceGrammar(options),
      n: 3,
      sampling: { temperature: 1.5, topP: 1, topK: 0, minP: 0, seed: 5 },
    }),
  );
  for (const c of picked) {
    assert.ok(options.includes(c.text), c.text);
    assert.equal(c.finish, "stop");
  }

  // A regex (vLLM's guided_regex): every answer matches it whole.
  const phones = await collect(
    engine,
    greedy(PROMPT, 20, {
      grammar: regexGrammar("\\(?[0-9]{3}\\)? [0-9]{3}-[0-9]{4}"),
      n: 2,
      sampling: { temperature: 1.5, topP: 1, topK: 0, minP: 0, seed: 9 },
    }),
  );
  for (const c of phones) {
    assert.match(c.text, /^\(?[0-9]{3}\)? [0-9]{3}-[0-9]{4}$/);
    assert.equal(c.finish, "stop");
  }

  // A GBNF grammar (vLLM's guided_grammar, llama-server's grammar): every answer matches it whole, and a
  // recursive one's ids are each allowed where they came (a hot random model may not close every list).
  const answers = await collect(
    engine,
    greedy(PROMPT, 12, {
      grammar: gbnfGrammar('root ::= "yes" | "no" | [0-9]{3}'),
      n: 3,
      sampling: { temperature: 1.5, topP: 1, topK: 0, minP: 0, seed: 13 },
    }),
  );
  for (const c of answers) {
    assert.match(c.text, /^(yes|no|[0-9]{3})$/);
    assert.equal(c.finish, "stop");
  }
  const nested = gbnfGrammar('root ::= "[" (item ("," item)*)? "]"\nitem ::= [a-z]{1,4} | root');
  const [tree] = await collect(engine, greedy(PROMPT, 24, { grammar: nested }));
  const m = new GrammarMatcher(nested, vocab);
  tree.ids.forEach((id, i) => assert.ok(m.accept(id), `id ${i} (${id}) is outside the grammar`));
  assert.match(tree.text, /^\[[a-z,[\]]*$/);
  if (tree.finish === "stop") assert.ok(m.complete, tree.text);
  gpu.device.destroy();
});
