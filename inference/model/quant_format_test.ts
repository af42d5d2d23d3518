import assert from "node:assert/strict";
import { join } from "node:path";
import {
  dequantizeLinear,
  linearTensors,
  LUT_FORMAT,
  parseQuantization,
  quantizationConfig,
  readQuantizedLinear,
} from "./quant_format.ts";
import { openSafetensorsModel } from "../formats/checkpoint.ts";
import { writeSafetensors } from "../formats/safetensors.ts";
import type { QuantizedLinear } from "../../quant/types.ts";
import { seededRandom } from "../../tests/_gpu.ts";

const f16 = (x: number) => new Float16Array([x])[0];

/** A random affine linear: codes, f16-exact scales, zeros covering 0 and maxq, an act-order g_idx. */
function affineCase(
  rows: number,
  cols: number,
  bits: number,
  groupSize: number,
  seed: number,
): QuantizedLinear {
  const rand = seededRandom(seed);
  const K = 2 ** bits;
  const groups = groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
  const perm = Array.from({ length: cols }, (_, c) => c).sort(() => rand() - 0.5); // perm[k]: k-th column
  const gIdx = new Int32Array(cols);
  perm.forEach((c, k) => gIdx[c] = groupSize > 0 ? Math.floor(k / groupSize) : 0);
  const zero = Float32Array.from(
    { length: rows * groups },
    (_, i) => (i < 3 ? [0, K - 1, 1][i] : Math.floor(rand() * K)),
  );
  return {
    rows,
    cols,
    bits,
    method: "gptq",
    codes: Uint8Array.from({ length: rows * cols }, () => Math.floor(rand() * K)),
    scale: Float32Array.from({ length: rows * groups }, () => f16(0.001 + rand() * 0.05)),
    zero,
    gIdx,
    loss: 1.5,
    dampUsed: 0.25,
  };
}

function lutCase(rows: number, cols: number, bits: number, seed: number): QuantizedLinear {
  const rand = seededRandom(seed);
  const K = 2 ** bits;
  return {
    rows,
    cols,
    bits,
    method: "leanquant-nu",
    codes: Uint8Array.from({ length: rows * cols }, () => Math.floor(rand() * K)),
    lut: Float32Array.from({ length: rows * K }, () => f16(rand() - 0.5)),
    loss: 0.5,
    dampUsed: 0.125,
  };
}

