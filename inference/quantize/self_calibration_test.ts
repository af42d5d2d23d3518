import assert from "node:assert/strict";
import { sampleCalibration, selfStartToken } from "./self_calibration.ts";
import { loadTokenizer } from "../text/mod.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";

Deno.test("sampleCalibration() samples reproducible windows from BOS or the document separator", async () => {
  const stories = sharedPath("models/stories260K");
  const lq = sharedPath("models/lq-49m");
  if (!stories || !lq) return;
  // Llama's tokenizer adds BOS (1); SmolLM's adds none, so windows start at <|endoftext|> (0).
  assert.equal(selfStartToken(await loadTokenizer(stories)), 1);
  assert.equal(selfStartToken(await loadTokenizer(lq)), 0);
  const gpu = await testGpu();
  if (!gpu) return;
  try {
    const a = await sampleCalibration(gpu, stories, { nsamples: 2, seqLen: 24, seed: 3 });
    const b = await sampleCalibration(gpu, stories, { nsamples: 2, seqLen: 24, seed: 3 });
    const c = await sampleCalibration(gpu, stories, { nsamples: 1, seqLen: 24, seed: 4 });
    assert.deepEqual(a, b, "same seed, same windows");
    assert.equal(a.length, 2);
    for (const w of a) {
      assert.equal(w.length, 24);
      assert.equal(w[0], 1);
      assert.ok(w.every((id) => id < 512));
    }
    assert.notDeepEqual(a[0], a[1], "windows differ");
    assert.notDeepEqual(a[0], c[0], "seeds differ");
    await assert.rejects(sampleCalibration(gpu, stories, { nsamples: 1, seqLen: 513 }), /context is 512/);
  } finally {
    gpu.device.destroy();
  }
});
