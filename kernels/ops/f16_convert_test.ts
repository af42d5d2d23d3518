import assert from "node:assert/strict";
import { createF16Convert } from "./f16_convert.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, readU32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";

/** The f16 value nearest to x (ties to even), in f64: the spec of the rounding. */
function halfRef(x: number): number {
  if (Number.isNaN(x) || x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14); // subnormals share the 2^-14 binade's spacing
  const ulp = 2 ** (e - 10);
  const q = a / ulp;
  let r = Math.floor(q);
  if (q - r > 0.5 || (q - r === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return Math.sign(x) * (v > 65504 ? Infinity : v);
}

/** Values that exercise every branch: ties, the subnormal range, overflow, signed zero, NaN. */
const EDGES = [
  0,
  -0,
  1,
  -1,
  1 + 2 ** -11,
  1 + 3 * 2 ** -11,
  1 + 2 ** -11 + 2 ** -20,
  2 - 2 ** -12,
  65504,
  65519.996,
  65520,
  -65520,
  1e6,
  Infinity,
  -Infinity,
  NaN,
  2 ** -14,
  2 ** -14 - 2 ** -25,
  2 ** -24,
  2 ** -25,
  3 * 2 ** -25,
  2 ** -26,
  -5 * 2 ** -25,
  1e-40,
  6.1e-5,
  1234.5678,
  -0.1,
];

Deno.test("f16Convert() rounds like the f64 reference and converts back exactly", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const toF16 = createF16Convert(gpu, { to: "f16" });
  const toF32 = createF16Convert(gpu, { to: "f32" });
  await checkPipelines(gpu);
  const cases: [string, Float32Array][] = [
    ["edge values", Float32Array.from(EDGES)],
    ...[1, 7, 63, 64, 65, 4097].map((n): [string, Float32Array] => [`n = ${n}`, randomF32(n, n, 8)]),
    ["large magnitudes", randomF32(1001, 5, 70000)],
    ["subnormal magnitudes", randomF32(1000, 6, 2 ** -14)],
  ];
  for (const [name, x] of cases) {
    await t.step(name, async () => {
      const n = x.length;
      const pairs = Math.ceil(n / 2);
      const src = uploadStorage(gpu, x, "x");
      const halves = createStorage(gpu, pairs * 4, "halves");
      const back = createStorage(gpu, n * 4, "back");
      const pack = toF16.bind({ src, dst: halves, n });
      const unpack = toF32.bind({ src: halves, dst: back, n });
      runPass(gpu, (pass) => {
        pack.encode(pass);
        unpack.encode(pass);
      });
      const want = Array.from(x, halfRef);
      const words = await readU32(gpu, halves, pairs);
      const bits = new Uint16Array(words.buffer);
      const hostBits = new Uint16Array(new Float16Array(x).buffer);
      for (let i = 0; i < n; i++) {
        if (!Number.isNaN(x[i])) assert.equal(bits[i], hostBits[i], `bits of ${x[i]} (value ${i})`);
      }
      if (n % 2 === 1) assert.equal(bits[n], 0, "an odd count leaves the last high half zero");
      const got = await readF32(gpu, back, n);
      for (let i = 0; i < n; i++) {
        assert.ok(Object.is(got[i], want[i]), `value ${i}: ${x[i]} → ${got[i]}, expected ${want[i]}`);
      }
      [src, halves, back].forEach((b) => b.destroy());
      pack.destroy();
      unpack.destroy();
    });
  }
  await t.step("rejects buffers too small for n", () => {
    const small = createStorage(gpu, 16, "small");
    assert.throws(() => toF16.bind({ src: small, dst: small, n: 5 }), /Cannot convert 5 values to f16/);
    assert.throws(() => toF32.bind({ src: small, dst: small, n: 9 }), /Cannot convert 9 values to f32/);
  });
  gpu.device.destroy();
});
