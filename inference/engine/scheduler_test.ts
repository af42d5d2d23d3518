/**
 * Chunked prefill while sequences decode (scheduler.ts PIECE_STEPS): a prompt arriving while others decode
 * is read in pieces of at most twice the decoding rows (at least 32), each after a single decode step, so the
 * decoding streams wait about three decode steps for any id; with nothing decoding a prompt takes whole
 * forwards of maxRows. Checked on the steps the scheduler submits to a real runner (stories260K). And a
 * constrained sequence whose mask is slow to come (the mask thread walking) holds up no other stream.
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import { schedulerFor } from "../../tests/_engine.ts";
import { maskWords } from "../../kernels/ops/mod.ts";
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

/** A mask row allowing the ids given (bit id & 31 of word id >> 5). */
function allowOnly(vocab: number, ...ids: number[]): Uint32Array {
  const words = new Uint32Array(maskWords(vocab));
  for (const id of ids) words[id >>> 5] |= 1 << (id & 31);
  return words;
}

Deno.test("a constrained sequence waiting for its mask holds up no other stream, then samples inside it", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const served = await schedulerFor(gpu, dir, { maxModelLen: 320, maxRows: 128 });
  const { runner, generate } = served;
  const vocab = runner.config.vocabSize;
  try {
    const ids = (n: number, from: number) => Array.from({ length: n }, (_, i) => 1 + ((from + i) % 400));
    // The first mask comes only when the test says so (a slow walk on the mask thread); later ones at once,
    // alternately as a value and as a promise. Each allows one id, so greedy sampling must pick it.
    const allowed = [77, 301, 5];
    const asked: number[][] = [];
    let releases = 0;
    let firstMask!: (words: Uint32Array) => void;
    const constraint = {
      mask(taken: readonly number[]) {
        asked.push([...taken]);
        const words = allowOnly(vocab, allowed[taken.length]);
        if (taken.length === 0) return new Promise<Uint32Array>((resolve) => (firstMask = resolve));
        return taken.length % 2 === 1 ? words : Promise.resolve(words);
      },
      release: () => void releases++,
    };
    let others = 0;
    const other = generate(ids(6, 0), 40, (n) => (others = n));
    let mine = 0;
    const constrained = generate(ids(9, 20), 3, (n) => (mine = n), constraint);
    for (const t0 = Date.now(); others < 12; await new Promise((r) => setTimeout(r, 5))) {
      assert.ok(
        Date.now() - t0 < 60_000,
        `the other stream stalled at ${others} ids while a mask was pending`,
      );
    }
    assert.equal(mine, 0, "no id sampled without a mask");
    assert.deepEqual(asked, [[]], "one mask asked for (at admission)");
    firstMask(allowOnly(vocab, allowed[0]));
    assert.deepEqual(await constrained, allowed);
    assert.deepEqual(asked, [[], [77], [77, 301]]);
    assert.equal((await other).length, 40);
    assert.equal(releases, 1);

    // A mask that fails ends its sequence with that error; the slot goes on serving.
    const failing = generate(ids(5, 40), 3, undefined, {
      mask: () => Promise.reject(new Error("mask thread gone")),
      release: () => void releases++,
    });
    await assert.rejects(failing, /mask thread gone/);
    assert.equal(releases, 2);
    // So does one that cannot be written (a row of the wrong length), and the loop goes on.
    const short = generate(ids(5, 40), 3, undefined, { mask: () => Promise.resolve(new Uint32Array(1)) });
    await assert.rejects(short, /Cannot set the token mask/);
    assert.equal((await generate(ids(5, 40), 4)).length, 4);
  } finally {
    served.destroy();
    gpu.device.destroy();
  }
});
