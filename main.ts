/**
 * leanserve's composition root, the HTTP side: parseConfig → start the engine's Worker (engine_worker.ts:
 * the GPU, the engine, the quantization jobs, loading the model) and wait for its GPU → createApp +
 * Deno.serve (answering 503 while the Worker loads) → serve until a signal. The HTTP loop never waits on
 * the GPU: Deno's GPU waits block their thread, and they block the Worker's.
 */
import { type Config, ConfigError, HELP_TEXT, parseConfig } from "./config.ts";
import { createApp } from "./server/app.ts";
import { createShutdown } from "./server/shutdown.ts";
import { samplingFromGenerationConfig } from "./server/protocol.ts";
import type { SamplingParams } from "./inference/engine/mod.ts";
import { connectEngine, Inbox, type Remote } from "./inference/remote/mod.ts";
import type { BootReport, BootRequest } from "./engine_worker.ts";

async function main(): Promise<number> {
  let config;
  try {
    config = parseConfig(Deno.args, Deno.env.toObject());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`error: ${err.message}\n\n${HELP_TEXT}`);
    return 2;
  }
  if (config.help) {
    console.log(HELP_TEXT);
    return 0;
  }
  let tls: { cert: string; key: string } | null;
  try {
    tls = readTls(config);
  } catch (err) {
    console.error(`[leanserve] error: ${(err as Error).message}`);
    return 1;
  }
  const { worker, remote, reports } = startEngineWorker(config);
  const gpu = (await reports.next()).value as BootReport;
  if (gpu.t !== "boot:gpu" || !gpu.ok) {
    // No adapter (boot:gpu), or a Worker that failed before it could say (boot:failed: a module not loading).
    const why = gpu.t === "boot:gpu" || gpu.t === "boot:failed"
      ? gpu.error
      : `the engine did not start (${gpu.t})`;
    console.error(`[leanserve] error: ${why}`);
    worker.terminate();
    return 1;
  }
  console.log(`[leanserve] ${gpu.description}`);
  if (gpu.isCpu) console.warn("[leanserve] warning: serving on a CPU adapter (llvmpipe); expect low speed");

  const generationDefaults: Partial<SamplingParams> = {};
  const shutdown = createShutdown({ graceMs: config.shutdownGraceSeconds * 1000 });
  const app = createApp({
    engine: remote.engine,
    config,
    generationDefaults,
    jobs: remote.jobs,
    ...(config.logRequests ? { logRequest: (line: string) => console.log(line) } : {}),
    stopSignal: shutdown.stopSignal,
  });
  const scheme = tls ? "https" : "http";
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    ...tls,
    onListen: ({ hostname, port }) => console.log(`[leanserve] listening on ${scheme}://${hostname}:${port}`),
  }, app.fetch);
  shutdown.listen(server); // SIGTERM/SIGINT: drain, cut after the grace, clean up, exit 0

  for (;;) {
    const m = (await reports.next()).value as BootReport;
    if (m.t === "boot:model") {
      Object.assign(generationDefaults, samplingFromGenerationConfig(m.generationConfig));
    }
    if (m.t === "boot:ready") break;
    if (m.t === "boot:failed") {
      console.error(`[leanserve] error: ${m.error}`);
      await server.shutdown();
      await shutdown.cleanup();
      // Deno.exit ends the Worker: terminating it first segfaulted Deno at exit in 3 of 72 starts under load.
      return 1;
    }
  }
  await server.finished; // only a signal closes the server; let its sequence clean up and exit
  await shutdown.finished();
  return 0;
}

/** --ssl-certfile and --ssl-keyfile, read (PEM text), or null for plain HTTP; throws naming a file it cannot read. */
function readTls(config: Config): { cert: string; key: string } | null {
  if (!config.tls) return null;
  const read = (file: string, flag: string) => {
    try {
      return Deno.readTextFileSync(file);
    } catch (err) {
      throw new Error(`Cannot read ${flag} "${file}": ${(err as Error).message}`);
    }
  };
  return {
    cert: read(config.tls.certFile, "--ssl-certfile"),
    key: read(config.tls.keyFile, "--ssl-keyfile"),
  };
}

/**
 * Starts the engine's Worker and boots it with `config`.
 * @returns the Worker, the engine and jobs faces the server uses, and the Worker's startup reports in order
 *   (a Worker that dies fails the faces, sets /health to "error" and reports `boot:failed`)
 */
function startEngineWorker(config: Config): {
  worker: Worker;
  remote: Remote;
  reports: AsyncIterator<BootReport>;
} {
  const worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href, { type: "module" });
  const remote = connectEngine(worker, config.servedModelName);
  const reports = new Inbox<BootReport>();
  worker.addEventListener("message", (event) => {
    const m = event.data as BootReport;
    if (typeof m?.t === "string" && m.t.startsWith("boot:")) reports.push(m);
  });
  worker.addEventListener("error", (event) => {
    // A fault the engine did not catch: the server stays up and says so on /health, never crashes.
    event.preventDefault();
    const reason = event.message ?? "the engine's Worker failed";
    console.error(`[leanserve] error: the engine's Worker failed: ${reason}`);
    remote.fail(reason);
    reports.push({ t: "boot:failed", error: reason });
  });
  worker.postMessage({ t: "boot", config } satisfies BootRequest);
  return { worker, remote, reports: reports[Symbol.asyncIterator]() };
}

if (import.meta.main) Deno.exit(await main());
