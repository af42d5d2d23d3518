import assert from "node:assert/strict";
import { matrixAccess, partHolding, rowsPerPartFor } from "./matrix_parts.ts";

/** wgpu's cap on one binding (kernels/core/gpu.ts). */
const H100 = { maxBindingBytes: 2147483644 };

Deno.test("rowsPerPartFor() keeps a fitting matrix whole and splits a larger one in two, 128-row aligned", () => {
  assert.equal(rowsPerPartFor(H100, 14336, 14336), 14336, "Llama-3-8B down_proj: one binding");
  assert.equal(rowsPerPartFor(H100, 23170, 23170), 23170, "the largest square matrix in one binding");
  // Llama-3-70B down_proj: 18,724 rows fit one binding; 18,688 = 146·128 go first, 9,984 follow.
  const first = rowsPerPartFor(H100, 28672, 28672);
  assert.equal(first, 18688);
  assert.ok(first * 28672 * 4 <= H100.maxBindingBytes && (28672 - first) * 28672 * 4 <= H100.maxBindingBytes);
  assert.equal(rowsPerPartFor(H100, 32767, 32767), 16384, "32,767 columns still fit two bindings");
  assert.throws(() => rowsPerPartFor(H100, 32768, 32768), /more than two bindings.*at most 32767 columns/);
  // Below 128 rows per binding the split is 4-row aligned (the tests' lowered limits).
  assert.equal(rowsPerPartFor({ maxBindingBytes: 80000 }, 200, 200), 100);
});

Deno.test("matrixAccess() leaves the unsplit spelling alone and routes the split one by global index", () => {
  const plain = matrixAccess("H", null);
  assert.deepEqual([plain.wgsl, plain.ld("i + 1u"), plain.st("i", "v")], ["", "H[i + 1u]", "H[i] = v"]);
  const split = matrixAccess("H", { binding: 5, access: "read_write" });
  assert.equal(split.ld("i"), "ld_H(i)");
  assert.equal(split.st("i", "v"), "st_H(i, v)");
  assert.match(split.wgsl, /override H_SPLIT: u32;/);
  assert.match(split.wgsl, /@binding\(5\) var<storage, read_write> H_1: array<f32>;/);
  assert.match(split.wgsl, /return H_1\[i - H_SPLIT\];/);
  const readOnly = matrixAccess("U", { binding: 3, access: "read" });
  assert.doesNotMatch(readOnly.wgsl, /fn st_U/, "no store into a read-only binding");
});

Deno.test("partHolding() rebases a range inside one part and refuses one across the split", () => {
  const [p0, p1] = [{ label: "part 0" } as GPUBuffer, { label: "part 1" } as GPUBuffer];
  const m = { parts: [p0, p1], rows: 10, cols: 4, rowsPerPart: 6 }; // split at element 24
  assert.equal(partHolding(m, 0, 23)?.buffer, p0);
  assert.deepEqual(partHolding(m, 24, 39), { buffer: p1, first: 0 });
  assert.deepEqual(partHolding(m, 30, 31), { buffer: p1, first: 6 });
  assert.equal(partHolding(m, 20, 27), null, "rows 5 and 6 straddle the split");
});
