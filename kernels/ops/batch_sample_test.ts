import assert from "node:assert/strict";
import {
  createBatchSample,
  GREEDY_SLOT,
  packSlotParams,
  SLOT_PARAMS_BYTES,
  type SlotSettings,
} from "./batch_sample.ts";
import { createLogitsProcess, maskWords } from "./logits_process.ts";
import { createLogprobs, LOGPROB_RANK_WORD, LOGPROB_RECORD_WORDS } from "./logprobs.ts";
import { logSoftmaxRef, sampleRef } from "../core/reference.ts";
import { checkPipelines, type Gpu } from "../core/gpu.ts";
import { createStorage, readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { seededRandom, testGpu, zipfLogits } from "../../tests/_gpu.ts";

const NONE = 0xffffffff;
const MAX_BIAS = 4;
const MAX_BAN = 3;
const BASE: SlotSettings = GREEDY_SLOT;

/**
 * The definition of the processing (logits_process.ts), in f64 on the host: `counts` and `mask` are the
 * slot's rows, `sampled` its RNG step.
 */
function processRef(
  l: Float32Array,
  s: SlotSettings,
  { counts, sampled, mask }: { counts: Uint32Array; sampled: number; mask: Uint32Array },
): Float64Array {
  const out = Float64Array.from(l);
  for (let i = 0; i < l.length; i++) {
    const n = counts[i] & 0x7fffffff;
    let x = out[i];
    if (counts[i] !== 0) x = x > 0 ? x / s.repetition : x * s.repetition;
    out[i] = x - s.frequency * n - (n > 0 ? s.presence : 0);
  }
  for (const [id, v] of s.bias) out[id] += v;
  if (sampled < s.minTokens) { for (const id of s.ban) out[id] = -Infinity; }
  if (s.masked) { for (let i = 0; i < l.length; i++) if (!allowed(mask, i)) out[i] = -Infinity; }
  return out;
}

/** Whether bit (id & 31) of word id >> 5 of a mask row is set. */
function allowed(mask: Uint32Array, id: number): boolean {
  return ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;
}

/** The first index of the largest value. */
function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

interface Setup {
  vocab: number;
  /** per logit row: its slot (or −1 for a padding gather entry) */
  rowSlots: number[];
  settings: SlotSettings[];
  /** per slot: sampled ids so far (the RNG step) */
  steps: number[];
  counts: Uint32Array;
  chunkStep: number;
  /** row r's logits (default: a Zipf row) */
  logits?: (r: number) => Float32Array;
  /** (maxSlots, maskWords(vocab)) token masks (default: none allowed; only `masked` slots read theirs) */
  masks?: Uint32Array;
}

async function run(gpu: Gpu, s: Setup) {
  const rows = s.rowSlots.length;
  const maxSlots = s.settings.length;
  const logits = new Float32Array(rows * s.vocab);
  s.rowSlots.forEach((_, r) =>
    logits.set(s.logits?.(r) ?? zipfLogits(s.vocab, 31 * r + s.vocab), r * s.vocab)
  );
  const params = new Uint8Array(maxSlots * SLOT_PARAMS_BYTES);
  const bias = new Uint32Array(maxSlots * MAX_BIAS * 2);
  const ban = new Uint32Array(maxSlots * MAX_BAN);
  s.settings.forEach((st, slot) => {
    params.set(
      new Uint8Array(packSlotParams(st, { maxBias: MAX_BIAS, maxBan: MAX_BAN })),
      slot * SLOT_PARAMS_BYTES,
    );
    st.bias.forEach(([id, v], j) => {
      bias[(slot * MAX_BIAS + j) * 2] = id;
      bias[(slot * MAX_BIAS + j) * 2 + 1] = new Uint32Array(Float32Array.of(v).buffer)[0];
    });
    st.ban.forEach((id, j) => ban[slot * MAX_BAN + j] = id);
  });
  // Forward rows are the logit rows reversed, to check the gather indirection.
  const gather = Uint32Array.from(s.rowSlots, (slot, r) => slot < 0 ? NONE : rows - 1 - r);
  const rowSlot = new Uint32Array(rows);
  s.rowSlots.forEach((slot, r) => rowSlot[rows - 1 - r] = slot < 0 ? 7 : slot);
  const slots = new Uint32Array(maxSlots * 4);
  s.steps.forEach((st, slot) => slots.set([NONE, st], slot * 4));
  const steps = s.chunkStep + 1;
  const b = {
    logits: uploadStorage(gpu, logits, "logits"),
    proc: createStorage(gpu, logits.byteLength, "proc"),
    slotParams: uploadStorage(gpu, params, "params"),
    gather: uploadStorage(gpu, gather, "gather"),
    rowSlot: uploadStorage(gpu, rowSlot, "rowSlot"),
    slots: uploadStorage(gpu, slots, "slots"),
    counts: uploadStorage(gpu, s.counts, "counts"),
    bias: uploadStorage(gpu, bias, "bias"),
    ban: uploadStorage(gpu, ban, "ban"),
    mask: uploadStorage(gpu, s.masks ?? new Uint32Array(maxSlots * maskWords(s.vocab)), "mask"),
    state: uploadStorage(gpu, new Uint32Array([0, s.chunkStep, 0, 0]), "state"),
    outTokens: uploadStorage(gpu, new Uint32Array(steps * maxSlots).fill(NONE), "outTokens"),
    outLogprobs: createStorage(gpu, steps * maxSlots * LOGPROB_RECORD_WORDS * 4, "outLogprobs"),
  };
  const common = {
    slotParams: b.slotParams,
    gather: b.gather,
    rowSlot: b.rowSlot,
    rows,
    vocabSize: s.vocab,
    maxSlots,
  };
  const process = createLogitsProcess(gpu).bind({
    ...common,
    logits: b.logits,
    slots: b.slots,
    counts: b.counts,
    bias: b.bias,
    ban: b.ban,
    maxBias: MAX_BIAS,
    maxBan: MAX_BAN,
    out: b.proc,
    mask: b.mask,
  });
  const sample = createBatchSample(gpu).bind({
    ...common,
    logits: b.proc,
    state: b.state,
    slots: b.slots,
    outTokens: b.outTokens,
    counts: b.counts,
  });
  const logprobs = createLogprobs(gpu).bind({
    ...common,
    logits: b.logits,
    state: b.state,
    outTokens: b.outTokens,
    outLogprobs: b.outLogprobs,
  });
  await checkPipelines(gpu);
  runPass(gpu, (pass) => [process, sample, logprobs].forEach((k) => k.encode(pass)));
  return {
    logits,
    proc: await readF32(gpu, b.proc, rows * s.vocab),
    tokens: (await readU32(gpu, b.outTokens, steps * maxSlots)).subarray(s.chunkStep * maxSlots),
    slots: await readU32(gpu, b.slots, maxSlots * 4),
    counts: await readU32(gpu, b.counts, maxSlots * s.vocab),
    records: (await readU32(gpu, b.outLogprobs, steps * maxSlots * LOGPROB_RECORD_WORDS)).subarray(
      s.chunkStep * maxSlots * LOGPROB_RECORD_WORDS,
    ),
  };
}

Deno.test("batchSample() draws every row with its slot's settings and RNG step", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const vocab of [1000, 1001, 4099]) {
    await t.step(`vocab ${vocab}`, async () => {
      const settings: SlotSettings[] = [
        { ...BASE },
        { ...BASE, temperature: 0.8, topK: 40, seed: 11 },
        { ...BASE, temperature: 1.2, topP: 0.7, seed: 12 },
        { ...BASE, temperature: 1, minP: 0.1, seed: 13 },
        { ...BASE, temperature: 0.7, topP: 0.9, topK: 100, seed: 14 },
      ];
      const rowSlots = [3, 0, -1, 4, 1, 2];
      const steps = [0, 5, 17, 2, 1000];
      const counts = new Uint32Array(settings.length * vocab);
      const got = await run(gpu, { vocab, rowSlots, settings, steps, counts, chunkStep: 1 });
      rowSlots.forEach((slot, r) => {
        if (slot < 0) return;
        const row = got.logits.subarray(r * vocab, (r + 1) * vocab);
        const want = sampleRef(row, settings[slot], steps[slot]);
        assert.equal(got.tokens[slot], want, `row ${r} slot ${slot}`);
        assert.equal(got.slots[slot * 4], want, "slot token");
        assert.equal(got.slots[slot * 4 + 1], steps[slot] + 1, "slot step");
        assert.equal(got.counts[slot * vocab + want], 1, "output count");
      });
    });
  }
  // 515 ids: one workgroup per row; 4,610: three (process walks 2,048 ids per workgroup), with biased and
  // banned ids on either side of each edge.
  const cases: [number, number[]][] = [[515, [1, 3, 7, 9, 500, 514]], [4610, [1, 2047, 2048, 3, 4095, 4609]]];
  for (const [vocab, ids] of cases) {
    await t.step(
      `penalties, logit bias and the min-tokens ban match their definition (vocab ${vocab})`,
      async () => {
        const settings: SlotSettings[] = [
          { ...BASE, presence: 0.5, frequency: 0.25, repetition: 1.3, bias: [[ids[1], 2.5], [ids[4], -100]] },
          { ...BASE, repetition: 0.8, minTokens: 4, ban: [ids[2], ids[3], ids[5]] },
          { ...BASE, minTokens: 2, ban: [ids[2]], bias: [[ids[0], 1]] }, // already sampled 2: no ban
          { ...BASE, temperature: 1, seed: 5 }, // untouched copy
        ];
        const rand = seededRandom(3);
        const counts = new Uint32Array(settings.length * vocab).map(() => {
          const x = rand();
          return x < 0.1 ? 0x80000000 : x < 0.2 ? 1 + Math.floor(rand() * 4) : x < 0.25 ? 0x80000002 : 0;
        });
        const before = counts.slice();
        const steps = [0, 3, 2, 0];
        const got = await run(gpu, { vocab, rowSlots: [0, 1, 2, 3], settings, steps, counts, chunkStep: 0 });
        settings.forEach((st, slot) => {
          const raw = got.logits.subarray(slot * vocab, (slot + 1) * vocab);
          const counts = before.subarray(slot * vocab, (slot + 1) * vocab);
          const want = processRef(raw, st, { counts, sampled: steps[slot], mask: new Uint32Array(0) });
          const proc = got.proc.subarray(slot * vocab, (slot + 1) * vocab);
          for (let i = 0; i < vocab; i++) {
            const ok = want[i] === -Infinity ? proc[i] === -Infinity : Math.abs(proc[i] - want[i]) <= 1e-5;
            assert.ok(ok, `slot ${slot} token ${i}: got ${proc[i]}, want ${want[i]}`);
          }
          const argmax = want.reduce((m, x, i) => (x > want[m] ? i : m), 0);
          if (st.temperature === 0) {
            assert.equal(got.tokens[slot], argmax, `slot ${slot} greedy on processed logits`);
          }
        });
      },
    );
  }
  // 5,000 ids: 157 mask words, the last holding 8 ids (its other 24 bits are set and must not matter), and
  // three process workgroups; the allowed ids include both sides of each workgroup edge.
  await t.step(
    "a token mask sends clear ids to −inf after the penalties; unmasked slots ignore theirs",
    async () => {
      const vocab = 5000;
      const words = maskWords(vocab);
      const edges = [0, 2047, 2048, 4095, 4096, 4991, 4992, 4999];
      const rowSlots = [2, 0, 4, 1, 3];
      const rows = rowSlots.map((_, r) => zipfLogits(vocab, 7 * r + 1));
      const rowOf = (slot: number) => rows[rowSlots.indexOf(slot)];
      const rand = seededRandom(17);
      const masks = new Uint32Array(5 * words);
      const setBit = (slot: number, id: number, on: boolean) => {
        const w = slot * words + (id >>> 5);
        masks[w] = on ? masks[w] | (1 << (id & 31)) : masks[w] & ~(1 << (id & 31));
      };
      for (const slot of [0, 1, 3]) {
        for (let id = 0; id < vocab; id++) setBit(slot, id, rand() < 0.1);
        for (const id of edges) setBit(slot, id, true);
        for (let id = vocab; id < words * 32; id++) setBit(slot, id, true);
        setBit(slot, argmax(rowOf(slot)), false); // the unmasked argmax is masked
      }
      setBit(4, 4999, true); // slot 4 allows one id; slot 2's row stays clear, as it is not masked
      for (let id = vocab; id < words * 32; id++) setBit(4, id, true);
      const hot = argmax(rowOf(1));
      const settings: SlotSettings[] = [
        { ...BASE, masked: true },
        // a masked id biased to the top stays −inf; the allowed edges get penalties and a bias
        { ...BASE, masked: true, temperature: 1, seed: 21, presence: 0.5, bias: [[hot, 100], [2048, 3]] },
        { ...BASE, presence: 0.5, frequency: 0.25, repetition: 1.3, bias: [[7, 2]] },
        { ...BASE, masked: true, temperature: 0.8, topK: 5, seed: 22, minTokens: 3, ban: [2047] },
        { ...BASE, masked: true },
      ];
      const counts = new Uint32Array(settings.length * vocab).map(() => {
        const x = rand();
        return x < 0.1 ? 0x80000000 : x < 0.2 ? 1 + Math.floor(rand() * 4) : 0;
      });
      for (let round = 0; round < 6; round++) {
        const steps = settings.map((_, slot) => 5 * round + slot);
        const got = await run(gpu, {
          vocab,
          rowSlots,
          settings,
          steps,
          counts,
          chunkStep: 0,
          logits: (r) => rows[r],
          masks,
        });
        rowSlots.forEach((slot, r) => {
          const st = settings[slot];
          const raw = got.logits.subarray(r * vocab, (r + 1) * vocab);
          const mask = masks.subarray(slot * words, (slot + 1) * words);
          const want = processRef(raw, st, {
            counts: counts.subarray(slot * vocab, (slot + 1) * vocab),
            sampled: steps[slot],
            mask,
          });
          const proc = got.proc.subarray(r * vocab, (r + 1) * vocab);
          // Slots 0 and 4 only mask: their kept logits are the raw ones, bit for bit.
          const tol = slot === 0 || slot === 4 ? 0 : 1e-5;
          for (let i = 0; i < vocab; i++) {
            const ok = want[i] === -Infinity ? proc[i] === -Infinity : Math.abs(proc[i] - want[i]) <= tol;
            assert.ok(ok, `slot ${slot} token ${i}: got ${proc[i]}, want ${want[i]}`);
          }
          const tok = got.tokens[slot];
          if (st.masked) assert.ok(allowed(mask, tok), `slot ${slot} picked masked id ${tok}`);
          if (st.temperature === 0) {
            assert.equal(tok, argmax(want), `slot ${slot}: greedy over the allowed ids`);
          } else {assert.equal(
              tok,
              sampleRef(proc, st, steps[slot]),
              `slot ${slot}: draw on the masked row`,
            );}
        });
        assert.notEqual(got.tokens[0], argmax(rowOf(0)), "the mask moved slot 0's greedy pick");
        assert.equal(got.tokens[4], 4999, "slot 4 allows only 4999");
        assert.equal(
          got.tokens[2],
          argmax(processRef(rowOf(2), settings[2], {
            counts: counts.subarray(2 * vocab, 3 * vocab),
            sampled: steps[2],
            mask: new Uint32Array(0),
          })),
        );
      }
      const packed = new Uint32Array(packSlotParams({ ...BASE, masked: true }, { maxBias: 0, maxBan: 0 }));
      assert.deepEqual([packed[13], packed[14]], [1, 1], "a masked slot processes; word 14 is `masked`");
      assert.equal(new Uint32Array(packSlotParams(BASE, { maxBias: 0, maxBan: 0 }))[14], 0);
    },
  );
  await t.step("logprobs of the pick and the top alternatives match a CPU log-softmax", async () => {
    const vocab = 777;
    const settings: SlotSettings[] = [
      { ...BASE, logprobs: true, nTop: 20 },
      { ...BASE, temperature: 1, seed: 9, logprobs: true, nTop: 0, presence: 2 },
      { ...BASE, logprobs: true, nTop: 3, bias: [[5, 50]] },
    ];
    const counts = new Uint32Array(settings.length * vocab).fill(1);
    const got = await run(gpu, {
      vocab,
      rowSlots: [2, 0, 1],
      settings,
      steps: [0, 0, 0],
      counts,
      chunkStep: 1,
    });
    [2, 0, 1].forEach((slot, r) => {
      const lp = logSoftmaxRef(got.logits.subarray(r * vocab, (r + 1) * vocab));
      const rec = got.records.subarray(slot * LOGPROB_RECORD_WORDS, (slot + 1) * LOGPROB_RECORD_WORDS);
      const f = new Float32Array(rec.buffer, rec.byteOffset, rec.length);
      const tok = got.tokens[slot];
      assert.ok(Math.abs(f[0] - lp[tok]) <= 1e-5, `slot ${slot}: logprob ${f[0]} vs ${lp[tok]}`);
      assert.equal(rec[1], settings[slot].nTop);
      const raw = got.logits.subarray(r * vocab, (r + 1) * vocab);
      const rank = raw.filter((v) => v >= raw[tok]).length;
      assert.equal(rec[LOGPROB_RANK_WORD], rank, `slot ${slot}: rank`);
      const order = Array.from(lp.keys()).sort((a, b) => lp[b] - lp[a] || a - b);
      for (let k = 0; k < settings[slot].nTop; k++) {
        assert.equal(rec[2 + 2 * k], order[k], `slot ${slot} top ${k} id`);
        assert.ok(Math.abs(f[3 + 2 * k] - lp[order[k]]) <= 1e-5, `slot ${slot} top ${k} logprob`);
      }
    });
    assert.equal(got.tokens[2], 5, "the bias moved the greedy pick, the logprobs stay the model's");
  });
  // logprobs.ts draws each chunk's best (2,048 ids: 8 per invocation), then the row's best from the chunks'.
  const tieCases: [string, number, (i: number) => number][] = [
    // every 256th id ties at the top: 8 per chunk, all in one invocation's registers, over four chunks
    ["ties across chunks", 8000, (i) => i >= 7900 ? -Infinity : i % 256 === 0 ? 0 : -1 - ((i * 7919) % 4)],
    // the 25 best in one chunk (ids 4,100–4,124, tied in pairs), so all 20 come from its candidates
    [
      "one chunk holds the best",
      10000,
      (i) => i >= 4100 && i < 4125 ? 5 - Math.floor((i - 4100) / 2) : i < 50 ? -Infinity : -((i * 7919) % 7),
    ],
  ];
  for (const [name, vocab, level] of tieCases) {
    await t.step(`logprobs: ${name}, lower id first on ties, −inf never listed`, async () => {
      const settings: SlotSettings[] = [{ ...BASE, logprobs: true, nTop: 20 }];
      const got = await run(gpu, {
        vocab,
        rowSlots: [0],
        settings,
        steps: [0],
        counts: new Uint32Array(vocab),
        chunkStep: 1,
        logits: () => Float32Array.from({ length: vocab }, (_, i) => level(i)),
      });
      const lp = logSoftmaxRef(got.logits);
      const rec = got.records.subarray(0, LOGPROB_RECORD_WORDS);
      const f = new Float32Array(rec.buffer, rec.byteOffset, rec.length);
      const order = Array.from(lp.keys()).filter((i) => lp[i] > -Infinity).sort((a, b) =>
        lp[b] - lp[a] || a - b
      );
      for (let k = 0; k < 20; k++) {
        assert.equal(rec[2 + 2 * k], order[k], `top ${k} id`);
        assert.ok(
          Math.abs(f[3 + 2 * k] - lp[order[k]]) <= 1e-5,
          `top ${k} logprob ${f[3 + 2 * k]} vs ${lp[order[k]]}`,
        );
      }
      assert.ok(Math.abs(f[0] - lp[got.tokens[0]]) <= 1e-5, "the pick's logprob");
      // ties count against the pick: its rank is every id at its level or above
      const raw = got.logits;
      assert.equal(
        rec[LOGPROB_RANK_WORD],
        raw.filter((v) => v >= raw[got.tokens[0]]).length,
        "the pick's rank",
      );
    });
  }
  gpu.device.destroy();
});
