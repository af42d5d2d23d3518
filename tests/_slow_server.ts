/**
 * A test entry point: the real app and the real shutdown sequence over a fake engine that streams slowly,
 * so that tests can send signals to a real process mid-stream (server/shutdown_test.ts).
 * Usage: deno run -A tests/_slow_server.ts <graceMs> <deltaMs>
 * Prints `listening <port>` and `tmp <dir>` (a folder registered for cleanup), then one JSON line per request.
 */
import { createApp } from "../server/app.ts";
import { createShutdown } from "../server/shutdown.ts";
import { FakeEngine } from "./_fake_engine.ts";

const [graceMs, deltaMs] = Deno.args.map(Number);
const engine = new FakeEngine();
engine.script = { deltas: Array.from({ length: 20 }, (_, i) => `t${i} `), delayMs: deltaMs };
const shutdown = createShutdown({ graceMs, forceMs: 2000 });
const tmp = await Deno.makeTempDir({ prefix: "leanserve-shutdown-test-" });
shutdown.onCleanup(() => Deno.remove(tmp, { recursive: true }));
const app = createApp({
  engine,
  config: {},
  logRequest: (line) => console.log(line),
  stopSignal: shutdown.stopSignal,
});
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`listening ${port}\ntmp ${tmp}`),
}, app.fetch);
shutdown.listen(server);
