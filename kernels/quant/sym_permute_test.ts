import assert from "node:assert/strict";
import { createSymPermute } from "./sym_permute.ts";
import { checkPipelines } from "../core/gpu.ts";
import { createStorage, readF32, runPass, uploadStorage } from "../core/buffers.ts";
import { randomF32, seededRandom, testGpu } from "../../tests/_gpu.ts";
import { argsortDesc, permuteSymmetric } from "../../quant/reference/reference_linalg.ts";

/** A seeded random permutation of 0..n−1 (Fisher–Yates). */
function shuffle(n: number, seed: number): Int32Array {
  const rand = seededRandom(seed);
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

Deno.test("symPermute() gathers H[perm][:, perm] with reversal, dead fix, damping and masking", async (t) => {
  const gpu = await testGpu();
  if (!gpu) return;
  const kernel = createSymPermute(gpu);
  await checkPipelines(gpu);
  for (const n of [1, 7, 65, 130]) {
    await t.step(`n = ${n}`, async () => {
      const H = randomF32(n * n, n); // not symmetric: a transposed gather would show
      for (let i = 0; i < n; i += 3) H[i * n + i] = 0; // dead diagonal entries
      const perm = shuffle(n, 9 + n);
      const src = uploadStorage(gpu, H, "H");
      const permBuf = uploadStorage(gpu, perm, "perm");
      const dst = createStorage(gpu, n * n * 4, "dst");
      const run = async (args: Omit<Parameters<typeof kernel.bind>[0], "src" | "dst" | "n">) => {
        const bound = kernel.bind({ src, dst, n, ...args });
        runPass(gpu, (pass) => bound.encode(pass));
        bound.destroy();
        return await readF32(gpu, dst, n * n);
      };
      // Plain act-order gather equals the reference's permuteSymmetric bit for bit.
      assert.deepEqual(Array.from(await run({ perm: permBuf })), Array.from(permuteSymmetric(H, perm)));
      // Everything at once, against the formula in the module comment.
      const damp = 0.25;
      const got = await run({ perm: permBuf, reverse: true, fixDead: true, damp, upperOnly: false });
      const upper = await run({ reverse: true, upperOnly: true });
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let v = H[perm[n - 1 - i] * n + perm[n - 1 - j]];
          if (i === j) v = Math.fround((v === 0 ? 1 : v) + damp);
          assert.equal(got[i * n + j], v, `reverse+fix (${i}, ${j})`);
          const u = j >= i ? H[(n - 1 - i) * n + (n - 1 - j)] : 0;
          assert.equal(upper[i * n + j], u, `upperOnly (${i}, ${j})`);
        }
      }
    });
  }
  await t.step("identity perm with argsortDesc ties kept in index order", async () => {
    const n = 4;
    const H = new Float32Array([2, 0, 0, 0, 0, 5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
    const perm = argsortDesc([2, 5, 2, 1]); // the dead column's 0 becomes 1 before sorting
    assert.deepEqual(Array.from(perm), [1, 0, 2, 3]);
    const dst = createStorage(gpu, n * n * 4, "dst");
    const bound = kernel.bind({
      src: uploadStorage(gpu, H, "H"),
      dst,
      n,
      perm: uploadStorage(gpu, perm, "perm"),
      fixDead: true,
    });
    runPass(gpu, (pass) => bound.encode(pass));
    bound.destroy();
    const diag = await readF32(gpu, dst, n * n);
    assert.deepEqual([0, 5, 10, 15].map((i) => diag[i]), [5, 2, 2, 1]);
  });
  gpu.device.destroy();
});
