/**
 * `deno run -A bench/first_start.ts [--timeout <s>] [--port <n>] [--label <text>] -- <main.ts flags>`
 *
 * Times a server start the way a newcomer sees it: spawns `deno run -A main.ts <flags>`, polls /health every
 * second and reports the seconds from spawn to 200 ("ready"); then stops the server with SIGTERM. When the
 * timeout comes first, the server is stopped and the quantization's total is projected from the progress
 * /health reported ("quantizing: N %"), linearly from the first progress seen. One JSON line goes to stdout.
 */
import { parseArgs } from "node:util";

const split = Deno.args.indexOf("--");
const { values } = parseArgs({
  args: split < 0 ? Deno.args : Deno.args.slice(0, split),
  options: {
    timeout: { type: "string", default: "600" },
    port: { type: "string", default: "18431" },
    label: { type: "string", default: "" },
  },
});
const serverArgs = split < 0 ? [] : Deno.args.slice(split + 1);
const port = Number(values.port);
const timeoutS = Number(values.timeout);

const t0 = performance.now();
const seconds = () => (performance.now() - t0) / 1000;
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "--cached-only", "main.ts", "--port", String(port), ...serverArgs],
  env: { DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "vulkan" },
  stdout: "inherit",
  stderr: "null", // the progress bar; /health carries the same progress
}).spawn();
let exited = false;
const status = child.status.then((s) => (exited = true, s));

/** [seconds, fraction] pairs of the quantization progress, from /health's detail. */
const progress: [number, number][] = [];
let ready: number | null = null;
let lastDetail = "";
while (!exited && seconds() < timeoutS) {
  await new Promise((r) => setTimeout(r, 1000));
  // A busy server may not answer for a while (long GPU waits on a CPU adapter); poll again rather than hang.
  const health = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(5000) }).then(
    async (r) => ({ code: r.status, body: await r.json().catch(() => ({})) }),
    () => null,
  );
  if (!health) continue;
  if (health.code === 200) {
    ready = seconds();
    break;
  }
  const detail = String(health.body.detail ?? "");
  const m = /^quantizing: (\d+) %/.exec(detail);
  if (m) progress.push([seconds(), Number(m[1]) / 100]);
  const layer = detail.replace(/ \d+ %/, "");
  if (layer !== lastDetail) console.error(`[first_start] ${seconds().toFixed(0)} s: ${detail}`);
  lastDetail = layer;
}
if (!exited) {
  child.kill("SIGTERM");
  // A server busy quantizing may not get to its SIGTERM handler; don't wait for it.
  const grace = setTimeout(() => exited || child.kill("SIGKILL"), 10_000);
  await status;
  clearTimeout(grace);
}
const code = (await status).code;
const result: Record<string, unknown> = { label: values.label, args: serverArgs.join(" "), exit_code: code };
if (ready !== null) {
  result.ready_seconds = Number(ready.toFixed(1));
} else {
  result.timed_out_after_seconds = Number(seconds().toFixed(0));
  const moving = progress.filter(([, f]) => f > 0);
  if (moving.length >= 2) {
    const [ta, fa] = moving[0], [tb, fb] = moving[moving.length - 1];
    if (fb > fa) {
      result.progress = fb;
      result.projected_ready_seconds = Math.round(ta + (1 - fa) * (tb - ta) / (fb - fa));
    }
  }
}
console.log(JSON.stringify(result));
