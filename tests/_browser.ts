/**
 * Browser-test utilities: headless Chromium (Debian's `chromium` package) driven by puppeteer-core, the real
 * server started as a child process (as tests/e2e_server_test.ts does), and in-process Hono apps served on a
 * loopback port. CI policy (style.md H): with CI=true a missing browser fails; elsewhere the test skips after
 * one printed line.
 */
import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import type { Hono } from "hono";
import {
  type Engine,
  EngineInputError,
  type EngineStatus,
  type GenerateRequest,
  type TokenEvent,
} from "../inference/engine/types.ts";
import { IN_CI } from "./_gpu.ts";

const CHROMIUM_PATHS = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

/** Launches headless Chromium, or returns null (outside CI only) with one printed line. */
export async function launchBrowser(): Promise<Browser | null> {
  const path = CHROMIUM_PATHS.find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!path) {
    const why = `no Chromium at ${CHROMIUM_PATHS.join(", ")}; install it with apt-get install -y chromium`;
    if (IN_CI) throw new Error(`Cannot run browser tests: ${why}`);
    console.warn(`[tests] skipping browser tests: ${why}`);
    return null;
  }
  return await puppeteer.launch({
    executablePath: path,
    headless: true,
    // Root in a container has no user namespace for Chromium's sandbox; the pages are our own.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
}

/** A page that records what a well-behaved page must never do. */
export interface WatchedPage {
  page: Page;
  /** Uncaught exceptions in the page. */
  errors: string[];
  /** Requests to any origin other than the server's. */
  foreign: string[];
  /** Content-Security-Policy violations reported by the page. */
  cspViolations(): Promise<string[]>;
}

/**
 * Opens a page that records page errors, requests to other hosts and CSP violations.
 * @param browser The browser.
 * @param base The server's origin, e.g. http://127.0.0.1:1234.
 */
export async function watchedPage(browser: Browser, base: string): Promise<WatchedPage> {
  const page = await browser.newPage();
  const errors: string[] = [];
  const foreign: string[] = [];
  page.on("pageerror", (err) => errors.push(String((err as Error).message ?? err)));
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(base) && !url.startsWith("blob:") && !url.startsWith("data:")) foreign.push(url);
  });
  // A string, since this file is type-checked without the DOM library.
  await page.evaluateOnNewDocument(`
    globalThis.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => __csp.push(e.violatedDirective + " " + e.blockedURI));
  `);
  return {
    page,
    errors,
    foreign,
    cspViolations: () => page.evaluate("globalThis.__csp") as Promise<string[]>,
  };
}

/** Asserts the page raised no error, asked no other host and broke no CSP rule. */
export async function assertWellBehaved(w: WatchedPage): Promise<void> {
  assert.deepEqual(w.errors, [], "page errors");
  assert.deepEqual(w.foreign, [], "requests to other hosts");
  assert.deepEqual(await w.cspViolations(), [], "CSP violations");
}

/** A loopback port that is free now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Serves an in-process app on a loopback port. */
export function serveApp(app: Hono): { base: string; stop(): Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    stop: () => server.shutdown(),
  };
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** The real server (main.ts) as a child process on a loopback port, ready to serve. */
export interface RealServer {
  base: string;
  logs(): string;
  stop(): Promise<void>;
}

/**
 * Starts main.ts with a model and waits until /health says ready.
 * @param model The model folder.
 * @param extra More command-line flags.
 */
export async function startRealServer(model: string, extra: string[] = []): Promise<RealServer> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--model", model, "--port", String(port), ...extra],
    env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const logs: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs.push(chunk);
  };
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
    await done;
  };
  const deadline = Date.now() + 300_000;
  for (;;) {
    const res = await fetch(`${base}/health`).catch(() => null);
    await res?.body?.cancel();
    if (res?.status === 200) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`Server did not become ready:\n${logs.join("")}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { base, logs: () => logs.join(""), stop };
}

/** A temporary folder for screenshots and downloads of one test run; printed so a person can look. */
export async function artifactDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "leanserve-browser-" });
  console.log(`[tests] screenshots and downloads in ${dir}`);
  return dir;
}

/**
 * An Engine that plays a script instead of running a model: no GPU. It records the requests it got and
 * whether a request's AbortSignal fired while it was still generating (the server cancelling on disconnect).
 */
export class ScriptedEngine implements Engine {
  modelId = "scripted-model";
  hasChatTemplate = true;
  /** Its "template" knows <think> blocks: the server splits reasoning off. */
  thinking: { opensInPrompt: boolean } | null = null;
  /** Text pieces of each answer. */
  deltas: string[] = ["Hello", " there"];
  /** Pause before each piece. */
  delayMs = 20;
  /** After the pieces, wait for the client to go away instead of ending. */
  hangUntilAbort = false;
  requests: GenerateRequest[] = [];
  abortedWhileGenerating = 0;

  status(): EngineStatus {
    return {
      state: "ready",
      detail: "",
      modelId: this.modelId,
      contextLength: 512,
      hasChatTemplate: this.hasChatTemplate,
      thinking: this.thinking,
    };
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent> {
    if (request.input.kind === "chat" && !this.hasChatTemplate) {
      throw new EngineInputError("Cannot chat: no chat template", "messages", "no_chat_template");
    }
    this.requests.push(request);
    let generating = true;
    const onAbort = () => {
      if (generating) this.abortedWhileGenerating++;
    };
    signal?.addEventListener("abort", onAbort);
    try {
      yield { type: "start", promptTokens: 5 };
      for (const text of this.deltas) {
        await new Promise((r) => setTimeout(r, this.delayMs));
        if (signal?.aborted) return;
        yield { type: "delta", text };
      }
      if (this.hangUntilAbort) {
        await new Promise((resolve) => {
          if (signal?.aborted) resolve(null);
          signal?.addEventListener("abort", resolve);
        });
        return;
      }
      generating = false;
      yield { type: "end", finishReason: "stop", promptTokens: 5, completionTokens: this.deltas.length };
    } finally {
      generating = false;
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
