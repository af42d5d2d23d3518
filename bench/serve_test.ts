import assert from "node:assert/strict";
import { parseServeArgs, runServeBench } from "./serve.ts";
import { percentile, summarize, toMarkdown } from "./serve_stats.ts";
import { sharedPath, testGpu } from "../tests/_gpu.ts";
import { createEngine, loadModel } from "../inference/engine/mod.ts";
import { createApp } from "../server/app.ts";

Deno.test("serve stats: nearest-rank percentiles, tokens/s and the long prompt's window", () => {
  assert.equal(percentile([5, 1, 3, 2, 4], 50), 3);
  assert.equal(percentile([5, 1, 3, 2, 4], 99), 5);
  assert.ok(Number.isNaN(percentile([], 50)));
  const t = (start: number, ttft: number, at: number[]) => ({
    start,
    ttft,
    gaps: at.map((a) => ({ at: a, ms: 10 })),
    tokens: at.length + 1,
    end: at.at(-1) ?? start,
  });
  const long = t(100, 50, []);
  const s = summarize("m", 2, [t(0, 20, [30, 40, 120]), t(0, 25, [130, 200])], 2000, long);
  assert.equal(s.outputTokens, 7);
  assert.equal(s.outputTokensPerSecond, 3.5);
  assert.equal(s.longPrompt?.gaps, 2, "gaps at 120 and 130 fall in [100, 150]");
  assert.match(toMarkdown([s]), /\| m \| 2 \| 2 \| 3\.5 \|/);
});

Deno.test("bench:serve runs in process on a tiny random model for every format", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  gpu.device.destroy();
  const o = parseServeArgs([
    "--random",
    "tiny",
    "--prompt",
    "12",
    "--output",
    "6",
    "--concurrency",
    "1,2",
    "--requests",
    "2",
  ]);
  const rows = await runServeBench(o, () => {});
  assert.equal(rows.length, 6);
  for (const r of rows) {
    assert.equal(r.outputTokens, 12, `${r.label}: 2 requests × 6 tokens`);
    assert.ok(r.outputTokensPerSecond > 0 && r.ttftMs.p50 > 0 && r.itlMs.p99 >= r.itlMs.p50);
    assert.equal(r.cachedPromptTokens, 0, "no request repeats a prompt, the warm-up's included");
  }
});

Deno.test("bench:serve --shared-prefix: the prefix cache serves the shared start's full blocks", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  gpu.device.destroy();
  const args = [
    "--random",
    "tiny",
    "--formats",
    "dense",
    "--prompt",
    "40",
    "--output",
    "2",
    "--requests",
    "3",
  ];
  const [on] = await runServeBench(parseServeArgs([...args, "--shared-prefix", "33"]), () => {});
  assert.equal(on.cachedPromptTokens, 3 * 32, "two blocks of 16 per request (the warm-up cached them)");
  const [off] = await runServeBench(
    parseServeArgs([...args, "--shared-prefix", "33", "--no-prefix-caching"]),
    () => {},
  );
  assert.equal(off.cachedPromptTokens, 0);
});

Deno.test("bench:serve --server: tokens and cached prompt ids over HTTP, from the stream and its usage", async () => {
  const dir = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!gpu || !dir) return;
  const engine = createEngine("stories260K", { log: () => {} });
  await engine.setModel(await loadModel(gpu, dir, { weightType: "f32" }));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    createApp({ engine, config: {} }).fetch,
  );
  try {
    const url = `http://127.0.0.1:${server.addr.port}`;
    const args = [
      "--server",
      url,
      "--prompt",
      "48",
      "--output",
      "4",
      "--requests",
      "2",
      "--concurrency",
      "1",
    ];
    const [shared] = await runServeBench(parseServeArgs([...args, "--shared-prefix", "40"]), () => {});
    assert.equal(shared.outputTokens, 8, "2 requests × 4, from the usage chunk");
    assert.ok(shared.cachedPromptTokens >= 2 * 32, `${shared.cachedPromptTokens} prompt ids cached`);
    const [apart] = await runServeBench(parseServeArgs(args), () => {});
    assert.equal(apart.cachedPromptTokens, 0);
  } finally {
    await server.shutdown();
    gpu.device.destroy();
  }
});
