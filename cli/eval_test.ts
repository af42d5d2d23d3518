import assert from "node:assert/strict";
import { parseEvalArgs } from "./eval.ts";

Deno.test("parseEvalArgs() reads the options and defaults", () => {
  assert.deepEqual(parseEvalArgs(["--model", "m", "--text", "t.txt"]), {
    model: "m",
    text: "t.txt",
    ctx: null,
    maxWindows: null,
    kernels: "runner",
    decodeActivations: "q8",
    json: false,
  });
  assert.deepEqual(
    parseEvalArgs([
      ...["--model", "m", "--text", "t", "--ctx", "256", "--max-windows", "8", "--json"],
      ...["--kernels", "engine", "--decode-activations", "f32"],
    ]),
    {
      model: "m",
      text: "t",
      ctx: 256,
      maxWindows: 8,
      kernels: "engine",
      decodeActivations: "f32",
      json: true,
    },
  );
});

Deno.test("parseEvalArgs() rejects missing and bad values", () => {
  assert.throws(() => parseEvalArgs(["--text", "t"]), /Missing --model/);
  assert.throws(() => parseEvalArgs(["--model", "m"]), /Missing --text/);
  assert.throws(() => parseEvalArgs(["--model", "m", "--text", "t", "--ctx", "1"]), /Invalid --ctx "1"/);
  assert.throws(
    () => parseEvalArgs(["--model", "m", "--text", "t", "--max-windows", "x"]),
    /Invalid --max-windows "x"/,
  );
  assert.throws(
    () => parseEvalArgs(["--model", "m", "--text", "t", "--kernels", "gpu"]),
    /Invalid --kernels "gpu": expected runner or engine/,
  );
  assert.throws(
    () => parseEvalArgs(["--model", "m", "--text", "t", "--decode-activations", "int4"]),
    /Invalid --decode-activations "int4"/,
  );
});
