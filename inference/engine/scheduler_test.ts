/**
 * Chunked prefill while sequences decode (scheduler.ts PIECE_STEPS): a prompt arriving while others decode
 * is read in pieces of at most twice the decoding rows (at least 32), each after a single decode step, so the
 * decoding streams wait about three decode steps for any id; with nothing decoding a prompt takes whole
 * forwards of maxRows. Checked on the steps the scheduler submits to a real runner (stories260K).
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { loadModelConfig, uploadModelWeights } from "../model/mod.ts";
import { MAX_BAN, MAX_BIAS } from "./engine.ts";
import { BatchRunner, type StepSpec } from "./batch_runner.ts";
import { KvCache, sizeKvCache } from "./kv_cache.ts";
import { Scheduler } from "./scheduler.ts";
import { GREEDY_SLOT } from "../../kernels/ops/mod.ts";

Deno.test("a prompt arriving while others decode is read in pieces of at most twice the decoding rows", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const config = await loadModelConfig(dir);
  const weights = await uploadModelWeights(gpu, dir, config, { weightType: "f32" });
  const shape = sizeKvCache(gpu, config, { memory: null, maxModelLen: 320, maxNumSeqs: 4, kvType: "f32" });
  const cache = new KvCache(gpu, config, shape);
  const runner = new BatchRunner(gpu, config, weights, cache, {
    maxSlots: 4,
    maxRows: 128,
    maxChunk: 8,
    maxBias: MAX_BIAS,
    maxBan: MAX_BAN,
  });
  const chunks: StepSpec[][] = [];
  const submit = runner.submit.bind(runner);
  runner.submit = (steps, wantLogprobs) => {
    chunks.push(steps.map((s) => ({ ...s, rows: [...s.rows] })));
    return submit(steps, wantLogprobs);
  };
  const scheduler = new Scheduler();
  const entry = scheduler.addModel(runner, () => {});
  const run = (prompt: number[], limit: number, onFirst?: () => void) =>
    new Promise<void>((resolve, reject) => {
      let n = 0;
      scheduler.add(entry, [{
        prompt,
        limit,
        settings: GREEDY_SLOT,
        sink: {
          token() {
            if (++n === 1) onFirst?.();
            if (n === limit) resolve();
            return false;
          },
          fail: reject,
        },
      }]);
    });
  try {
    const ids = (n: number, from: number) => Array.from({ length: n }, (_, i) => 1 + ((from + i) % 400));
    let decoding!: () => void;
    const both = new Promise<void>((r) => (decoding = r));
    let firsts = 0;
    const short = [
      run(ids(5, 0), 60, () => ++firsts === 2 && decoding()),
      run(ids(7, 50), 60, () => ++firsts === 2 && decoding()),
    ];
    await both;
    const from = chunks.length;
    await Promise.all([...short, run(ids(200, 100), 4)]);
    const pieces = chunks.slice(from).filter((c) => c.some((s) => s.kind === "prefill"));
    assert.ok(pieces.length >= 2, `the 200-id prompt took ${pieces.length} pieces`);
    let beside = 0;
    for (const chunk of pieces) {
      const decode = chunk.filter((s) => s.kind === "decode");
      const prefill = chunk.filter((s) => s.kind === "prefill");
      if (decode.length === 0) continue; // nothing decoded: whole forwards
      assert.equal(decode.length, 1, "one decode step in a chunk that carries a piece");
      assert.equal(prefill.length, 1, "one piece per chunk while others decode");
      const most = Math.max(32, 2 * decode[0].rows.length);
      assert.ok(
        prefill[0].rows.length <= most,
        `a ${prefill[0].rows.length}-row piece beside ${decode[0].rows.length} decode rows`,
      );
      beside++;
    }
    assert.ok(beside >= 2, `only ${beside} pieces ran while the others decoded`);
  } finally {
    runner.destroy();
    cache.destroy();
    gpu.device.destroy();
  }
});
