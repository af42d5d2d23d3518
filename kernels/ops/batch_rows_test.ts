import assert from "node:assert/strict";
import { createBatchPrepare, createDispatchBuffer, createGatherRows, ROW_NONE } from "./batch_rows.ts";
import { createAdvance } from "../core/step_state.ts";
import { createStorage, readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";

Deno.test("batchPrepare() materialises each step's rows and gatherRows() compacts the logit rows", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const N = ROW_NONE;
  const rowStride = 5;
  const gatherStride = 3;
  // Step 0: a decode row of slot 2, two prompt rows of slot 0, padding. Step 1: decode rows of slots 0, 2.
  const progRows = new Uint32Array([
    ...[2, 7, N, 0, 0, 0, 11, 0, 0, 1, 12, 0, N, 0, 0, 0, 0, 0, 0, 0],
    ...[0, 2, N, 0, 2, 8, N, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  ]);
  const progGather = new Uint32Array([0, 2, N, 1, 0, N]);
  const slots = new Uint32Array([40, 1, 0, 0, 41, 0, 0, 0, 42, 5, 0, 0]);
  const state = uploadStorage(gpu, new Uint32Array([0, 0, 0, 0]), "state");
  const bufs = {
    ids: createStorage(gpu, 16, "ids"),
    rowPos: createStorage(gpu, 16, "rowPos"),
    rowSlot: createStorage(gpu, 16, "rowSlot"),
    gather: createStorage(gpu, 12, "gather"),
    rowSplits: createStorage(gpu, 16, "rowSplits"),
    dispatch: createDispatchBuffer(gpu, "dispatch"),
  };
  const prepare = createBatchPrepare(gpu);
  const common = {
    state,
    progRows: uploadStorage(gpu, progRows, "progRows"),
    progGather: uploadStorage(gpu, progGather, "progGather"),
    slots: uploadStorage(gpu, slots, "slots"),
    ...bufs,
    rowStride,
    gatherStride,
    nKvHeads: 3,
    splitSpan: 4,
  };
  const step0 = prepare.bind({ ...common, rows: 4, logitRows: 3 });
  const step1 = prepare.bind({ ...common, rows: 2, logitRows: 2 });
  const advance = createAdvance(gpu).bind({ state, nTokens: 0, stepInc: 1 });
  runPass(gpu, (pass) => {
    step0.encode(pass);
    advance.encode(pass);
  });
  assert.deepEqual(Array.from(await readU32(gpu, bufs.ids, 4)), [42, 11, 12, 0]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.rowPos, 4)), [7, 0, 1, 0]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.rowSlot, 4)), [2, 0, 0, N]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.gather, 3)), [0, 2, N]);
  // ⌈(pos + 1) / 4⌉ splits; padding rows take one; the grid covers 4 rows · 3 KV heads · 2 splits.
  assert.deepEqual(Array.from(await readU32(gpu, bufs.rowSplits, 4)), [2, 1, 1, 1]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.dispatch, 4)), [24, 1, 1, 2]);
  const x = randomF32(4 * 6, 1);
  const out = createStorage(gpu, 3 * 6 * 4, "out");
  const gather = createGatherRows(gpu).bind({
    gather: bufs.gather,
    x: uploadStorage(gpu, x, "x"),
    out,
    rows: 3,
    dim: 6,
  });
  runPass(gpu, (pass) => {
    gather.encode(pass);
    step1.encode(pass);
  });
  const got = await readF32(gpu, out, 18);
  assert.deepEqual(Array.from(got), [...x.subarray(0, 6), ...x.subarray(12, 18), 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.ids, 2)), [40, 42]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.rowPos, 2)), [2, 8]);
  assert.deepEqual(Array.from(await readU32(gpu, bufs.gather, 2)), [1, 0]);
  gpu.device.destroy();
});
