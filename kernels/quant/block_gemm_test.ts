import assert from "node:assert/strict";
import { type BlockGemmArgs, createBlockGemm, type StridedOperand } from "./block_gemm.ts";
import { checkPipelines } from "../core/gpu.ts";
import { readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, testGpu } from "../../tests/_gpu.ts";
import { assertNmse } from "../../tests/_assert.ts";

type HostOp = Omit<StridedOperand, "buffer"> & { data: "a" | "b" | "c" };
interface Case {
  name: string;
  sizes: { a: number; b: number; c: number };
  gemm: Omit<BlockGemmArgs, "a" | "b" | "c"> & { a: HostOp; b: HostOp; c: HostOp };
}

/** The GEMM on host copies in f64, reading every operand before writing (aliases see old values). */
function gemmRef(
  bufs: Record<string, Float32Array>,
  g: Case["gemm"],
  tile: number,
): Record<string, Float64Array> {
  const out: Record<string, Float64Array> = {};
  for (const [k, v] of Object.entries(bufs)) out[k] = Float64Array.from(v);
  const at = (o: HostOp, z: number, i: number, j: number) =>
    o.offset + z * (o.batchStride ?? 0) + i * o.s0 + j * o.s1;
  for (let z = 0; z < (g.batch ?? 1); z++) {
    for (let m = 0; m < g.M; m++) {
      for (let n = 0; n < g.N; n++) {
        if (g.lowerTiles && Math.floor(n / tile) > Math.floor(m / tile)) continue;
        let s = 0;
        for (let k = 0; k < g.K; k++) {
          if ((g.aLower && k > m) || (g.bLower && k < n)) continue;
          s += bufs[g.a.data][at(g.a, z, m, k)] * bufs[g.b.data][at(g.b, z, k, n)];
        }
        const i = at(g.c, z, m, n);
        out[g.c.data][i] = (g.alpha ?? 1) * s + (g.beta ?? 0) * bufs[g.c.data][i];
      }
    }
  }
  return out;
}

const CASES: Case[] = [
  {
    name: "row-major 65×70×33, alpha and beta",
    sizes: { a: 65 * 33, b: 33 * 70, c: 65 * 70 },
    gemm: {
      M: 65,
      N: 70,
      K: 33,
      alpha: 1.5,
      beta: 0.5,
      a: { data: "a", offset: 0, s0: 33, s1: 1 },
      b: { data: "b", offset: 0, s0: 70, s1: 1 },
      c: { data: "c", offset: 0, s0: 70, s1: 1 },
    },
  },
  {
    name: "transposed strides, offsets, 3 batches",
    sizes: { a: 3 * 40 * 20 + 5, b: 3 * 20 * 7 + 3, c: 3 * 40 * 7 + 9 },
    gemm: {
      M: 40,
      N: 7,
      K: 20,
      batch: 3,
      a: { data: "a", offset: 5, s0: 1, s1: 40, batchStride: 800 },
      b: { data: "b", offset: 3, s0: 1, s1: 20, batchStride: 140 },
      c: { data: "c", offset: 9, s0: 1, s1: 40, batchStride: 280 },
    },
  },
  {
    name: "aLower and bLower mask garbage, 130×129×131",
    sizes: { a: 130 * 131, b: 131 * 129, c: 130 * 129 },
    gemm: {
      M: 130,
      N: 129,
      K: 131,
      aLower: true,
      bLower: true,
      alpha: -1,
      a: { data: "a", offset: 0, s0: 131, s1: 1 },
      b: { data: "b", offset: 0, s0: 129, s1: 1 },
      c: { data: "c", offset: 0, s0: 129, s1: 1 },
    },
  },
  {
    name: "lowerTiles SYRK on a sub-block leaves upper tiles alone",
    sizes: { a: 150 * 150, b: 1, c: 1 },
    gemm: {
      M: 140,
      N: 140,
      K: 10,
      lowerTiles: true,
      alpha: -1,
      beta: 1,
      a: { data: "a", offset: 10 * 150, s0: 150, s1: 1 },
      b: { data: "a", offset: 10 * 150, s0: 1, s1: 150 },
      c: { data: "a", offset: 10 * 151, s0: 150, s1: 1 },
    },
  },
  {
    name: "in place: C aliases A with N ≤ 64 (a panel solve)",
    sizes: { a: 200 * 48, b: 48 * 48, c: 1 },
    gemm: {
      M: 190,
      N: 48,
      K: 48,
      a: { data: "a", offset: 10 * 48, s0: 48, s1: 1 },
      b: { data: "b", offset: 0, s0: 1, s1: 48 },
      c: { data: "a", offset: 10 * 48, s0: 48, s1: 1 },
    },
  },
];

Deno.test("blockGemm() matches an f64 strided GEMM, with masks, batches and aliasing", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createBlockGemm(gpu);
  await checkPipelines(gpu);
  for (const [ci, { name, sizes, gemm }] of CASES.entries()) {
    for (const tile of [64, 128] as const) {
      await t.step(`${name}, ${tile}-tiles`, async () => {
        const host: Record<string, Float32Array> = {
          a: randomF32(sizes.a, 100 + ci),
          b: randomF32(sizes.b, 200 + ci),
          c: randomF32(sizes.c, 300 + ci),
        };
        const dev = Object.fromEntries(Object.entries(host).map(([k, v]) => [k, uploadStorage(gpu, v, k)]));
        const op = (o: HostOp): StridedOperand => ({ ...o, buffer: dev[o.data] });
        const bound = kernel.bind({ ...gemm, tile, a: op(gemm.a), b: op(gemm.b), c: op(gemm.c) });
        runPass(gpu, (pass) => bound.encode(pass));
        bound.destroy();
        const want = gemmRef(host, gemm, tile);
        const target = gemm.c.data;
        const got = await readF32(gpu, dev[target], sizes[target]);
        assertNmse(got, want[target], 1e-12, name);
        // Untouched elements keep their bits: masked tiles and everything outside C.
        let changed = 0;
        for (let i = 0; i < got.length; i++) if (want[target][i] !== host[target][i]) changed++;
        let kept = 0;
        for (let i = 0; i < got.length; i++) {
          if (want[target][i] === host[target][i] && got[i] === host[target][i]) kept++;
        }
        assert.equal(kept, got.length - changed, `${name}: elements outside C changed`);
      });
    }
  }
  gpu.device.destroy();
});
