/**
 * CORS in a real browser: a page of one origin calls the API on another (127.0.0.1 on two ports are two
 * origins) with a key and a JSON body, which makes Chromium send a preflight first. The app allows the page's
 * origin: the answer arrives, streamed too; an app that allows only another origin: the browser refuses to
 * hand the page anything.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Page } from "puppeteer-core";
import { createApp } from "../server/app.ts";
import { launchBrowser, serveApp } from "./_browser.ts";
import { FakeEngine } from "./_fake_engine.ts";

const KEY = "sk-browser";

/** The page's call: a streamed chat completion with the key; what it read, or the error's message. */
function call(page: Page, api: string): Promise<string> {
  return page.evaluate(`(async () => {
    try {
      const res = await fetch(${JSON.stringify(api)} + "/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer ${KEY}" },
        body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], stream: true }),
      });
      const text = await res.text();
      return res.status + " " + res.headers.get("x-request-id")?.length + " " + text.length + " " +
        text.split("\\n").filter((l) => l.startsWith("data: {")).map((l) =>
          JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? ""
        ).join("");
    } catch (err) {
      return "refused: " + err.message;
    }
  })()`) as Promise<string>;
}

Deno.test("a page of an allowed origin calls the API cross-origin with its key; another origin gets nothing", async () => {
  const browser = await launchBrowser();
  if (!browser) return;
  const pageSite = new Hono().get("/", (c) => c.html("<!doctype html><title>app</title><p>app</p>"));
  const site = serveApp(pageSite);
  const allowed = serveApp(createApp({
    engine: new FakeEngine(),
    config: { auth: { apiKeys: [KEY], adminKeys: [] }, allowedOrigins: [site.base] },
  }));
  const other = serveApp(createApp({
    engine: new FakeEngine(),
    config: { auth: { apiKeys: [KEY], adminKeys: [] }, allowedOrigins: ["https://app.example.com"] },
  }));
  try {
    const page = await browser.newPage();
    await page.goto(site.base);
    // The x-request-id header is readable (exposed): 36 characters of a UUID.
    const [status, idLength, , ...words] = (await call(page, allowed.base)).split(" ");
    assert.deepEqual([status, idLength, words.join(" ")], ["200", "36", "Hello world"]);
    assert.match(await call(page, other.base), /^refused: Failed to fetch/);
  } finally {
    await browser.close();
    await Promise.all([site.stop(), allowed.stop(), other.stop()]);
  }
});
