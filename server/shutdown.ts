/**
 * Graceful shutdown on SIGTERM/SIGINT: stop accepting connections (`server.shutdown()`), let in-flight
 * requests finish for a grace period, then fire the stop signal so that generations end at their next
 * decode chunk (the client gets a `server_shutting_down` error event, not a truncated "stop"), run the
 * cleanups (temporary folders) and exit 0. A second signal cuts the grace short. If the server still has
 * not closed `forceMs` after the stop signal (a hung GPU wait), the cleanups run and the process exits 1.
 */

/** The part of Deno.HttpServer that shutdown needs. */
export interface Closable {
  shutdown(): Promise<void>;
}

/** Options of createShutdown(). */
export interface ShutdownOptions {
  /** How long in-flight requests may run after the signal. */
  graceMs: number;
  /** After the stop signal, how long to wait for the server to close before giving up. Default 5 s. */
  forceMs?: number;
  /** Progress messages. Default console.log. */
  log?: (message: string) => void;
  /** Ends the process. Default Deno.exit. */
  exit?: (code: number) => void;
}

/** The shutdown sequence of one process. */
export interface Shutdown {
  /** Fires when in-flight work must stop (pass to createApp as stopSignal). */
  readonly stopSignal: AbortSignal;
  /** Registers work to run before exit, e.g. removing a temporary folder; runs once, in order. */
  onCleanup(fn: () => void | Promise<void>): void;
  /** Runs the cleanups now (for exits that do not go through begin(), e.g. a failed load). */
  cleanup(): Promise<void>;
  /**
   * Shuts the server down; a second call cuts the grace short.
   * @param server The listening server.
   * @param reason Logged, e.g. "SIGTERM".
   * @returns Resolves after exit() was called.
   */
  begin(server: Closable, reason: string): Promise<void>;
  /** Resolves once a begun shutdown has run its cleanups and called exit() (at once when none began). */
  finished(): Promise<void>;
  /** Calls begin(server, signal) on SIGTERM and SIGINT. */
  listen(server: Closable, signals?: readonly Deno.Signal[]): void;
}

/**
 * Creates the shutdown sequence.
 * @param options Grace period, logging and exit.
 * @returns The sequence; wire stopSignal into the app and call listen() once the server runs.
 * @example
 * ```ts
 * import { createShutdown } from "./shutdown.ts";
 * const shutdown = createShutdown({ graceMs: 0, log: () => {}, exit: () => {} });
 * await shutdown.begin({ shutdown: () => Promise.resolve() }, "test");
 * console.assert(!shutdown.stopSignal.aborted); // closed within the grace: nothing was cut
 * ```
 */
export function createShutdown(
  { graceMs, forceMs = 5000, log = console.log, exit = Deno.exit }: ShutdownOptions,
): Shutdown {
  const stop = new AbortController();
  const cleanups: (() => void | Promise<void>)[] = [];
  let running: Promise<void> | null = null;

  async function cleanup(): Promise<void> {
    for (const fn of cleanups.splice(0)) {
      try {
        await fn();
      } catch (err) {
        log(`[leanserve] cleanup failed: ${(err as Error).message}`);
      }
    }
  }

  function cut(why: string): void {
    if (stop.signal.aborted) return;
    log(`[leanserve] ${why}: stopping in-flight requests`);
    stop.abort(new Error("Server is shutting down"));
  }

  async function run(server: Closable, reason: string): Promise<void> {
    log(`[leanserve] ${reason}: no new connections; in-flight requests have ${graceMs / 1000} s to finish`);
    const closed = server.shutdown().then(() => true, () => true);
    const timers: ReturnType<typeof setTimeout>[] = [];
    const after = (ms: number) =>
      new Promise<false>((resolve) => timers.push(setTimeout(() => resolve(false), ms)));
    // The grace ends early when a second signal already fired the stop.
    const stopped = new Promise<false>((resolve) =>
      stop.signal.addEventListener("abort", () => resolve(false))
    );
    let clean = await Promise.race([closed, after(graceMs), stopped]);
    if (!clean) {
      cut("grace period over");
      clean = await Promise.race([closed, after(forceMs)]);
    }
    timers.forEach(clearTimeout);
    if (!clean) log(`[leanserve] server did not close ${forceMs / 1000} s after the stop; exiting anyway`);
    await cleanup();
    log("[leanserve] stopped");
    exit(clean ? 0 : 1);
  }

  return {
    stopSignal: stop.signal,
    onCleanup: (fn) => void cleanups.push(fn),
    cleanup,
    begin(server, reason) {
      if (running) {
        cut(`${reason} again`);
        return running;
      }
      running = run(server, reason);
      return running;
    },
    finished: () => running ?? Promise.resolve(),
    listen(server, signals = ["SIGTERM", "SIGINT"]) {
      for (const sig of signals) Deno.addSignalListener(sig, () => void this.begin(server, sig));
    },
  };
}
