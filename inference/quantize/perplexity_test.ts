import assert from "node:assert/strict";
import { evaluatePerplexity, loadEvalModel } from "./perplexity.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { assertAllClose } from "../../tests/_assert.ts";

Deno.test("evaluatePerplexity() windows the text, drops the tail and chunks the LM head", async (t) => {
  const dir = sharedPath("models/stories260K");
  if (!dir) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const m = await loadEvalModel(gpu, dir);
  assert.equal(m.quantization, null);
  const ids = m.tokenizer.encode("Once upon a time, there was a little dog named Max. ".repeat(12), {
    addSpecialTokens: true,
  });
  const ctx = 32;
  const full = Math.floor(ids.length / ctx);
  const base = await evaluatePerplexity(gpu, m.config, m.weights, ids, { ctx });

  await t.step("non-overlapping windows of ctx, tail dropped, ppl = exp(mean NLL)", () => {
    assert.ok(ids.length % ctx !== 0, "the text has a tail");
    assert.equal(base.windows, full);
    assert.equal(base.tokens, full * (ctx - 1));
    assert.equal(base.tokenNll.length, base.tokens);
    assert.ok(base.tokenNll.every((v) => Number.isFinite(v) && v >= 0));
    const mean = base.tokenNll.reduce((s, v) => s + v, 0) / base.tokens;
    assert.ok(Math.abs(Math.log(base.perplexity) - mean) < 1e-9);
    assert.ok(base.perplexity > 1 && base.perplexity < 20, `a repeated story is easy: ${base.perplexity}`);
  });

  await t.step("LM-head chunks of 5 rows (a partial last chunk) give the same NLLs", async () => {
    const chunked = await evaluatePerplexity(gpu, m.config, m.weights, ids, { ctx, maxLogitRows: 5 });
    assertAllClose(chunked.tokenNll, base.tokenNll, { atol: 1e-6, rtol: 0, what: "chunked" });
  });

  await t.step("maxWindows keeps the first windows; progress reaches the total", async () => {
    const seen: number[] = [];
    const two = await evaluatePerplexity(gpu, m.config, m.weights, ids, {
      ctx,
      maxWindows: 2,
      onProgress: (done, total) => seen.push(done / total),
    });
    assert.equal(two.windows, 2);
    assert.deepEqual(two.tokenNll, base.tokenNll.subarray(0, 2 * (ctx - 1)));
    assert.equal(seen.at(-1), 1);
  });

  await t.step("rejects a bad ctx, a short text and out-of-vocabulary ids", async () => {
    const ev = (xs: ArrayLike<number>, c: number) =>
      evaluatePerplexity(gpu, m.config, m.weights, xs, { ctx: c });
    await assert.rejects(ev(ids, 1), /ctx 1/);
    await assert.rejects(ev(ids, m.config.seqLen + 1), /ctx 513/);
    await assert.rejects(ev(ids.slice(0, 10), 32), /fewer than one window of 32/);
    await assert.rejects(ev([1, 2, 9999, 3], 4), /token 9999 at position 2/);
  });
  gpu.device.destroy();
});
