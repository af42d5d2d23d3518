/**
 * `deno task bench:mask [--tokenizer <dir>] [--text <json>]`: host time of structured output's token masks
 * (inference/structured): the vocabulary trie's build, then the mask before each id of a JSON text that fits a
 * small schema, walked as a constrained sequence would (a mask per id, cached by state). The first mask of a
 * state inside a string walks most of the trie; later ones hit the cache. A second request of the schema,
 * compiled afresh, goes through the engine Worker's GrammarCache and finds the first one's masks.
 */
import { parseArgs } from "node:util";
import {
  compileJsonSchema,
  GrammarCache,
  GrammarMatcher,
  packGrammar,
  TokenVocab,
} from "../inference/structured/mod.ts";
import { loadTokenizer } from "../inference/text/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tokenizer: { type: "string", default: "../shared/tokenizers/qwen3" },
    text: {
      type: "string",
      default: '{"name": "Ada Lovelace", "city": "London", "age": 36, "tags": ["math", "poetry"]}',
    },
  },
});
const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string" },
    city: { type: "string" },
    age: { type: "integer" },
    tags: { type: "array", items: { type: "string" } },
  },
  required: ["name", "city", "age", "tags"],
};

const tok = await loadTokenizer(values.tokenizer);
let t0 = performance.now();
const vocab = new TokenVocab(tok.tokenBytesTable(), tok.vocabSize);
console.log(`vocabulary ${tok.vocabSize} ids, trie ${vocab.nodes} nodes, built in ${ms(t0)} ms`);
const ids = tok.encode(values.text, { addSpecialTokens: false });
// Two requests of the schema, each compiled afresh (new ids, as the server compiles each request's), sent
// to the engine's Worker as it receives them: through a GrammarCache, which gives the second the first's grammar
// and so its cached masks.
const cache = new GrammarCache();
for (const request of ["first request", "second request, same schema"]) {
  const grammar = cache.unpack(structuredClone(packGrammar(compileJsonSchema(SCHEMA, "schema"))));
  const matcher = new GrammarMatcher(grammar, vocab);
  const times: number[] = [];
  for (const id of ids) {
    t0 = performance.now();
    matcher.mask([tok.eosTokenId ?? 0]);
    times.push(performance.now() - t0);
    if (!matcher.accept(id)) throw new Error(`The text leaves the schema at id ${id}`);
  }
  const sorted = [...times].sort((a, b) => a - b);
  const total = times.reduce((a, b) => a + b, 0);
  console.log(
    `${request}: ${ids.length} masks: total ${total.toFixed(1)} ms, median ${
      sorted[sorted.length >> 1].toFixed(2)
    } ms, slowest ${sorted.at(-1)!.toFixed(1)} ms (${
      times.filter((t) => t > 5).length
    } over 5 ms: new string states)`,
  );
}

function ms(t: number): string {
  return (performance.now() - t).toFixed(0);
}
