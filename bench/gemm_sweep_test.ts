import assert from "node:assert/strict";
import { testGpu } from "../tests/_gpu.ts";

// The laboratory's builds must compute what they time: every stand-alone variant checks 64 outputs against
// f64 sums and prints "WRONG" past 1e-5 of Σ|a·b|, or "failed" when its pipeline does not build.
const VARIANTS = [
  "t128x128k16r8x8",
  "t128x128k16r8x8-u-n",
  "t128x128k16r8x8-arm4-brm4-u-p",
  "t128x128k16r8x8-akm-bkm-u",
  "t128x128k16r8x8-u-h-g-e-o",
  "t64x128k16r8x8-arm4-brm4-u",
  "corex",
  "core",
  "core-h-p",
];

Deno.test("bench/gemm_sweep.ts: every build it times computes C = A·Bᵀ", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  gpu.device.destroy();
  const args = ["run", "-A", new URL("./gemm_sweep.ts", import.meta.url).pathname];
  args.push("--m", "128", "--n", "128", "--k", "64", "--reps", "1", "--variants", VARIANTS.join(","));
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  for (const v of VARIANTS) {
    const line = text.split("\n").find((l) => l.startsWith(`${v} `));
    assert.ok(line, `no line for ${v}:\n${text}`);
    assert.match(line, /TFLOP\/s/, line);
    assert.doesNotMatch(line, /WRONG|failed/, line);
  }
});
