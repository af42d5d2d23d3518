import assert from "node:assert/strict";
import { join } from "node:path";
import { fromFloat32, halfBitsToF32Bits, toFloat32 } from "./float_codec.ts";
import { openSafetensors, writeSafetensors } from "./safetensors.ts";
import { openSafetensorsModel } from "./checkpoint.ts";
import { randomF32, seededRandom, sharedPath } from "../../tests/_gpu.ts";

/** Runs `fn` with a fresh temp dir, removed afterwards. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a file from a raw header object and data bytes, bypassing the writer's checks. */
async function writeRaw(path: string, header: unknown, data: Uint8Array, headerText?: string): Promise<void> {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  await Deno.writeFile(path, out);
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

Deno.test("writeSafetensors() round-trips through openSafetensors()", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "a.safetensors");
    const w = randomF32(6 * 5, 1);
    const ids = new Int32Array([3, -1, 7]);
    const flags = new Uint8Array([1, 2, 3, 4, 5]);
    await writeSafetensors(path, [
      { name: "w", dtype: "F32", shape: [6, 5], data: bytesOf(w) },
      { name: "flags", dtype: "U8", shape: [5], data: flags },
      { name: "ids", dtype: "I32", shape: [3], data: bytesOf(ids) },
      { name: "empty", dtype: "BF16", shape: [0, 4], data: new Uint8Array(0) },
    ], { format: "pt", note: "x" });
    const raw = await Deno.readFile(path);
    const headerLen = Number(new DataView(raw.buffer).getBigUint64(0, true));
    assert.equal((8 + headerLen) % 8, 0, "data section must start 8-byte aligned");
    using st = await openSafetensors(path);
    assert.deepEqual(st.metadata, { format: "pt", note: "x" });
    assert.deepEqual([...st.tensors.keys()], ["w", "flags", "ids", "empty"]);
    assert.deepEqual(st.entry("w").shape, [6, 5]);
    assert.deepEqual(toFloat32(await st.readTensor("w"), "F32"), w);
    assert.deepEqual(await st.readTensor("flags"), flags);
    assert.deepEqual(new Int32Array((await st.readTensor("ids")).buffer), ids);
    assert.equal((await st.readTensor("empty")).length, 0);
    await assert.rejects(
      () => st.readTensor("nope"),
      /Cannot load tensor "nope" from ".*a\.safetensors": not found/,
    );
  });
});

