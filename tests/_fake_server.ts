/** The app around a scripted engine on a loopback port, and the official `openai` client pointed at it. */
import OpenAI from "openai";
import { createApp } from "../server/app.ts";
import type { FakeEngine } from "./_fake_engine.ts";

/**
 * Serves `engine` with `config` until `stop()`.
 * @returns the client (no key, no retries) and the way to stop the server
 */
export function serveFake(
  engine: FakeEngine,
  config: { splitReasoning?: boolean } = {},
): { client: OpenAI; stop(): Promise<void> } {
  const app = createApp({ engine, config });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const client = new OpenAI({
    apiKey: "none",
    baseURL: `http://127.0.0.1:${server.addr.port}/v1`,
    maxRetries: 0,
  });
  return { client, stop: () => server.shutdown() };
}
