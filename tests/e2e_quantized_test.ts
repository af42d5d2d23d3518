/**
 * Serving quantized models end to end: a folder written by `deno task quantize` served through the fused
 * kernels answers like the same folder dequantized to dense weights, and `--quantize` at startup reports
 * progress on /health, serves, and caches its artifact for the next start.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { sharedPath, testGpu, withGpuFixtures } from "./_gpu.ts";
import { loadModel } from "../inference/engine/load_model.ts";
import { createSequenceRunner } from "../inference/engine/generate.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function deno(args: string[]): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { DENO_WEBGPU_BACKEND: "vulkan" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Starts main.ts; resolves once /health is 200, collecting every /health detail seen on the way. */
async function startServer(args: string[]) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "--port", String(port), ...args],
    env: { DENO_WEBGPU_BACKEND: "vulkan" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errors = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const base = `http://127.0.0.1:${port}`;
  const details: string[] = [];
  const deadline = Date.now() + 300_000;
  for (;;) {
    const res = await fetch(`${base}/health`).catch(() => null);
    if (res?.status === 200) {
      await res.body?.cancel();
      break;
    }
    if (res) details.push((await res.json()).detail ?? "");
    if (Date.now() > deadline) throw new Error("server did not become ready");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base,
    details,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await errors.cancel();
    },
  };
}

async function complete(base: string, prompt: string, maxTokens: number) {
  const res = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).choices[0];
}

// Affine (q8 decode GEMV, merged q/k/v and gate/up) and LUT (f32 GEMVs) folders, both with the RMSNorm and
// SiLU·mul fused into their decode kernels.
const SERVED = [
  {
    name: "aff4",
    args: ["--method", "leanquant-aff", "--bits", "4", "--group-size", "32", "--aff-t", "256"],
  },
  { name: "nu4", args: ["--method", "leanquant-nu", "--bits", "4"] },
];

Deno.test("a quantized folder serves through the fused kernels like its dequantized weights", (t) =>
  withGpuFixtures({
    model: "models/stories260K",
    calib: "data/calib/tinystories_calib_second_half.txt",
  }, async (gpu, { model, calib }, tmp) => {
    for (const { name, args } of SERVED) {
      await t.step(name, async () => {
        const out = join(tmp, name);
        await deno([
          "run",
          "-A",
          "cli/quantize.ts",
          ...["--model", model, ...args],
          ...["--calib", calib, "--nsamples", "4", "--seqlen", "128", "--out", out],
        ]);
        // The quantizer's own view: the same folder dequantized to dense f32 weights, greedy in process.
        const dense = await loadModel(gpu, out, { weightType: "f32", fused: false });
        const prompt = "Once upon a time";
        const ids = dense.tokenizer.encode(prompt, { addSpecialTokens: true });
        const want: number[] = [];
        const sampling = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
        const runner = createSequenceRunner(gpu, dense.config, dense.weights);
        for await (const chunk of runner.run(ids, { maxNewTokens: 24, sampling })) want.push(...chunk);
        // Exact f32 decode activations must reproduce it token for token; the default int8 (q8) decode
        // activations of affine weights do too on this model and prompt (their relative error is ~1e-3 per
        // GEMV output); LUT weights always decode in f32.
        for (const activations of name === "aff4" ? ["f32", "q8"] : ["q8"]) {
          const server = await startServer(["--model", out, "--decode-activations", activations]);
          try {
            const choice = await complete(server.base, prompt, 24);
            assert.equal(
              choice.text,
              dense.tokenizer.decode(want, { skipSpecialTokens: true }),
              `${name} --decode-activations ${activations}`,
            );
            assert.equal(choice.finish_reason, "length");
          } finally {
            await server.stop();
          }
        }
      });
    }
  }));

Deno.test("--quantize at startup reports progress on /health, then serves", async () => {
  const model = sharedPath("models/stories260K");
  if (!model || !(await testGpu().then((g) => (g?.device.destroy(), g !== null)))) return;
  const artifacts = await Deno.makeTempDir();
  const server = await startServer([
    "--artifacts-dir",
    artifacts,
    "--model",
    model,
    "--quantize",
    "rtn",
    "--bits",
    "4",
    "--group-size",
    "32",
  ]);
  try {
    assert.ok(server.details.some((d) => d.startsWith("quantizing")), `details seen: ${server.details}`);
    const choice = await complete(server.base, "Once upon a time", 8);
    assert.ok(choice.text.length > 0);
    const models = await (await fetch(`${server.base}/v1/models`)).json();
    assert.equal(models.data[0].id, "stories260K");
    assert.deepEqual(models.data[0].quantization, { method: "rtn", bits: 4, group_size: 32, ppl: null });
  } finally {
    await server.stop();
  }
  // The second start finds the artifact the first one cached and serves it without quantizing.
  const again = await startServer([
    "--artifacts-dir",
    artifacts,
    "--model",
    model,
    "--quantize",
    "rtn",
    "--group-size",
    "32",
  ]);
  try {
    assert.ok(!again.details.some((d) => d.startsWith("quantizing")), `details seen: ${again.details}`);
    assert.equal((await Array.fromAsync(Deno.readDir(artifacts))).length, 1);
  } finally {
    await again.stop();
    await Deno.remove(artifacts, { recursive: true });
  }
});
