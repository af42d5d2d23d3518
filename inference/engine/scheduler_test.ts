/**
 * Chunked prefill while sequences decode (scheduler.ts PIECE_STEPS): a prompt arriving while others decode
 * is read in pieces of at most twice the decoding rows (at least 32), each after a single decode step, so the
 * decoding streams wait about three decode steps for any id; with nothing decoding a prompt takes whole
 * forwards of maxRows. Checked on the steps the scheduler submits to a real runner (stories260K).
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { schedulerFor } from "../../tests/_engine.ts";
import type { StepSpec } from "./batch_runner.ts";

Deno.test("a prompt arriving while others decode is read in pieces of at most twice the decoding rows", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const served = await schedulerFor(gpu, dir, { maxModelLen: 320, maxRows: 128 });
  const { runner, generate } = served;
  const chunks: StepSpec[][] = [];
  const submit = runner.submit.bind(runner);
  runner.submit = (steps, wantLogprobs) => {
    chunks.push(steps.map((s) => ({ ...s, rows: [...s.rows] })));
    return submit(steps, wantLogprobs);
  };
  try {
    const ids = (n: number, from: number) => Array.from({ length: n }, (_, i) => 1 + ((from + i) % 400));
    let decoding!: () => void;
    const both = new Promise<void>((r) => (decoding = r));
    let firsts = 0;
    const first = (n: number) => n === 1 && ++firsts === 2 && decoding();
    const short = [generate(ids(5, 0), 60, first), generate(ids(7, 50), 60, first)];
    await both;
    const from = chunks.length;
    await Promise.all([...short, generate(ids(200, 100), 4)]);
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
    served.destroy();
    gpu.device.destroy();
  }
});
