import assert from "node:assert/strict";
import { addBatch, createHessian, prepareLayer } from "./reference_hessian.ts";
import { gptqReference, layerOutputError } from "./reference.ts";
import { correlatedInputs, dequantMismatch, gaussian, hessianOf } from "./_reference_cases.ts";
import { sharedPath } from "../../tests/_gpu.ts";
import { maxAbsDiff } from "../../tests/_assert.ts";

Deno.test("addBatch() keeps add_batch's running mean over sequences, or over tokens", () => {
  const perSeq = createHessian(2);
  const perTok = createHessian(2, { perToken: true });
  for (const X of [[1, 2, 3, 4], [1, 0]]) { // (tokens, cols): 2 tokens, then 1
    addBatch(perSeq, X);
    addBatch(perTok, X);
  }
  // Σ x xᵀ = [[11, 14], [14, 20]]; (2/N_seq)·Σ with N_seq = 2, (2/N_tok)·Σ with N_tok = 3.
  assert.deepEqual(Array.from(perSeq.H), [11, 14, 14, 20]);
  assert.equal(perSeq.nsamples, 2);
  assert.ok(maxAbsDiff(perTok.H, [22 / 3, 28 / 3, 28 / 3, 40 / 3]) < 1e-14);
  assert.equal(perTok.nsamples, 3);
});

Deno.test("prepareLayer() fixes dead columns, permutes by act-order and damps by the mean diagonal", () => {
  const rows = 2, cols = 4;
  // diag(H) = [3, 0, 5, 3]: column 1 is dead; act-order is 2, 0, 3 (tie kept in index order), 1.
  const H = [3, 0, 1, 0, 0, 0, 0, 0, 1, 0, 5, 1, 0, 0, 1, 3];
  const W = [1, 2, 3, 4, 5, 6, 7, 8];
  const prep = prepareLayer(W, H, { actOrder: true, percdamp: 0.5 });
  assert.deepEqual(Array.from(prep.dead), [0, 1, 0, 0]);
  assert.deepEqual(Array.from(prep.perm), [2, 0, 3, 1]);
  assert.deepEqual(Array.from(prep.invperm), [1, 3, 0, 2]);
  assert.deepEqual(Array.from(prep.W), [3, 1, 4, 0, 7, 5, 8, 0]);
  // λ = 0.5 · mean([3, 1, 5, 3]) = 1.5, after the dead fix sets H_11 = 1.
  assert.equal(prep.dampUsed, 1.5);
  assert.deepEqual(Array.from(prep.H), [6.5, 1, 1, 0, 1, 4.5, 0, 0, 1, 0, 4.5, 0, 0, 0, 0, 2.5]);
  assert.deepEqual([prep.rows, prep.cols], [rows, cols]);
  assert.throws(() => prepareLayer([1, 2, 3], H), /Cannot quantize/);
});

Deno.test("gptqReference() retries an indefinite H with more damping and reports it", () => {
  const rows = 4, cols = 16;
  // Rank-deficient H (8 tokens for 16 channels) minus 2% of its mean diagonal.
  const X = correlatedInputs(cols, 8, 61);
  const H = hessianOf(X, cols);
  let mean = 0;
  for (let i = 0; i < cols; i++) mean += H[i * cols + i] / cols;
  for (let i = 0; i < cols; i++) H[i * cols + i] -= 0.02 * mean;
  const messages: string[] = [];
  const res = gptqReference(gaussian(rows * cols, 62), H, {
    bits: 4,
    grid: "gptq",
    percdamp: 0.01,
    onRetry: (m) => messages.push(m),
  });
  assert.equal(messages.length, 1);
  assert.ok(Math.abs(res.percdampUsed - 0.1) < 1e-15);
  assert.ok(Math.abs(res.dampUsed - 0.1 * 0.98 * mean) < 1e-12 * mean);
  assert.ok(res.Q.every(Number.isFinite));
});

/** Reads F32 tensors straight from a safetensors file (inference/safetensors.ts is not ours to import). */
function readF32Tensors(
  path: string,
  names: string[],
): Record<string, { shape: number[]; data: Float32Array }> {
  const bytes = Deno.readFileSync(path);
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const name of names) {
    const { dtype, shape, data_offsets: [begin, end] } = header[name];
    assert.equal(dtype, "F32", name);
    // slice() copies, so the Float32Array view is 4-byte aligned whatever the header length.
    out[name] = {
      shape,
      data: new Float32Array(bytes.buffer.slice(8 + headerLen + begin, 8 + headerLen + end)),
    };
  }
  return out;
}

Deno.test("gptqReference() quantizes stories260K layer-0 down_proj (real weights, synthetic hidden states)", () => {
  const path = sharedPath("models/stories260K/model.safetensors");
  if (!path) return;
  const p = "model.layers.0.mlp.";
  const t = readF32Tensors(path, [`${p}down_proj.weight`, `${p}gate_proj.weight`, `${p}up_proj.weight`]);
  const [rows, cols] = t[`${p}down_proj.weight`].shape; // (64, 172)
  const dim = t[`${p}gate_proj.weight`].shape[1];
  assert.deepEqual([rows, cols, dim], [64, 172, 64]);
  // down_proj's input is silu(gate·x) ⊙ (up·x); x are random RMS-normed-like hidden states, 4 sequences × 64.
  const tokens = 256;
  const x = gaussian(dim * tokens, 91);
  const g = t[`${p}gate_proj.weight`].data, u = t[`${p}up_proj.weight`].data;
  const X = new Float64Array(cols * tokens); // (cols, tokens)
  for (let c = 0; c < cols; c++) {
    for (let s = 0; s < tokens; s++) {
      let a = 0, b = 0;
      for (let i = 0; i < dim; i++) {
        [a, b] = [a + g[c * dim + i] * x[i * tokens + s], b + u[c * dim + i] * x[i * tokens + s]];
      }
      X[c * tokens + s] = a / (1 + Math.exp(-a)) * b;
    }
  }
  // add_batch per 64-token sequence, in the (tokens, cols) layout a forward hook sees.
  const acc = createHessian(cols);
  for (let q = 0; q < 4; q++) {
    addBatch(
      acc,
      Float64Array.from(
        { length: 64 * cols },
        (_, m) => X[(m % cols) * tokens + q * 64 + Math.floor(m / cols)],
      ),
    );
  }
  const Htok = hessianOf(X, cols);
  assert.ok(maxAbsDiff(acc.H.map((v) => v / 64), Htok) < 1e-9 * Math.max(...Htok)); // (2/N_seq)Σ = 64·(2/N_tok)Σ
  const W = Float64Array.from(t[`${p}down_proj.weight`].data);
  const err: Record<string, number> = {};
  for (const grid of ["rtn", "gptq", "nu", "aff"] as const) {
    // 172 columns = one full 128-wide block plus a partial one; aff uses g = 32 groups inside the loop.
    const groupSize = grid === "aff" ? 32 : -1;
    const res = gptqReference(W, acc.H, {
      bits: 3,
      grid,
      groupSize,
      actOrder: true,
      percdamp: 0.1,
      affT: 128,
    });
    assert.equal(dequantMismatch(res, rows, cols, 3), null, grid);
    err[grid] = layerOutputError(W, res.Q, { X, cols });
  }
  for (const grid of ["gptq", "nu", "aff"]) {
    assert.ok(err[grid] < err.rtn, `${grid} ${err[grid]} ≥ rtn ${err.rtn}`);
  }
  console.log(`[quant] stories260K down_proj 3-bit output error: ${JSON.stringify(err)}`);
});