Deno.test("openSafetensors() reads every stories260K tensor lazily and concurrently", async () => {
  const path = sharedPath("models/stories260K/model.safetensors");
  if (!path) return;
  // Independent decode: read the whole (small) file and slice by the header.
  const whole = await Deno.readFile(path);
  const n = Number(new DataView(whole.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(whole.subarray(8, 8 + n)));
  using st = await openSafetensors(path);
  assert.equal(st.tensors.size, Object.keys(header).length - 1);
  const names = [...st.tensors.keys()];
  const got = await Promise.all(names.map((name) => st.readTensor(name)));
  names.forEach((name, k) => {
    const [a, b] = header[name].data_offsets;
    assert.deepEqual(got[k], whole.subarray(8 + n + a, 8 + n + b), name);
    assert.deepEqual(st.entry(name).shape, header[name].shape);
  });
});

Deno.test("openSafetensors() rejects corrupt files with the tensor and file named", async (t) => {
  await withTempDir(async (dir) => {
    const good = join(dir, "good.safetensors");
    await writeSafetensors(good, [
      { name: "a", dtype: "F32", shape: [4], data: new Uint8Array(16) },
      { name: "model.layers.0.mlp.up_proj.weight", dtype: "F16", shape: [8, 8], data: new Uint8Array(128) },
    ]);
    const bytes = await Deno.readFile(good);
    const p = join(dir, "bad.safetensors");
    const cases: [string, () => Promise<void>, RegExp][] = [
      [
        "truncated file",
        () => Deno.writeFile(p, bytes.subarray(0, bytes.length - 10)),
        /Cannot load tensor "model\.layers\.0\.mlp\.up_proj\.weight" from ".*bad\.safetensors": data_offsets \[16, 144\] exceed the file size/,
      ],
      [
        "too small for a header",
        () => Deno.writeFile(p, bytes.subarray(0, 5)),
        /Cannot open safetensors file ".*bad\.safetensors": only 5 bytes/,
      ],
      ["header length beyond file size", async () => {
        const b = bytes.slice();
        new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
        await Deno.writeFile(p, b);
      }, /".*bad\.safetensors": header length 1099511627776 does not fit the file size/],
      ["bad JSON header", async () => {
        const b = bytes.slice();
        b[8] = 0x7b + 1; // '{' → '|'
        await Deno.writeFile(p, b);
      }, /Cannot open safetensors file ".*bad\.safetensors": header is not valid JSON/],
      ["header not an object", () => writeRaw(p, [1, 2], new Uint8Array(0)), /header is not a JSON object/],
      [
        "offsets out of range",
        () => writeRaw(p, { x: { dtype: "U8", shape: [100], data_offsets: [0, 100] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": data_offsets \[0, 100\] exceed the file size \d+ \(data section is 16 bytes\)/,
      ],
      [
        "reversed offsets",
        () => writeRaw(p, { x: { dtype: "U8", shape: [0], data_offsets: [8, 4] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": data_offsets \[8,4\] are not a range/,
      ],
      [
        "wrong shape for the bytes",
        () => writeRaw(p, { x: { dtype: "F32", shape: [3, 3], data_offsets: [0, 16] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": data_offsets \[0, 16\] hold 16 bytes, but shape \[3, 3\] of F32 needs 36/,
      ],
      [
        "bad shape",
        () => writeRaw(p, { x: { dtype: "F32", shape: [-4], data_offsets: [0, 16] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": shape \[-4\] is not a list/,
      ],
      [
        "unknown dtype",
        () =>
          writeRaw(p, { x: { dtype: "F8_E4M3", shape: [16], data_offsets: [0, 16] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": unsupported dtype "F8_E4M3" \(expected one of F32, F16, BF16/,
      ],
      [
        "prototype key as dtype",
        () =>
          writeRaw(p, { x: { dtype: "toString", shape: [16], data_offsets: [0, 16] } }, new Uint8Array(16)),
        /Cannot load tensor "x" from ".*": unsupported dtype "toString"/,
      ],
      [
        "overlapping tensors",
        () =>
          writeRaw(p, {
            x: { dtype: "U8", shape: [8], data_offsets: [0, 8] },
            y: { dtype: "U8", shape: [8], data_offsets: [4, 12] },
          }, new Uint8Array(16)),
        /Cannot load tensor "y" from ".*": data_offsets overlap tensor "x"/,
      ],
      [
        "non-string metadata",
        () => writeRaw(p, { __metadata__: { n: 1 } }, new Uint8Array(0)),
        /__metadata__ value "n" is not a string/,
      ],
    ];
    for (const [what, make, message] of cases) {
      await t.step(what, async () => {
        await make();
        await assert.rejects(() => openSafetensors(p), message);
      });
    }
  });
});

Deno.test("writeSafetensors() rejects mismatched data and duplicate names", async () => {
  await withTempDir(async (dir) => {
    const p = join(dir, "w.safetensors");
    await assert.rejects(
      () => writeSafetensors(p, [{ name: "t", dtype: "BF16", shape: [2, 3], data: new Uint8Array(10) }]),
      /Cannot write tensor "t" to ".*": shape \[2, 3\] of BF16 needs 12 bytes, got 10/,
    );
    const t = { name: "t", dtype: "U8" as const, shape: [1], data: new Uint8Array(1) };
    await assert.rejects(
      () => writeSafetensors(p, [t, t]),
      /Cannot write tensor "t" to ".*": duplicate name/,
    );
  });
});

/** IEEE binary16 by the textbook formula, in f64. */
function halfReference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * (m / 1024) * Math.pow(2, -14);
  return sign * (1 + m / 1024) * Math.pow(2, e - 15);
}

/** bfloat16 by the textbook formula (8-bit exponent, 7-bit mantissa), in f64. */
function bf16Reference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 7) & 0xff;
  const m = h & 0x7f;
  if (e === 0xff) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * (m / 128) * Math.pow(2, -126);
  return sign * (1 + m / 128) * Math.pow(2, e - 127);
}

const ALL_HALVES = Uint16Array.from({ length: 65536 }, (_, i) => i);

Deno.test("toFloat32() decodes all 65536 F16 and BF16 values exactly", () => {
  const f16 = toFloat32(bytesOf(ALL_HALVES), "F16");
  const bf16 = toFloat32(bytesOf(ALL_HALVES), "BF16");
  const engine = new Float16Array(ALL_HALVES.buffer);
  for (let h = 0; h < 65536; h++) {
    assert.ok(
      Object.is(f16[h], halfReference(h)),
      `F16 0x${h.toString(16)}: ${f16[h]} vs ${halfReference(h)}`,
    );
    assert.ok(
      Object.is(f16[h], Number.isNaN(engine[h]) ? NaN : engine[h]),
      `F16 0x${h.toString(16)} vs engine`,
    );
    assert.ok(Object.is(bf16[h], bf16Reference(h)), `BF16 0x${h.toString(16)}: ${bf16[h]}`);
  }
  // NaN payloads and signs survive the widening.
  assert.equal(halfBitsToF32Bits(0x7e01), 0x7fc02000);
  assert.equal(halfBitsToF32Bits(0xfc00), 0xff800000);
  // Unaligned input (odd byteOffset) decodes the same.
  const shifted = new Uint8Array(9);
  shifted.set(bytesOf(new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff])), 1);
  assert.deepEqual([...toFloat32(shifted.subarray(1), "F16")], [1, -2, 2 ** -24, 65504]);
  assert.throws(() => toFloat32(new Uint8Array(4), "I32"), /Cannot convert I32 to f32/);
});

/** Nearest bf16 pattern to an f32 by value distance, ties to even; overflow rounds as to 2^128. */
function bf16RoundReference(x: number, bits: number): number {
  const lo = (bits >>> 16) & 0xffff;
  const hi = lo + 1;
  const mag = (h: number) => ((h & 0x7fff) === 0x7f80 ? 2 ** 128 : Math.abs(bf16Reference(h)));
  const dLo = Math.abs(Math.abs(x) - mag(lo));
  const dHi = Math.abs(mag(hi) - Math.abs(x));
  if (dLo !== dHi) return dLo < dHi ? lo : hi;
  return lo % 2 === 0 ? lo : hi;
}

Deno.test("fromFloat32() rounds to nearest even and round-trips every half value", () => {
  const rand = seededRandom(7);
  const bits = new Uint32Array(20000);
  for (let i = 0; i < bits.length; i++) bits[i] = Math.floor(rand() * 2 ** 32);
  // Exact ties, both parities, and the overflow edge.
  bits.set([0x3f808000, 0x3f818000, 0x3f80c000, 0x7f7f8000, 0x7f7fffff, 0xff7f8000, 0x00008000, 0x00018000]);
  const values = new Float32Array(bits.buffer);
  const out = new Uint16Array(fromFloat32(values, "BF16").buffer);
  for (let i = 0; i < bits.length; i++) {
    if (Number.isNaN(values[i])) {
      assert.ok(Number.isNaN(bf16Reference(out[i])), `NaN 0x${bits[i].toString(16)} must stay NaN`);
    } else {
      assert.equal(out[i], bf16RoundReference(values[i], bits[i]), `BF16 of 0x${bits[i].toString(16)}`);
    }
  }
  const finite = (dec: (h: number) => number) => ALL_HALVES.filter((h) => Number.isFinite(dec(h)));
  for (const [dtype, dec] of [["F16", halfReference], ["BF16", bf16Reference]] as const) {
    const keep = finite(dec);
    const back = fromFloat32(toFloat32(bytesOf(keep), dtype), dtype);
    assert.deepEqual(new Uint16Array(back.buffer), keep, `${dtype} round trip`);
  }
  const f16 = toFloat32(
    fromFloat32(new Float32Array([65520, 65519, 1 + 2 ** -11, 1 + 3 * 2 ** -11]), "F16"),
    "F16",
  );
  assert.deepEqual([...f16], [Infinity, 65504, 1, 1 + 2 ** -9]);
});

Deno.test("openSafetensorsModel() rejects bad shard indexes and empty folders", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      () => openSafetensorsModel(dir),
      /Cannot find weights in ".*": expected model\.safetensors/,
    );
    const index = join(dir, "model.safetensors.index.json");
    await writeSafetensors(join(dir, "s1.safetensors"), [{
      name: "a",
      dtype: "U8",
      shape: [1],
      data: new Uint8Array(1),
    }]);
    await Deno.writeTextFile(
      index,
      JSON.stringify({ weight_map: { a: "s1.safetensors", b: "s1.safetensors" } }),
    );
    await assert.rejects(
      () => openSafetensorsModel(dir),
      /Cannot load tensor "b" from ".*s1\.safetensors": model\.safetensors\.index\.json lists it there/,
    );
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: { a: "../s1.safetensors" } }));
    await assert.rejects(
      () => openSafetensorsModel(dir),
      /weight_map\["a"\] is not a file name in the folder/,
    );
    await Deno.writeTextFile(index, "{");
    await assert.rejects(() => openSafetensorsModel(dir), /Cannot read shard index ".*index\.json"/);
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: { a: "s1.safetensors" } }));
    const model = await openSafetensorsModel(dir);
    assert.deepEqual(await model.readTensor("a"), new Uint8Array(1));
    await assert.rejects(
      () => model.readTensor("zz"),
      /Cannot load tensor "zz" from ".*": not in the checkpoint/,
    );
    model.close();
  });
});
