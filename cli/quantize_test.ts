import assert from "node:assert/strict";
import { parseQuantizeArgs } from "./quantize.ts";

const base = ["--model", "m", "--method", "gptq", "--bits", "4", "--calib", "c.txt", "--out", "o"];

Deno.test("parseQuantizeArgs() applies the reference defaults", () => {
  const a = parseQuantizeArgs(base);
  assert.equal(a.model, "m");
  assert.equal(a.calib, "c.txt");
  assert.equal(a.out, "o");
  assert.equal(a.nsamples, 128);
  assert.equal(a.seqLen, null);
  assert.equal(a.seed, 0);
  assert.equal(a.hiddenStorage, "auto");
  assert.deepEqual(a.quantize, {
    method: "gptq",
    bits: 4,
    groupSize: 0,
    actOrder: true,
    percdamp: 0.01,
    blockSize: 128,
    exponent: 4,
    affT: 2048,
    lmHeadBits: 0,
  });
  // Without --calib: the built-in text, or nothing for rtn without act-order.
  assert.equal(
    parseQuantizeArgs(["--model", "m", "--method", "gptq", "--bits", "4", "--out", "o"]).calib,
    "builtin",
  );
  assert.equal(
    parseQuantizeArgs(["--model", "m", "--method", "rtn", "--bits", "4", "--no-act-order", "--out", "o"])
      .calib,
    null,
  );
});

Deno.test("parseQuantizeArgs() reads every option", () => {
  const a = parseQuantizeArgs([
    ...base,
    "--method",
    "leanquant-aff",
    "--bits",
    "3",
    "--group-size",
    "128",
    "--nsamples",
    "16",
    "--seqlen",
    "512",
    "--seed",
    "7",
    "--percdamp",
    "0.1",
    "--no-act-order",
    "--aff-t",
    "256",
    "--exponent",
    "3",
    "--quantize-lm-head",
    "8",
    "--calib-storage",
    "f16",
  ]);
  assert.equal(a.hiddenStorage, "f16");
  assert.equal(a.nsamples, 16);
  assert.equal(a.seqLen, 512);
  assert.equal(a.seed, 7);
  assert.deepEqual(
    { ...a.quantize },
    {
      method: "leanquant-aff",
      bits: 3,
      groupSize: 128,
      actOrder: false,
      percdamp: 0.1,
      blockSize: 128,
      exponent: 3,
      affT: 256,
      lmHeadBits: 8,
    },
  );
});

Deno.test("parseQuantizeArgs() rejects missing and bad values, naming the flag", () => {
  assert.throws(() => parseQuantizeArgs(base.slice(2)), /Missing --model/);
  assert.throws(() => parseQuantizeArgs(base.slice(0, 8)), /Missing --out/);
  assert.throws(() => parseQuantizeArgs([...base, "--method", "awq"]), /Invalid --method "awq"/);
  assert.throws(() => parseQuantizeArgs([...base, "--bits", "8"]), /Invalid --bits "8"/);
  assert.throws(() => parseQuantizeArgs([...base, "--nsamples", "0"]), /Invalid --nsamples "0"/);
  assert.throws(() => parseQuantizeArgs([...base, "--percdamp=-1"]), /Invalid --percdamp "-1"/);
  assert.throws(() => parseQuantizeArgs([...base, "--group-size", "1.5"]), /Invalid --group-size "1.5"/);
  assert.throws(() => parseQuantizeArgs([...base, "--bogus"]), /bogus/);
  assert.throws(
    () => parseQuantizeArgs([...base, "--quantize-lm-head", "3"]),
    /Invalid --quantize-lm-head "3"/,
  );
  assert.throws(
    () => parseQuantizeArgs([...base, "--calib-storage", "bf16"]),
    /Invalid --calib-storage "bf16"/,
  );
});

Deno.test("parseQuantizeArgs() accepts --quantizer exact only for LeanQuant row-wise grids", () => {
  assert.equal(
    parseQuantizeArgs([...base, "--method", "leanquant-nu", "--quantizer", "exact"]).quantizer,
    "exact",
  );
  assert.throws(() => parseQuantizeArgs([...base, "--method", "gptq", "--quantizer", "exact"]));
  assert.throws(() => parseQuantizeArgs([...base, "--quantizer", "fast"]), /Invalid --quantizer "fast"/);
});
