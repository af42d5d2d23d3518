/**
 * End to end: the real server serves `--model <repo id>` through the Hugging Face cache, downloaded from the
 * loopback fake hub (tests/_fake_hub.ts) or laid out as Python tools leave it (offline), and answers exactly
 * as it does from the local folder. Never reaches the internet.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { IN_CI, sharedPath, testGpu } from "./_gpu.ts";
import { startFakeHub, writePythonStyleCache } from "./_fake_hub.ts";
import { runServerToExit, type ServerChild, startServer } from "./_server.ts";

const FILES = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
];
const REQUEST = { prompt: "Once upon a time, there was a", temperature: 0, max_tokens: 24 };

async function complete(server: ServerChild): Promise<string> {
  const res = await fetch(`${server.base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(REQUEST),
  });
  assert.equal(res.status, 200);
  return (await res.json()).choices[0].text;
}

async function serveOnce(
  args: string[],
  env: Record<string, string>,
): Promise<{ text: string; logs: string }> {
  const server = await startServer(args, env);
  try {
    return { text: await complete(server), logs: server.logs() };
  } finally {
    await server.stop();
  }
}

Deno.test("server serves a repo id from the hub cache exactly as the local folder", async (t) => {
  const model = sharedPath("models/stories260K");
  if (!model || !(await gpuAvailable())) return;
  const hub = startFakeHub();
  const tmp = await Deno.makeTempDir({ prefix: "leanserve-hub-e2e-" });
  // HF_HOME under tmp, so neither the user's cache nor a token of theirs is involved.
  const env = { HF_ENDPOINT: hub.endpoint, HF_HOME: join(tmp, "hf"), HF_TOKEN: "", HF_HUB_OFFLINE: "0" };
  try {
    const local = await serveOnce(["--model", model], env);
    assert.ok(local.text.length > 0);
    assert.equal(hub.requests.length, 0, "a local folder asks the hub nothing");

    await t.step(
      "--model shared/stories260K downloads through the fake hub and answers the same",
      async () => {
        const served = await serveOnce(["--model", "shared/stories260K"], env);
        assert.equal(served.text, local.text);
        const commit = hub.repo("shared/stories260K")!.commit;
        assert.match(served.logs, new RegExp(`shared/stories260K is commit ${commit}`));
        const snapshot = join(tmp, "hf", "hub", "models--shared--stories260K", "snapshots", commit);
        assert.deepEqual([...Deno.readDirSync(snapshot)].map((e) => e.name).sort(), FILES);
      },
    );

    await t.step("HF_HUB_OFFLINE=1 serves a cache laid out by Python tools, with no request", async () => {
      const home = join(tmp, "python-hf");
      const files = Object.fromEntries(FILES.map((f) => [f, Deno.readFileSync(join(model, f))]));
      await writePythonStyleCache(join(home, "hub"), "org/stories", "b".repeat(40), files);
      const before = hub.requests.length;
      const served = await serveOnce(["--model", "org/stories"], {
        ...env,
        HF_HOME: home,
        HF_HUB_OFFLINE: "1",
      });
      assert.equal(served.text, local.text);
      assert.equal(hub.requests.length, before);
    });

    await t.step("offline with nothing cached exits 1 with one line naming the cache", async () => {
      const { code, output } = await runServerToExit(["--model", "org/absent"], {
        ...env,
        HF_HUB_OFFLINE: "1",
      });
      assert.equal(code, 1);
      const line = output.split("\n").find((l) => l.startsWith("[leanserve] error:"));
      assert.match(
        line ?? output,
        /Cannot find "org\/absent@main" in the Hugging Face cache ".*hf\/hub" \(HF_HUB_OFFLINE is set\)/,
      );
    });
  } finally {
    await hub.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

async function gpuAvailable(): Promise<boolean> {
  const gpu = await testGpu();
  gpu?.device.destroy();
  if (!gpu && IN_CI) throw new Error("CI needs a WebGPU adapter");
  return gpu !== null;
}
