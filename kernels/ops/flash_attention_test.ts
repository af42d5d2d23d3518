import assert from "node:assert/strict";
import { createFlashAttention, flashAttentionPlan } from "./flash_attention.ts";
import { blockedFlashPlan } from "./flash_attention_blocked.ts";
import { type AttentionCase, checkAttention } from "../../tests/_attention_check.ts";
import { testGpu } from "../../tests/_gpu.ts";

// Several row blocks with a partial last one, so masking, the block order and the tail are all exercised.
const CASES: AttentionCase[] = [
  { name: "stories260K window", rows: 300, nHeads: 8, nKvHeads: 4, headDim: 8, seqLen: 512, pos: 0 },
  { name: "lq-49m window", rows: 150, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 256, pos: 0 },
  { name: "Llama-3-8B heads (TPR 2)", rows: 131, nHeads: 8, nKvHeads: 2, headDim: 128, seqLen: 160, pos: 0 },
  { name: "second turn, pos > 0", rows: 70, nHeads: 4, nKvHeads: 1, headDim: 32, seqLen: 200, pos: 45 },
  { name: "headDim 256 (TPR 4)", rows: 40, nHeads: 2, nKvHeads: 1, headDim: 256, seqLen: 64, pos: 3 },
  { name: "odd vec4 count", rows: 33, nHeads: 3, nKvHeads: 3, headDim: 12, seqLen: 64, pos: 0 },
  { name: "sliding window", rows: 200, nHeads: 4, nKvHeads: 2, headDim: 16, seqLen: 256, pos: 0, window: 37 },
  {
    name: "scale, softcap and window",
    ...{
      rows: 90,
      nHeads: 4,
      nKvHeads: 2,
      headDim: 16,
      seqLen: 128,
      pos: 20,
      scale: 2,
      softcap: 5,
      window: 50,
    },
  },
];

Deno.test("flash attention matches the f64 reference over whole windows", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const R of [1, 2]) {
    const kernel = createFlashAttention(gpu, { R, build: "rows" });
    for (const c of CASES) {
      const plan = flashAttentionPlan(gpu, c, { R });
      await t.step(`${c.name}: ${JSON.stringify(plan)}`, async () => {
        assert.ok(plan, "the flash kernel serves this head size");
        await checkAttention(gpu, kernel, c);
      });
    }
  }
  // The register-blocked build: its default tiling for the device, and the smallest one.
  for (const tile of [undefined, { BR: 16, BC: 16 }]) {
    const tune = { build: "blocked" as const, ...(tile ? { blockedTile: tile } : {}) };
    const kernel = createFlashAttention(gpu, tune);
    const more: AttentionCase[] = [
      { name: "headDim 96 (DV 3)", rows: 50, nHeads: 4, nKvHeads: 4, headDim: 96, seqLen: 96, pos: 7 },
      {
        name: "headDim 64: scale, softcap and window",
        ...{ rows: 100, nHeads: 4, nKvHeads: 2, headDim: 64, seqLen: 160, pos: 20 },
        ...{ scale: 0.5, softcap: 5, window: 45 },
      },
    ];
    for (const c of [...CASES.filter((c) => c.headDim >= 32), ...more]) {
      const plan = blockedFlashPlan(gpu, c, tile);
      await t.step(`blocked, ${c.name}: ${JSON.stringify(plan)}`, async () => {
        // Head sizes up to 128 (Llama, Qwen, Mistral) fit; wider ones keep the rows build.
        if (c.headDim <= 128) assert.ok(plan, "the blocked build serves this head size");
        await checkAttention(gpu, kernel, c);
      });
    }
  }
  await t.step("head sizes it cannot tile fall back to attention.ts", () => {
    assert.equal(flashAttentionPlan(gpu, { headDim: 6 }), null);
    assert.equal(flashAttentionPlan(gpu, { headDim: 4 * 17 }), null); // 17 vec4 do not split in two
  });
  gpu.device.destroy();
});
