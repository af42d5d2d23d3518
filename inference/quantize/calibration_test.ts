import assert from "node:assert/strict";
import {
  BUILTIN_CALIBRATION,
  builtinCalibrationPath,
  defaultSeqLen,
  drawWindows,
  loadCalibration,
  seededUniform,
} from "./calibration.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { sharedPath } from "../../tests/_gpu.ts";

const ids = Uint32Array.from({ length: 1000 }, (_, i) => i);

Deno.test("drawWindows() draws seeded, contiguous windows of seqLen tokens", () => {
  const a = drawWindows(ids, { nsamples: 16, seqLen: 50 });
  assert.equal(a.length, 16);
  for (const w of a) {
    assert.equal(w.length, 50);
    // ids[i] = i, so a contiguous slice is an arithmetic run inside the text.
    assert.ok(w[0] + 49 < ids.length);
    assert.ok(w.every((v, i) => v === w[0] + i));
  }
  assert.deepEqual(drawWindows(ids, { nsamples: 16, seqLen: 50, seed: 0 }), a, "seed 0 is the default");
  const b = drawWindows(ids, { nsamples: 16, seqLen: 50, seed: 1 });
  assert.notDeepEqual(b.map((w) => w[0]), a.map((w) => w[0]), "another seed, other starts");
  const starts = new Set(a.map((w) => w[0]));
  assert.ok(starts.size >= 12, `starts spread out (${starts.size} distinct of 16)`);
});

Deno.test("drawWindows() reaches both ends and rejects bad sizes", () => {
  const whole = drawWindows(ids, { nsamples: 3, seqLen: 1000 });
  assert.ok(whole.every((w) => w[0] === 0 && w[999] === 999), "seqLen = n leaves one start");
  const starts = drawWindows(ids, { nsamples: 4000, seqLen: 991 }).map((w) => w[0]);
  assert.equal(Math.min(...starts), 0);
  assert.equal(Math.max(...starts), 9);
  assert.throws(() => drawWindows(ids, { seqLen: 1001 }), /only 1000 tokens/);
  assert.throws(() => drawWindows(ids, { nsamples: 0, seqLen: 10 }), /nsamples 0/);
  assert.throws(() => drawWindows(ids, { seqLen: 1 }), /seqLen 1/);
});

Deno.test("seededUniform() is reproducible and stays in [0, 1)", () => {
  const r1 = seededUniform(7), r2 = seededUniform(7);
  const xs = Array.from({ length: 10000 }, () => r1());
  assert.deepEqual(Array.from({ length: 10000 }, () => r2()), xs);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
});

Deno.test("defaultSeqLen() caps the context at 2048", () => {
  assert.equal(defaultSeqLen(512), 512);
  assert.equal(defaultSeqLen(131072), 2048);
});

Deno.test("loadCalibration() tokenizes the held-out TinyStories half", async () => {
  const model = sharedPath("models/stories260K");
  const text = sharedPath("data/calib/tinystories_calib_second_half.txt");
  if (!model || !text) return;
  const tok = await loadTokenizer(model);
  const calib = await loadCalibration(tok, text, { nsamples: 4, seqLen: 512 });
  assert.ok(calib.textTokens > 100_000, `${calib.textTokens} tokens`);
  assert.equal(calib.windows.length, 4);
  assert.ok(calib.windows.every((w) => w.length === 512 && w.every((id) => id < tok.vocabSize)));
  await assert.rejects(
    loadCalibration(tok, "/nonexistent.txt", { seqLen: 8 }),
    /Cannot read calibration text/,
  );
});

Deno.test('loadCalibration("builtin") reads the Book of Genesis kept in the repository', async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const text = await Deno.readTextFile(builtinCalibrationPath());
  assert.ok(text.startsWith("In the beginning God created the heaven and the earth."));
  assert.ok(text.length > 100_000 && text.length < 200_000, `${text.length} characters`);
  const calib = await loadCalibration(tok, BUILTIN_CALIBRATION, { nsamples: 4, seqLen: 256, seed: 0 });
  assert.equal(calib.windows.length, 4);
  assert.ok(calib.textTokens > 40_000, `${calib.textTokens} tokens`);
  assert.match(tok.decode(calib.windows[0]), /[A-Za-z]+ [a-z]+/);
});
