import assert from "node:assert/strict";
import { createShutdown } from "./shutdown.ts";

function harness(graceMs: number, forceMs = 1000) {
  const logs: string[] = [];
  const exits: number[] = [];
  const shutdown = createShutdown({
    graceMs,
    forceMs,
    log: (m) => logs.push(m),
    exit: (code) => exits.push(code),
  });
  const order: string[] = [];
  shutdown.onCleanup(() => void order.push("first"));
  shutdown.onCleanup(() => {
    throw new Error("disk gone");
  });
  shutdown.onCleanup(() => Promise.resolve().then(() => void order.push("third")));
  return { shutdown, logs, exits, order };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

Deno.test("createShutdown(): a server that drains within the grace exits 0 without cutting anything", async () => {
  const { shutdown, logs, exits, order } = harness(1000);
  await shutdown.finished(); // nothing begun: resolves at once
  const begun = shutdown.begin({ shutdown: () => sleep(10) }, "SIGTERM");
  await shutdown.finished();
  assert.deepEqual(exits, [0], "finished() waits for the whole sequence");
  await begun;
  assert.equal(shutdown.stopSignal.aborted, false);
  assert.deepEqual(order, ["first", "third"], "cleanups run in order; a failing one does not stop the rest");
  assert.ok(logs.some((l) => /cleanup failed: disk gone/.test(l)));
  assert.match(logs[0], /SIGTERM: no new connections; in-flight requests have 1 s/);
});

Deno.test("createShutdown(): after the grace the stop signal fires, and the server closes as streams end", async () => {
  const { shutdown, exits } = harness(30);
  // in-flight streams end only when they are stopped
  const closes = () =>
    new Promise<void>((resolve) => shutdown.stopSignal.addEventListener("abort", () => resolve()));
  const started = performance.now();
  await shutdown.begin({ shutdown: closes }, "SIGTERM");
  assert.ok(performance.now() - started >= 25);
  assert.equal(shutdown.stopSignal.aborted, true);
  assert.deepEqual(exits, [0]);
});

Deno.test("createShutdown(): a second signal cuts the grace short; a server that never closes exits 1", async () => {
  const { shutdown, exits, order } = harness(60_000, 30);
  const never = { shutdown: () => new Promise<void>(() => {}) };
  const first = shutdown.begin(never, "SIGINT");
  await sleep(5);
  assert.equal(shutdown.stopSignal.aborted, false);
  const second = shutdown.begin(never, "SIGINT");
  assert.equal(shutdown.stopSignal.aborted, true);
  await Promise.all([first, second]);
  assert.deepEqual(exits, [1], "exited once, with 1: the server never closed");
  assert.deepEqual(order, ["first", "third"]);
});

/** Starts tests/_slow_server.ts; resolves once it listens. */
async function startSlowServer(graceMs: number, deltaMs: number) {
  const entry = new URL("../tests/_slow_server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, String(graceMs), String(deltaMs)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errors = new Response(child.stderr).text(); // Deno's own notices; shown only when the start fails
  const lines: string[] = [];
  let ready!: (port: number) => void;
  const listening = new Promise<number>((resolve) => (ready = resolve));
  const output = (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        const m = line.match(/^listening (\d+)$/);
        if (m) ready(Number(m[1]));
      }
    }
  })();
  const port = await Promise.race([listening, child.status.then(() => 0)]);
  if (port === 0) throw new Error(`Slow server did not start:\n${lines.join("\n")}\n${await errors}`);
  const tmp = lines.find((l) => l.startsWith("tmp "))!.slice(4);
  return { child, lines, output: Promise.all([output, errors]), base: `http://127.0.0.1:${port}`, tmp };
}

async function streamDuringSigterm(graceMs: number) {
  const server = await startSlowServer(graceMs, 50); // 20 deltas × 50 ms ≈ 1 s of streaming
  const res = await fetch(`${server.base}/v1/completions`, {
    method: "POST",
    body: JSON.stringify({ prompt: "go", stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = (await reader.read()).value ?? "";
  server.child.kill("SIGTERM");
  await sleep(100);
  const refused = await fetch(`${server.base}/health`).then(
    (r) => r.body?.cancel().then(() => false),
    () => true,
  );
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
  }
  const status = await server.child.status;
  await server.output;
  const tmpGone = await Deno.stat(server.tmp).then(() => false, () => true);
  return { text, status, refused, tmpGone, lines: server.lines };
}

Deno.test("SIGTERM mid-stream with a long grace: no new connections, the stream completes, exit 0", async () => {
  const { text, status, refused, tmpGone, lines } = await streamDuringSigterm(10_000);
  assert.ok(refused, "new connections are refused once shutdown began");
  assert.ok(text.trimEnd().endsWith("data: [DONE]"), text.slice(-200));
  assert.match(text, /t19 /);
  assert.equal(status.code, 0);
  assert.ok(tmpGone, "the registered temporary folder is removed");
  const logged = lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  assert.equal(logged.length, 1);
  assert.equal(logged[0].completion_tokens, 20, "the request log line carries the values at stream end");
  assert.ok(lines.includes("[leanserve] stopped"));
});

Deno.test("SIGTERM mid-stream with a short grace: the stream is cut with an error event, exit 0", async () => {
  const started = performance.now();
  const { text, status, tmpGone, lines } = await streamDuringSigterm(150);
  assert.ok(!text.includes("[DONE]"));
  assert.match(text, /"code":"server_shutting_down"/);
  assert.doesNotMatch(text, /t19 /);
  assert.equal(status.code, 0);
  assert.ok(tmpGone);
  assert.ok(lines.some((l) => /grace period over: stopping in-flight requests/.test(l)));
  assert.ok(performance.now() - started < 10_000);
});
