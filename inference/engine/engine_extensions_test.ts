/**
 * vLLM's request extensions that change what a choice says (stories260K): skip_special_tokens = false keeps
 * every special token's text, include_stop_str_in_output keeps the stop string, truncate_prompt_tokens reads
 * only the prompt's last ids (as if they were the whole prompt), allowed_token_ids confines sampling (EOS
 * too), bad_words keeps banned words out, and the requests the engine cannot serve are EngineInputErrors
 * naming the field.
 */
import assert from "node:assert/strict";
import { collect, engineFor, greedy } from "../../tests/_engine.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { compileJsonSchema, EngineInputError, type GenerateRequest, type TokenEvent } from "./mod.ts";
import { badWordIds } from "./bad_words.ts";

const PROMPT = "Once upon a time there was a little girl named Lily.";

Deno.test("skip_special_tokens, include_stop_str_in_output, truncate_prompt_tokens and allowed_token_ids", async (t) => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const { engine, model } = await engineFor(gpu, dir, {});
  const tok = model.tokenizer;
  const [plain] = await collect(engine, greedy(PROMPT, 24));

  await t.step("skip_special_tokens = false keeps every special token's text", async () => {
    const bos = tok.tokenToId("<s>")!;
    const forced = { logitBias: [[bos, 100]] as [number, number][] };
    const [skipped] = await collect(engine, greedy(PROMPT, 3, forced));
    assert.deepEqual([skipped.ids, skipped.text], [[bos, bos, bos], ""]);
    const [kept] = await collect(engine, greedy(PROMPT, 3, { ...forced, skipSpecialTokens: false }));
    assert.equal(kept.text, "<s><s><s>");
  });

  await t.step("include_stop_str_in_output keeps the stop string that ended the choice", async () => {
    // A stop string from the middle of the greedy text: the choice ends there either way.
    const stop = plain.text.slice(10, 14);
    const at = plain.text.indexOf(stop);
    assert.ok(stop.length === 4 && at >= 0, JSON.stringify(plain.text));
    const [cut] = await collect(engine, greedy(PROMPT, 24, { stop: [stop, "never in it"] }));
    assert.deepEqual([cut.text, cut.finish], [plain.text.slice(0, at), "stop"]);
    const [kept] = await collect(
      engine,
      greedy(PROMPT, 24, { stop: ["never in it", stop], includeStopStr: true }),
    );
    assert.deepEqual([kept.text, kept.finish], [plain.text.slice(0, at + stop.length), "stop"]);
  });

  await t.step(
    "stop_reason: the stop string or stop_token_ids id that ended a choice; none for EOS",
    async () => {
      const reasonOf = async (extra: Partial<GenerateRequest>) => {
        let reason: string | number | undefined | null = null;
        await collect(engine, { ...greedy(PROMPT, 24), ...extra }, {
          onEvent: (ev) => {
            if (ev.type === "end") reason = ev.stopReason;
          },
        });
        return reason;
      };
      const stop = plain.text.slice(10, 14);
      assert.equal(await reasonOf({ stop: ["never in it", stop] }), stop);
      assert.equal(await reasonOf({ stopTokenIds: [plain.ids[3]] }), plain.ids[3]);
      const eos = model.config.eosTokenIds[0];
      assert.equal(await reasonOf({ logitBias: [[eos, 100]], stopTokenIds: [eos] }), undefined);
      assert.equal(await reasonOf({}), undefined, "length");
    },
  );

  await t.step("truncate_prompt_tokens reads the last ids as the whole prompt", async () => {
    const ids = tok.encode(PROMPT, { addSpecialTokens: true });
    const k = 6;
    const last = { input: { kind: "tokens" as const, ids: ids.slice(-k) } };
    const [want] = await collect(engine, { ...greedy(PROMPT, 12), ...last });
    const events = [];
    for await (const ev of engine.generate({ ...greedy(PROMPT, 12), truncatePromptTokens: k })) {
      events.push(ev);
    }
    const start = events.find((e) => e.type === "start");
    assert.equal(start?.type === "start" && start.promptTokens, k);
    const [got] = await collect(engine, { ...greedy(PROMPT, 12), truncatePromptTokens: k });
    assert.deepEqual(got.ids, want.ids);
    // Longer than the prompt, or -1 (the max model length): the whole prompt.
    for (const keep of [ids.length + 5, -1]) {
      const [whole] = await collect(engine, { ...greedy(PROMPT, 24), truncatePromptTokens: keep });
      assert.deepEqual(whole.ids, plain.ids);
    }
    // echo gives back what the model read.
    const [echoed] = await collect(engine, { ...greedy(PROMPT, 1), echo: true, truncatePromptTokens: k });
    assert.ok(echoed.text.startsWith(tok.decode(ids.slice(-k))), echoed.text);
  });

  await t.step("allowed_token_ids: every sampled id among them; EOS only if listed", async () => {
    const allowed = [tok.tokenToId("▁the")!, tok.tokenToId("▁a")!, 300, 301].filter((id) => id !== undefined);
    const [choice0, choice1] = await collect(engine, {
      ...greedy(PROMPT, 20),
      n: 2,
      sampling: { temperature: 1.5, topP: 1, topK: 0, minP: 0, seed: 5 },
      allowedTokenIds: allowed,
    });
    for (const c of [choice0, choice1]) {
      assert.equal(c.ids.length, 20);
      assert.ok(c.ids.every((id) => allowed.includes(id)), `${c.ids}`);
      assert.equal(c.finish, "length");
    }
    // Greedy among them: at every step the pick has the highest logprob of the allowed ids there (the
    // logprobs are the model's, over the whole vocabulary; top 2 cover a two-id set).
    const pair = allowed.slice(0, 2);
    const [g] = await collect(engine, { ...greedy(PROMPT, 8), allowedTokenIds: pair, logprobs: 20 });
    for (const lp of g.logprobs) {
      const other = pair.find((id) => id !== lp.id)!;
      const rival = lp.top.find((e) => e.id === other);
      assert.ok(pair.includes(lp.id));
      if (rival) assert.ok(lp.logprob! >= rival.logprob, `${lp.id} over ${other}`);
    }
  });

  await t.step("bad_words: greedy decode takes the next best id where a banned word would end", async () => {
    /** Where `seq` first occurs in `ids`, or −1. */
    const find = (ids: number[], seq: readonly number[]) =>
      ids.findIndex((_, i) => seq.every((id, k) => ids[i + k] === id));
    const words = plain.text.split(/[^A-Za-z]+/).filter((w) => w.length > 1);
    // one word of one token and one of several, as the greedy output spells them
    const pick = (multi: boolean) =>
      words.map((w) => ({ w, bad: badWordIds(tok, [w]) })).find(({ bad }) =>
        (multi ? bad.sequences : bad.always.map((id) => [id])).some((s) => find(plain.ids, s) >= 0)
      );
    for (const multi of [false, true]) {
      const found = pick(multi);
      assert.ok(found, `no ${multi ? "multi" : "single"}-token word in ${JSON.stringify(plain.text)}`);
      const all = [...found.bad.always.map((id) => [id]), ...found.bad.sequences];
      const end = Math.min(
        ...all.flatMap((s) => find(plain.ids, s) >= 0 ? [find(plain.ids, s) + s.length - 1] : []),
      );
      const [got] = await collect(engine, { ...greedy(PROMPT, 24), badWords: [found.w] });
      for (const s of all) assert.equal(find(got.ids, s), -1, `"${found.w}" (${s}) in ${got.ids}`);
      // the same ids up to where the word would have ended, then another pick there
      assert.deepEqual(got.ids.slice(0, end), plain.ids.slice(0, end), `before "${found.w}" ends at ${end}`);
      assert.notEqual(got.ids[end], plain.ids[end]);
    }
    // a word banning the only allowed id leaves nothing to sample
    const one = tok.tokenToId("▁the")!;
    await assert.rejects(
      collect(engine, { ...greedy(PROMPT, 4), allowedTokenIds: [one], badWords: ["the"] }),
      (e: unknown) => e instanceof EngineInputError && e.param === "bad_words",
    );
  });

  await t.step(
    "return_token_ids: the prompt's ids, then each delta's, the EOS that ends a choice too",
    async () => {
      const run = async (extra: Partial<GenerateRequest>) => {
        const events: TokenEvent[] = [];
        for await (const ev of engine.generate({ ...greedy(PROMPT, 6), returnTokenIds: true, ...extra })) {
          events.push(ev);
        }
        const prompt = events.find((e) => e.type === "prompt");
        const ids = events.flatMap((e) => e.type === "delta" ? e.ids ?? [] : []);
        const end = events.find((e) => e.type === "end");
        return { prompt: prompt?.type === "prompt" ? prompt.ids : undefined, ids, end };
      };
      const got = await run({});
      assert.deepEqual(got.prompt, tok.encode(PROMPT, { addSpecialTokens: true }));
      assert.deepEqual(got.ids, plain.ids.slice(0, 6));
      const eos = model.config.eosTokenIds[0];
      const stopped = await run({ logitBias: [[eos, 100]] });
      assert.deepEqual(stopped.ids, [eos]);
      assert.equal(stopped.end?.type === "end" && stopped.end.finishReason, "stop");
    },
  );

  await t.step("add_special_tokens: the tokenizer's BOS before a text prompt, or not", async () => {
    const started = async (extra: Partial<GenerateRequest>) => {
      let prompt = -1;
      for await (const ev of engine.generate({ ...greedy(PROMPT, 1), ...extra })) {
        if (ev.type === "start") prompt = ev.promptTokens;
      }
      return prompt;
    };
    const plainIds = tok.encode(PROMPT, { addSpecialTokens: false });
    assert.equal(await started({}), plainIds.length + 1);
    assert.equal(await started({ addSpecialTokens: false }), plainIds.length);
  });

  await t.step("--max-prompt-tokens counts the prompt as the model reads it", async () => {
    const capped = await engineFor(gpu, dir, { maxPromptTokens: 10 });
    const ids = tok.encode(PROMPT, { addSpecialTokens: true });
    assert.ok(ids.length > 10);
    await assert.rejects(
      collect(capped.engine, greedy(PROMPT, 2)),
      (e: unknown) =>
        e instanceof EngineInputError && e.param === "prompt" && e.code === "context_length_exceeded" &&
        e.message ===
          `Prompt has ${ids.length} tokens but this server accepts at most 10 (--max-prompt-tokens)`,
    );
    // after truncate_prompt_tokens: what the model reads counts
    const [cut] = await collect(capped.engine, { ...greedy(PROMPT, 2), truncatePromptTokens: 10 });
    assert.equal(cut.finish, "length");
    await assert.rejects(collect(capped.engine, { ...greedy(PROMPT, 2), truncatePromptTokens: 11 }));
  });

  await t.step("the engine refuses what it cannot serve, naming the field", async () => {
    await assert.rejects(
      collect(engine, { ...greedy(PROMPT, 4), allowedTokenIds: [1, model.config.vocabSize] }),
      (e: unknown) => e instanceof EngineInputError && e.param === "allowed_token_ids[1]",
    );
    const grammar = compileJsonSchema({ type: "boolean" }, "schema");
    await assert.rejects(
      collect(engine, { ...greedy(PROMPT, 4), allowedTokenIds: [1], grammar }),
      (e: unknown) => e instanceof EngineInputError && e.param === "allowed_token_ids",
    );
  });
  gpu.device.destroy();
});
