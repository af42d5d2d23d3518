import assert from "node:assert/strict";
import { parseQuantizeArgs } from "./quantize.ts";

const base = ["--model", "m", "--method", "gptq", "--calib", "c.txt", "--out", "o"];

Deno.test("parseQuantizeArgs() applies the shared defaults", () => {
  const a = parseQuantizeArgs(base);
  assert.equal(a.model, "m");
  assert.equal(a.out, "o");
  assert.equal(a.quantizer, "gpu");
  assert.deepEqual(a.request.calibration, {
    source: { kind: "file", path: "c.txt" },
    nsamples: 128,
    seqlen: null,
    seed: 0,
    storage: "auto",
  });
  assert.deepEqual(a.request.quantize, {
    method: "gptq",
    bits: 4,
    groupSize: 128,
    actOrder: true,
    percdamp: 0.01,
    blockSize: 128,
    exponent: 4,
    affT: 2048,
    lmHeadBits: 0,
  });
  assert.equal(a.request.eval, null);
  assert.equal(a.calibGpuMemory, 1.75 * 2 ** 30, "--calib-gpu-memory: 8B under 6 GB");
});

Deno.test("parseQuantizeArgs() reads every option", () => {
  const a = parseQuantizeArgs([
    ...base,
    ...["--method", "leanquant-aff", "--bits", "3", "--group-size", "64", "--nsamples", "16"],
    ...["--seqlen", "512", "--seed", "7", "--percdamp", "0.1", "--no-act-order", "--aff-t", "256"],
    ...["--exponent", "3", "--quantize-lm-head", "8", "--calib-storage", "f16", "--calib-gpu-memory", "4GiB"],
  ]);
  assert.equal(a.calibGpuMemory, 4 * 2 ** 30);
  assert.equal(parseQuantizeArgs([...base, "--calib-gpu-memory", "all"]).calibGpuMemory, Infinity);
  assert.deepEqual(a.request.calibration, {
    source: { kind: "file", path: "c.txt" },
    nsamples: 16,
    seqlen: 512,
    seed: 7,
    storage: "f16",
  });
  assert.deepEqual(
    { ...a.request.quantize },
    {
      method: "leanquant-aff",
      bits: 3,
      groupSize: 64,
      actOrder: false,
      percdamp: 0.1,
      blockSize: 128,
      exponent: 3,
      affT: 256,
      lmHeadBits: 8,
    },
  );
});

Deno.test("parseQuantizeArgs() defaults to the built-in calibration, and rtn to none", () => {
  const lq = parseQuantizeArgs(["--model", "m", "--method", "leanquant-nu", "--out", "o"]);
  assert.deepEqual(lq.request.calibration.source, { kind: "dataset", name: "builtin" });
  assert.equal(lq.request.quantize.groupSize, 0);
  const rtn = parseQuantizeArgs(["--model", "m", "--method", "rtn", "--out", "o"]);
  assert.equal(rtn.request.calibration.source, null);
  assert.equal(rtn.request.quantize.actOrder, false);
});

Deno.test("parseQuantizeArgs() rejects missing and bad values, naming the flag", () => {
  assert.throws(() => parseQuantizeArgs(base.slice(2)), /Missing --model/);
  assert.throws(() => parseQuantizeArgs(base.slice(0, 6)), /Missing --out/);
  assert.throws(() => parseQuantizeArgs(["--model", "m", "--out", "o"]), /Missing --method: expected one of/);
  assert.throws(() => parseQuantizeArgs([...base, "--method", "awq"]), /Cannot use --method "awq"/);
  assert.throws(() => parseQuantizeArgs([...base, "--bits", "8"]), /Cannot use --bits "8"/);
  assert.throws(() => parseQuantizeArgs([...base, "--nsamples", "0"]), /Cannot use --nsamples "0"/);
  assert.throws(() => parseQuantizeArgs([...base, "--percdamp=-1"]), /Cannot use --percdamp "-1"/);
  assert.throws(() => parseQuantizeArgs([...base, "--group-size", "1.5"]), /Cannot use --group-size "1.5"/);
  assert.throws(() => parseQuantizeArgs([...base, "--group-size", "48"]), /a multiple of 32/);
  assert.throws(
    () => parseQuantizeArgs([...base, "--method", "rtn"]),
    /Cannot use --calib with --method rtn/,
  );
  assert.throws(
    () => parseQuantizeArgs([...base, "--calib-dataset", "builtin"]),
    /Cannot use --calib-dataset with --calib: give one source/,
  );
  assert.throws(() => parseQuantizeArgs([...base, "--bogus"]), /bogus/);
  assert.throws(
    () => parseQuantizeArgs([...base, "--quantize-lm-head", "3"]),
    /Cannot use --quantize-lm-head "3": expected one of 0, 4, 6, 8/,
  );
  assert.throws(
    () => parseQuantizeArgs([...base, "--calib-storage", "bf16"]),
    /Cannot use --calib-storage "bf16": expected one of auto, f32, f16/,
  );
  assert.throws(
    () => parseQuantizeArgs([...base, "--calib-gpu-memory", "much"]),
    /Cannot use --calib-gpu-memory "much": expected "all" or a size/,
  );
});

Deno.test("parseQuantizeArgs() accepts --quantizer exact only for LeanQuant row-wise grids", () => {
  assert.equal(
    parseQuantizeArgs([...base, "--method", "leanquant-nu", "--quantizer", "exact"]).quantizer,
    "exact",
  );
  assert.throws(() => parseQuantizeArgs([...base, "--method", "gptq", "--quantizer", "exact"]));
  assert.throws(() => parseQuantizeArgs([...base, "--quantizer", "fast"]), /--quantizer "fast"/);
});
