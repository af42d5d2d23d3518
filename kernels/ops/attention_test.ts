import assert from "node:assert/strict";
import { attentionPlan, createAttention } from "./attention.ts";
import { type AttentionCase, checkAttention } from "../../tests/_attention_check.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage } from "../core/buffers.ts";
import { testGpu } from "../../tests/_gpu.ts";

const CASES: AttentionCase[] = [
  { name: "one position", rows: 1, nHeads: 1, nKvHeads: 1, headDim: 4, seqLen: 8, pos: 0 },
  { name: "MHA (G = 1)", rows: 7, nHeads: 3, nKvHeads: 3, headDim: 4, seqLen: 16, pos: 5 },
  { name: "G = 7", rows: 63, nHeads: 7, nKvHeads: 1, headDim: 12, seqLen: 128, pos: 0 },
  { name: "cache full", rows: 65, nHeads: 4, nKvHeads: 2, headDim: 16, seqLen: 65, pos: 0 },
  { name: "G = 8", rows: 3, nHeads: 16, nKvHeads: 2, headDim: 64, seqLen: 64, pos: 60 },
  { name: "2 outputs per invocation", rows: 3, nHeads: 16, nKvHeads: 1, headDim: 128, seqLen: 64, pos: 40 },
  { name: "stories260K prefill", rows: 65, nHeads: 8, nKvHeads: 4, headDim: 8, seqLen: 512, pos: 0 },
  { name: "stories260K second turn", rows: 5, nHeads: 8, nKvHeads: 4, headDim: 8, seqLen: 512, pos: 300 },
  { name: "stories260K decode", rows: 1, nHeads: 8, nKvHeads: 4, headDim: 8, seqLen: 2048, pos: 2000 },
  { name: "lq-49m prefill", rows: 64, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 512, pos: 0 },
  { name: "lq-49m second turn", rows: 33, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 512, pos: 100 },
  { name: "lq-49m decode", rows: 1, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 2048, pos: 2000 },
  {
    name: "lq-49m decode, one workgroup per head",
    ...{ rows: 1, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 2048, pos: 2000, splits: 1 },
  },
  { name: "Llama-3-8B-like prefill", rows: 17, nHeads: 32, nKvHeads: 8, headDim: 128, seqLen: 320, pos: 0 },
  {
    name: "Llama-3-8B-like second turn",
    rows: 9,
    nHeads: 32,
    nKvHeads: 8,
    headDim: 128,
    seqLen: 320,
    pos: 300,
  },
  { name: "Llama-3-8B-like decode", rows: 1, nHeads: 32, nKvHeads: 8, headDim: 128, seqLen: 1024, pos: 1000 },
  {
    name: "forced splits, prefill",
    rows: 7,
    nHeads: 8,
    nKvHeads: 4,
    headDim: 64,
    seqLen: 1024,
    pos: 600,
    splits: 5,
  },
  {
    name: "mostly empty splits",
    rows: 1,
    nHeads: 8,
    nKvHeads: 4,
    headDim: 8,
    seqLen: 4096,
    pos: 3,
    splits: 64,
  },
  // Sliding windows (Mistral, Gemma local layers): positions before P − window + 1 are masked; here they
  // hold NaN-free random keys that would change the result if read.
  {
    name: "window, prefill past it",
    rows: 61,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    seqLen: 256,
    pos: 0,
    window: 24,
  },
  { name: "window, decode", rows: 1, nHeads: 4, nKvHeads: 2, headDim: 16, seqLen: 256, pos: 84, window: 24 },
  {
    name: "window, forced splits",
    ...{ rows: 5, nHeads: 8, nKvHeads: 4, headDim: 64, seqLen: 2048, pos: 1500, window: 100, splits: 3 },
  },
  {
    name: "window ≥ every length",
    rows: 9,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    seqLen: 64,
    pos: 3,
    window: 64,
  },
  // Gemma: query_pre_attn_scalar scale and score soft-capping (scores of a few tens reach the cap).
  {
    name: "scale and softcap",
    ...{ rows: 7, nHeads: 4, nKvHeads: 1, headDim: 16, seqLen: 64, pos: 20, scale: 2, softcap: 5 },
  },
  {
    name: "all three, decode splits",
    ...{ rows: 1, nHeads: 8, nKvHeads: 2, headDim: 32, seqLen: 1024, pos: 900, window: 300, softcap: 3 },
  },
];

Deno.test("attention() matches the f64 reference for prefill, second turns and long decode", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createAttention(gpu);
  await checkPipelines(gpu);
  for (const c of CASES) {
    const plan = attentionPlan(gpu, c);
    await t.step(
      `${c.name}: ${JSON.stringify(c)} TILE ${plan.TILE} NPART ${plan.NPART} R ${plan.R}`,
      () => checkAttention(gpu, kernel, c),
    );
  }
  await t.step("shapes it cannot serve are rejected at bind", () => {
    const b = createStorage(gpu, 16, "b");
    const args = { q: b, kCache: b, vCache: b, out: b, state: b, rows: 1, seqLen: 4 };
    assert.throws(() => kernel.bind({ ...args, nHeads: 2, nKvHeads: 2, headDim: 6 }), /multiple of 4/);
    assert.throws(() => kernel.bind({ ...args, nHeads: 3, nKvHeads: 2, headDim: 8 }), /multiple of nKvHeads/);
  });
  gpu.device.destroy();
});
