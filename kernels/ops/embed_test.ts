import assert from "node:assert/strict";
import { createEmbed } from "./embed.ts";
import { embedRef } from "../core/reference.ts";
import { checkPipelines } from "../core/gpu.ts";
import {
  createStorage,
  f16BitsToF32,
  f32ToF16Bits,
  readF32,
  runPass,
  uploadStorage,
} from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

/** Random ids in [0, vocabSize), with every third one pushed out of range when `withBad`. */
function randomIds(rows: number, vocabSize: number, seed: number, withBad: boolean): Uint32Array {
  const rand = seededRandom(seed);
  const ids = new Uint32Array(rows);
  for (let t = 0; t < rows; t++) {
    ids[t] = Math.floor(rand() * vocabSize);
    if (withBad && t % 3 === 1) ids[t] = t % 2 ? vocabSize : 0xffffffff;
  }
  return ids;
}

/** embedRef with out-of-range ids mapped to zero rows, the kernel's documented behaviour. */
function expected(table: ArrayLike<number>, ids: Uint32Array, vocabSize: number, dim: number): Float64Array {
  const safe = ids.map((id) => (id < vocabSize ? id : 0));
  const out = embedRef(table, safe, dim);
  ids.forEach((id, t) => {
    if (id >= vocabSize) out.fill(0, t * dim, (t + 1) * dim);
  });
  return out;
}

Deno.test("embed() gathers table rows exactly for f32 and packed f16 tables", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const f32 = createEmbed(gpu, { weightType: "f32" });
  const f16 = createEmbed(gpu, { weightType: "f16" });
  await checkPipelines(gpu);
  const cases: [type: "f32" | "f16", rows: number, vocabSize: number, dim: number][] = [
    ["f32", 1, 5, 1],
    ["f32", 7, 37, 7],
    ["f32", 63, 37, 63],
    ["f32", 65, 100, 64],
    ["f32", 3, 11, 65],
    ["f32", 9, 512, 64], // stories260K
    ["f16", 1, 5, 2],
    ["f16", 7, 37, 64],
    ["f16", 65, 100, 66],
    ["f16", 5, 1000, 512], // lq-49m width
  ];
  for (const [type, rows, vocabSize, dim] of cases) {
    await t.step(`${type} table, rows = ${rows}, vocabSize = ${vocabSize}, dim = ${dim}`, async () => {
      const values = randomF32(vocabSize * dim, vocabSize * 31 + dim, 2);
      let table: GPUBuffer;
      let decoded: ArrayLike<number> = values;
      if (type === "f16") {
        const halves = new Uint16Array(values.length).map((_, i) => f32ToF16Bits(values[i]));
        decoded = Array.from(halves, f16BitsToF32);
        table = uploadStorage(gpu, new Uint32Array(halves.buffer), "table f16");
      } else {
        table = uploadStorage(gpu, values, "table f32");
      }
      const ids = randomIds(rows, vocabSize, rows + dim, rows > 1);
      const out = createStorage(gpu, rows * dim * 4, "out");
      const kernel = type === "f16" ? f16 : f32;
      const bound = kernel.bind({ table, ids: uploadStorage(gpu, ids, "ids"), out, rows, dim });
      runPass(gpu, (pass) => bound.encode(pass));
      const got = await readF32(gpu, out, rows * dim);
      // A gather moves bits: any difference at all is a bug.
      assert.equal(maxAbsDiff(got, expected(decoded, ids, vocabSize, dim)), 0);
    });
  }
  await t.step("scale multiplies every gathered value once in f32 (Gemma's √hidden)", async () => {
    const [rows, vocabSize, dim] = [5, 37, 64];
    const values = randomF32(vocabSize * dim, 99, 2);
    const ids = randomIds(rows, vocabSize, 7, false);
    const out = createStorage(gpu, rows * dim * 4, "out");
    const scale = Math.fround(Math.sqrt(3072));
    const bound = f32.bind({
      table: uploadStorage(gpu, values, "table"),
      ids: uploadStorage(gpu, ids, "ids"),
      out,
      rows,
      dim,
      scale,
    });
    runPass(gpu, (pass) => bound.encode(pass));
    const want = Float32Array.from(embedRef(values, ids, dim), (v) => Math.fround(v * scale));
    assert.equal(maxAbsDiff(await readF32(gpu, out, rows * dim), want), 0);
  });
  await t.step("f16 table with an odd dim is rejected at bind", () => {
    const table = createStorage(gpu, 16, "table");
    const ids = createStorage(gpu, 4, "ids");
    assert.throws(() => f16.bind({ table, ids, out: ids, rows: 1, dim: 3 }), /dim 3 is odd/);
  });
  gpu.device.destroy();
});
