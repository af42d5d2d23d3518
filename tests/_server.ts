/**
 * Starts the real server (main.ts) as a child process on a free loopback port, as tests/e2e_server_test.ts
 * does, with extra arguments and environment.
 */
import assert from "node:assert/strict";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A running server child. */
export interface ServerChild {
  base: string;
  /** Everything it printed so far. */
  logs(): string;
  stop(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function spawn(args: string[], env: Record<string, string>) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--port", String(port), "--host", "127.0.0.1", ...args],
    env: {
      DENO_WEBGPU_BACKEND: "vulkan",
      XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const logs: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs.push(chunk);
  };
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]);
  return { child, port, logs, done };
}

/**
 * Starts main.ts and waits until /health says ready.
 * @param args command-line flags (a free --port is added)
 * @param env variables added to the inherited environment
 * @param https with `fetch` trusting the server's certificate: the server serves HTTPS (--ssl-certfile)
 */
export async function startServer(
  args: string[],
  env: Record<string, string> = {},
  https: { fetch: typeof fetch } | null = null,
): Promise<ServerChild> {
  const { child, port, logs, done } = spawn(args, env);
  const base = `${https ? "https" : "http"}://127.0.0.1:${port}`;
  const fetch = https?.fetch ?? globalThis.fetch;
  const deadline = Date.now() + 300_000;
  let exited: Deno.CommandStatus | null = null;
  child.status.then((s) => exited = s);
  for (;;) {
    const res = await fetch(`${base}/health`).catch(() => null);
    if (res) {
      const body = await res.json();
      if (res.status === 200) break;
      assert.equal(res.status, 503, `health: ${JSON.stringify(body)}`);
    }
    if (exited || Date.now() > deadline) {
      await done;
      throw new Error(`server did not become ready:\n${logs.join("")}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    base,
    logs: () => logs.join(""),
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await done;
    },
  };
}

/**
 * Runs main.ts expecting it to fail at startup.
 * @returns its exit code and everything it printed
 */
export async function runServerToExit(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; output: string }> {
  const { child, logs, done } = spawn(args, env);
  const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
  const status = await child.status;
  clearTimeout(timer);
  await done;
  return { code: status.code, output: logs.join("") };
}
