/**
 * main.ts's operations wiring in a real process: keys from LEANSERVE_API_KEY, the request log on stdout,
 * and SIGTERM during a stream (the stream finishes within the grace, the process exits 0).
 */
import assert from "node:assert/strict";
import { IN_CI, sharedPath, testGpu } from "./_gpu.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

Deno.test("main.ts: keys from the environment, one log line per request, SIGTERM mid-stream exits 0", async () => {
  const model = sharedPath("models/stories260K");
  if (!model) return;
  const gpu = await testGpu();
  gpu?.device.destroy();
  if (!gpu) {
    if (IN_CI) throw new Error("CI needs a WebGPU adapter");
    return;
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--model", model, "--port", String(port), "--shutdown-grace-seconds", "30"],
    env: {
      DENO_WEBGPU_BACKEND: "vulkan",
      XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
      LEANSERVE_API_KEY: "k-one,k-two",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const stderr = new Response(child.stderr).text();
  const base = `http://127.0.0.1:${port}`;
  try {
    const deadline = Date.now() + 120_000;
    while (
      (await fetch(`${base}/health`).then((r) => r.body?.cancel().then(() => r.status), () => 0)) !== 200
    ) {
      if (Date.now() > deadline) throw new Error("server did not become ready");
      await new Promise((r) => setTimeout(r, 200));
    }
    const unauthorized = await fetch(`${base}/v1/models`);
    await unauthorized.body?.cancel();
    assert.equal(unauthorized.status, 401);
    const res = await fetch(`${base}/v1/completions`, {
      method: "POST",
      headers: { authorization: "Bearer k-two", "x-request-id": "e2e-stream" },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 100, temperature: 0, stream: true }),
    });
    assert.equal(res.status, 200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = (await reader.read()).value ?? "";
    child.kill("SIGTERM");
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += value;
    }
    assert.ok(text.trimEnd().endsWith("data: [DONE]"), text.slice(-300));
  } finally {
    try {
      child.kill("SIGTERM"); // stops a server that never got the first one; harmless when it is exiting
    } catch {
      // already exited
    }
  }
  const status = await child.status;
  const out = await stdout;
  assert.equal(status.code, 0, `${out}\n${await stderr}`);
  const logged = out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const line = logged.find((l) => l.id === "e2e-stream");
  assert.equal(line?.status, 200);
  assert.equal(line?.route, "/v1/completions");
  assert.ok(line.completion_tokens > 0 && line.prompt_tokens === 5);
  assert.ok(logged.some((l) => l.route === "/v1/models" && l.status === 401));
  assert.match(out, /\[leanserve\] stopped/);
});