/** Writes the linears as one safetensors file (with the loss metadata) and reads them back. */
async function roundTrip(cases: [string, QuantizedLinear][]) {
  const dir = await Deno.makeTempDir();
  try {
    const tensors = cases.flatMap(([prefix, q]) => linearTensors(prefix, q).tensors);
    const losses = Object.fromEntries(cases.map(([p, q]) => [p, { loss: q.loss, dampUsed: q.dampUsed }]));
    await writeSafetensors(join(dir, "model.safetensors"), tensors, {
      "leanserve.losses": JSON.stringify(losses),
    });
    const st = await openSafetensorsModel(dir);
    try {
      const out = [];
      for (const [prefix, q] of cases) {
        const parsed = parseQuantization(
          quantizationConfig({
            method: q.method,
            bits: q.bits,
            groupSize: 0,
            actOrder: true,
            percdamp: 0.01,
          }),
        )!;
        out.push(await readQuantizedLinear(st, prefix, parsed, { rows: q.rows, cols: q.cols }));
      }
      return { out, st: [...st.tensors.values()].map((t) => t.entry) };
    } finally {
      st.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("affine linears round-trip through AutoGPTQ tensors (3-bit groups with g_idx, 4-bit row-wise)", async () => {
  const a = affineCase(64, 172, 3, 32, 1);
  const b = affineCase(40, 96, 4, 0, 2);
  const { out, st } = await roundTrip([["m.a", a], ["m.b", b]]);
  for (const [got, want] of [[out[0], a], [out[1], b]]) {
    assert.deepEqual(got, want);
    assert.deepEqual(dequantizeLinear(got), dequantizeLinear(want));
  }
  const shapes = Object.fromEntries(st.map((e) => [e.name, [e.dtype, ...e.shape]]));
  assert.deepEqual(shapes["m.a.qweight"], ["I32", Math.ceil((172 * 3) / 32), 64]);
  assert.deepEqual(shapes["m.a.qzeros"], ["I32", 6, 6]);
  assert.deepEqual(shapes["m.a.scales"], ["F16", 6, 64]);
  assert.deepEqual(shapes["m.a.g_idx"], ["I32", 172]);
  assert.deepEqual(shapes["m.b.qweight"], ["I32", 12, 40]);
  assert.deepEqual(shapes["m.b.qzeros"], ["I32", 1, 5]);
});

Deno.test("LUT linears round-trip through lut + qcodes tensors", async () => {
  const q = lutCase(20, 172, 3, 3);
  const { out, st } = await roundTrip([["m.nu", q]]);
  assert.deepEqual(out[0], q);
  const shapes = Object.fromEntries(st.map((e) => [e.name, [e.dtype, ...e.shape]]));
  assert.deepEqual(shapes["m.nu.lut"], ["F16", 20, 8]);
  assert.deepEqual(shapes["m.nu.qcodes"], ["I32", 20, 17]);
  const W = dequantizeLinear(out[0]);
  assert.equal(W[172 + 5], q.lut![8 + q.codes[172 + 5]], "w[r, c] = lut[r, code[r, c]]");
});

Deno.test("scales are stored as f16 and dequantization uses the stored value", async () => {
  const q = affineCase(8, 64, 4, 0, 4);
  q.scale = Float32Array.from(q.scale!, (s) => s + 1e-7); // not f16-representable
  const { out } = await roundTrip([["m", q]]);
  assert.deepEqual(out[0].scale, Float32Array.from(q.scale, f16));
  const W = dequantizeLinear(out[0]);
  assert.equal(W[3], f16(q.scale[0]) * (q.codes[3] - q.zero![0]));
});

Deno.test("readQuantizedLinear() names the tensor and shape it cannot use", async () => {
  const q = affineCase(8, 64, 4, 0, 5);
  const dir = await Deno.makeTempDir();
  await writeSafetensors(join(dir, "model.safetensors"), linearTensors("m", q).tensors);
  const st = await openSafetensorsModel(dir);
  const parsed = parseQuantization({ quant_method: "gptq", bits: 4 })!;
  await assert.rejects(
    readQuantizedLinear(st, "m", parsed, { rows: 8, cols: 32 }),
    /"m.qweight".*expected I32 \[4,8\], got I32 \[8,8\]/,
  );
  await assert.rejects(readQuantizedLinear(st, "x", parsed, { rows: 8, cols: 64 }), /"x.scales".*missing/);
  const read = await readQuantizedLinear(st, "m", parsed, { rows: 8, cols: 64 });
  assert.ok(Number.isNaN(read.loss), "no metadata: loss is NaN");
  st.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("quantizationConfig() and parseQuantization() agree on every method", () => {
  for (const method of ["rtn", "gptq", "leanquant-aff", "leanquant-nu"] as const) {
    const qc = quantizationConfig({ method, bits: 3, groupSize: 128, actOrder: true, percdamp: 0.01 });
    assert.deepEqual(parseQuantization(qc), {
      format: method === "leanquant-nu" ? LUT_FORMAT : "autogptq",
      bits: 3,
      method,
      zerosMinusOne: method !== "leanquant-nu",
      lmHead: null,
    });
    if (method !== "leanquant-nu") {
      assert.equal(qc.quant_method, "gptq");
      assert.equal(qc.group_size, 128);
      assert.equal(qc.sym, false);
      assert.equal(qc.desc_act, true);
    } else {
      assert.equal(qc.format_version, 1);
    }
  }
  const rowwise = quantizationConfig({
    method: "gptq",
    bits: 4,
    groupSize: 0,
    actOrder: false,
    percdamp: 0.1,
  });
  assert.equal(rowwise.group_size, -1);
  assert.equal(parseQuantization(null), null);
  assert.deepEqual(
    parseQuantization({ quant_method: "gptq", bits: 4, checkpoint_format: "gptq_v2" })?.zerosMinusOne,
    false,
  );
  assert.throws(() => parseQuantization({ quant_method: "awq", bits: 4 }), /quant_method "awq"/);
  assert.throws(() => parseQuantization({ quant_method: "gptq", bits: 5 }), /bits 5/);
  assert.throws(
    () => parseQuantization({ quant_method: LUT_FORMAT, bits: 4, format_version: 2 }),
    /version 2/,
  );
});

Deno.test("a quantized LM head round-trips through quantization_config and bad heads are refused", () => {
  const lmHead = { bits: 8, groupSize: 128, method: "gptq" } as const;
  const qc = quantizationConfig({
    method: "leanquant-nu",
    bits: 3,
    groupSize: 0,
    actOrder: true,
    percdamp: 0.01,
    lmHead,
  });
  assert.deepEqual((qc.leanserve as Record<string, unknown>).lm_head, {
    bits: 8,
    group_size: 128,
    method: "gptq",
    format: "autogptq",
  });
  assert.deepEqual(parseQuantization(qc)?.lmHead, lmHead);
  assert.throws(
    () => parseQuantization({ ...qc, leanserve: { lm_head: { bits: 5, group_size: 128 } } }),
    /lm_head.bits 5 is not 4, 6 or 8/,
  );
});
