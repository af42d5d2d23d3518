/**
 * The chat page (GET /) in headless Chromium: against the real server with lq-49m (streamed text in the DOM,
 * Stop cancelling generation on the server), and against the real app over a scripted engine for what a
 * model cannot be made to do on demand (hostile Markdown, a 401, a model without a chat template).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import type { Page } from "puppeteer-core";
import { createApp } from "../server/app.ts";
import {
  artifactDir,
  assertWellBehaved,
  launchBrowser,
  ScriptedEngine,
  serveApp,
  startRealServer,
  watchedPage,
} from "./_browser.ts";
import { IN_CI, sharedPath, testGpu } from "./_gpu.ts";

/** Evaluates an expression in the page (strings, since tests are type-checked without the DOM library). */
function js<T>(page: Page, expression: string): Promise<T> {
  return page.evaluate(expression) as Promise<T>;
}

const lastAnswer = `document.querySelector("#messages .msg.assistant:last-child")`;

/** Sends a message through the composer with the keyboard (Enter) and waits for its answer to settle. */
async function send(page: Page, text: string, timeout = 30_000): Promise<void> {
  const before = await js<number>(page, `document.querySelectorAll("#messages .msg.assistant").length`);
  await page.focus("#prompt");
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
  await page.waitForFunction(
    `document.querySelectorAll("#messages .msg.assistant").length > ${before} &&
     ${lastAnswer}.dataset.state !== "streaming" || !document.querySelector("#banner").hidden`,
    { timeout },
  );
}

/** Replaces an input's value as a person would (select all, type). */
async function fill(page: Page, selector: string, value: string): Promise<void> {
  await page.click(selector, { count: 3 });
  await page.keyboard.press("Backspace");
  if (value) await page.type(selector, value);
}

Deno.test("chat page over the real server: lq-49m's answer streams into the page and Stop cancels", async () => {
  const model = sharedPath("models/lq-49m");
  if (!model || !(await gpuAvailable())) return;
  const browser = await launchBrowser();
  if (!browser) return;
  const server = await startRealServer(model);
  try {
    const w = await watchedPage(browser, server.base);
    const { page } = w;
    await page.setViewport({ width: 1100, height: 760 });
    await page.goto(server.base, { waitUntil: "networkidle0" });
    await page.waitForFunction(`document.querySelector("#model-name").textContent === "lq-49m"`);
    assert.equal(await js(page, `document.querySelector("#model-quant").textContent`), "full precision");
    assert.equal(await js(page, `document.querySelector("#status-health").textContent`), "ready");

    // Record every text the answer shows, to see it grow while streaming.
    await js(
      page,
      `new MutationObserver(() => {
      const a = ${lastAnswer};
      if (a && a.dataset.state === "streaming") (globalThis.__seen ??= new Set()).add(a.querySelector(".body").textContent);
    }).observe(document.querySelector("#messages"), { subtree: true, childList: true, characterData: true })`,
    );
    await fill(page, "#max_tokens", "24");
    await fill(page, "#temperature", "0");
    await send(page, "Tell me a story.", 180_000);
    const shown = await js<string>(page, `${lastAnswer}.querySelector(".body").textContent`);
    const seen = await js<string[]>(page, `[...(globalThis.__seen ?? [])].filter((t) => t !== "")`);
    // It grew while streaming: shorter texts were on the page before the answer ended (the page marks the
    // answer done before it renders the whole text; a last frame of the stream may still show all of it).
    assert.ok(
      seen.some((t) => t.length < shown.length) && seen.every((t) => t.length <= shown.length),
      `partial texts: ${JSON.stringify(seen)}, shown: ${JSON.stringify(shown)}`,
    );
    assert.match(
      await js<string>(page, `${lastAnswer}.querySelector(".meta").textContent`),
      /^\d+ tokens? in [\d.]+ s · [\d.]+ tok\/s · first token \d+ ms · (stop|length)$/,
    );
    // Greedy, so the API gives the same reply; the page shows its text (Markdown markers aside).
    const t0 = Date.now();
    const res = await fetch(`${server.base}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        messages: [{ role: "user", content: "Tell me a story." }],
        max_tokens: 24,
        temperature: 0,
      }),
    });
    const body = await res.json();
    const reply = body.choices[0].message.content as string;
    // Warm (the page's request compiled the pipelines), scaled to 24 tokens should the answer stop early.
    const answerMs = (Date.now() - t0) * 24 / body.usage.completion_tokens;
    const plain = (s: string) => s.replace(/[\s*_`#]/g, "");
    assert.equal(plain(shown), plain(reply));
    await page.screenshot({ path: join(await artifactDir(), "chat.png") });

    // A long sampled answer (temperature 1.5 with this seed runs to max_tokens), stopped after its first text.
    await fill(page, "#max_tokens", "400");
    await fill(page, "#temperature", "1.5");
    await fill(page, "#seed", "1");
    await page.focus("#prompt");
    await page.keyboard.type("Tell me a long story.");
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      `${lastAnswer}.dataset.state === "streaming" && ${lastAnswer}.querySelector(".body").textContent !== ""`,
      { timeout: 180_000 },
    );
    await page.click("#stop");
    await page.waitForFunction(`${lastAnswer}.dataset.state === "stopped"`, { timeout: 10_000 });
    const stoppedText = await js<string>(page, `${lastAnswer}.querySelector(".body").textContent`);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(
      await js(page, `${lastAnswer}.querySelector(".body").textContent`),
      stoppedText,
      "text stops",
    );
    assert.match(await js<string>(page, `${lastAnswer}.querySelector(".meta").textContent`), /stopped$/);
    // The engine serves one request at a time: had the stopped answer gone on to 400 tokens, this one-token
    // request would wait for ~370 more (~15× the warm 24-token answer). Cancelled, it waits only for the
    // decode chunks already on the GPU (at most two, ≤ 32 tokens).
    const t1 = Date.now();
    const next = await fetch(`${server.base}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "Hello", max_tokens: 1 }),
    });
    assert.equal(next.status, 200);
    await next.body?.cancel();
    const waitedMs = Date.now() - t1;
    console.log(
      `[tests] after Stop a 1-token request waited ${waitedMs} ms; a warm 24-token answer took ${
        answerMs.toFixed(0)
      } ms`,
    );
    assert.ok(
      waitedMs < 8 * answerMs,
      `next request waited ${waitedMs} ms (24 tokens took ${Math.round(answerMs)})`,
    );
    // Nothing left running. The engine's counters reach the HTTP thread within 100 ms of a change
    // (inference/remote), and the 1-token request ends a step after its body is cancelled: under the parallel
    // CI suite one read came too early, so poll for up to 5 s.
    let scraped: string | null = null;
    for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
      const metrics = await fetch(`${server.base}/metrics`);
      if (metrics.status !== 200) {
        await metrics.body?.cancel();
        break;
      }
      scraped = await metrics.text();
      if (/^leanserve_requests_running 0$/m.test(scraped)) break;
    }
    if (scraped !== null) {
      const running = scraped.match(/^leanserve_requests_running .*$/m)?.[0];
      assert.equal(running, "leanserve_requests_running 0");
    }
    await assertWellBehaved(w);
  } finally {
    await browser.close();
    await server.stop();
  }
});

/** The real app over a scripted engine, behind a key check like the one --api-key adds. */
function scriptedServer(engine: ScriptedEngine) {
  const outer = new Hono();
  outer.use("/v1/*", async (c, next) => {
    if (c.req.header("authorization") !== "Bearer sesame") {
      const error = {
        message: "Invalid API key",
        type: "invalid_request_error",
        param: null,
        code: "invalid_api_key",
      };
      return c.json({ error }, 401);
    }
    return await next();
  });
  outer.route("/", createApp({ engine, config: {}, logError: () => {} }));
  return serveApp(outer);
}

Deno.test("chat page over a scripted engine: key prompt, safe Markdown, sampling fields, Stop, storage, export", async (t) => {
  const browser = await launchBrowser();
  if (!browser) return;
  const engine = new ScriptedEngine();
  const server = scriptedServer(engine);
  const dir = await artifactDir();
  try {
    const w = await watchedPage(browser, server.base);
    const { page } = w;
    await page.goto(server.base, { waitUntil: "domcontentloaded" });

    await t.step("a 401 opens the settings dialog; the key entered there is kept and used", async () => {
      await page.waitForFunction(`document.querySelector("#settings-dialog").open`);
      assert.match(
        await js<string>(page, `document.querySelector("#settings-reason").textContent`),
        /Invalid API key/,
      );
      await page.type("#api-key", "sesame");
      await page.click("#settings-save");
      await page.waitForFunction(`document.querySelector("#model-name").textContent === "scripted-model"`);
      assert.equal(await js(page, `localStorage.getItem("leanserve.apiKey")`), "sesame");
    });

    await t.step("model text renders as Markdown, and HTML in it stays text", async () => {
      engine.deltas = [
        "Here is **bold** and `co<de>`.\n\n```js\nconst x = 1;\n```\n\n",
        '<img src=x onerror="globalThis.__xss=1"><script>globalThis.__xss=2</script>\n\n- one\n- two',
      ];
      await send(page, "Show me markdown");
      const answer = `${lastAnswer}.querySelector(".body")`;
      assert.equal(await js(page, `${answer}.querySelector("strong").textContent`), "bold");
      assert.equal(await js(page, `${answer}.querySelector("p code").textContent`), "co<de>");
      assert.equal(
        await js(page, `${answer}.querySelector("pre[data-lang=js] code").textContent`),
        "const x = 1;",
      );
      assert.equal(await js(page, `${answer}.querySelectorAll("li").length`), 2);
      assert.equal(await js(page, `document.querySelectorAll("#messages img, #messages script").length`), 0);
      assert.equal(await js(page, `globalThis.__xss`), undefined);
      assert.match(await js<string>(page, `${answer}.textContent`), /<img src=x onerror=/);
    });

    await t.step("Shift+Enter adds a line, Enter sends; the sampling fields reach the server", async () => {
      engine.deltas = ["ok"];
      await fill(page, "#system", "Be brief.");
      for (const [id, v] of [["temperature", "0.5"], ["top_p", "0.9"], ["top_k", "40"], ["min_p", "0.05"]]) {
        await fill(page, `#${id}`, v);
      }
      await fill(page, "#max_tokens", "7");
      await fill(page, "#seed", "3");
      const count = await js<number>(page, `document.querySelectorAll("#messages .msg").length`);
      await page.focus("#prompt");
      await page.keyboard.type("line one");
      await page.keyboard.down("Shift");
      await page.keyboard.press("Enter");
      await page.keyboard.up("Shift");
      assert.equal(await js(page, `document.querySelector("#prompt").value`), "line one\n");
      assert.equal(await js(page, `document.querySelectorAll("#messages .msg").length`), count, "not sent");
      await send(page, "line two");
      const req = engine.requests.at(-1)!;
      assert.deepEqual(req.sampling, { temperature: 0.5, topP: 0.9, topK: 40, minP: 0.05, seed: 3 });
      assert.equal(req.maxTokens, 7);
      assert.ok(req.input.kind === "chat");
      assert.deepEqual(req.input.messages[0], { role: "system", content: "Be brief." });
      assert.deepEqual(req.input.messages.at(-1), { role: "user", content: "line one\nline two" });
      assert.equal(req.input.messages.length, 4, "system + the conversation so far + the new message");
    });

    await t.step(
      "a thinking model's reasoning shows folded above its answer and is not sent back",
      async () => {
        engine.thinking = { opensInPrompt: false };
        engine.deltas = ["<think>Two and", " two.</think>", "\n\nFour."];
        await send(page, "2+2?");
        const answer = `${lastAnswer}.querySelector(".body")`;
        assert.equal(
          await js(page, `${answer}.querySelector("details.reasoning p").textContent`),
          "Two and two.",
        );
        assert.equal(await js(page, `${answer}.querySelector("details.reasoning").open`), false);
        assert.equal(await js(page, `${answer}.lastElementChild.textContent`), "Four.");
        engine.thinking = null;
        engine.deltas = ["ok"];
        await send(page, "thanks");
        const req = engine.requests.at(-1)!;
        assert.ok(req.input.kind === "chat");
        assert.deepEqual(req.input.messages.at(-2), { role: "assistant", content: "Four." });
      },
    );

    await t.step("Stop aborts the request, which the server passes on to the engine", async () => {
      engine.deltas = ["partial answer"];
      engine.hangUntilAbort = true;
      await page.focus("#prompt");
      await page.keyboard.type("Go on forever");
      await page.keyboard.press("Enter");
      await page.waitForFunction(`${lastAnswer}.querySelector(".body").textContent === "partial answer"`);
      await page.click("#stop");
      await page.waitForFunction(`${lastAnswer}.dataset.state === "stopped"`);
      for (let i = 0; i < 50 && engine.abortedWhileGenerating === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(engine.abortedWhileGenerating, 1, "the engine saw the abort while generating");
      engine.hangUntilAbort = false;
    });

    await t.step("the conversation survives a reload and exports as JSON", async () => {
      const count = await js<number>(page, `document.querySelectorAll("#messages .msg").length`);
      await page.reload({ waitUntil: "networkidle0" });
      assert.equal(await js(page, `document.querySelectorAll("#messages .msg").length`), count);
      assert.equal(await js(page, `document.querySelector("#system").value`), "Be brief.");
      const cdp = await browser.target().createCDPSession();
      await cdp.send("Browser.setDownloadBehavior", { behavior: "allow", downloadPath: dir });
      await page.click("#export");
      let file: string | undefined;
      for (let i = 0; i < 50 && !file; i++) {
        await new Promise((r) => setTimeout(r, 100));
        file = [...Deno.readDirSync(dir)].map((e) => e.name).find((n) => /^leanserve-chat-.*\.json$/.test(n));
      }
      assert.ok(file, "a JSON file was downloaded");
      const doc = JSON.parse(await Deno.readTextFile(join(dir, file)));
      assert.equal(doc.model, "scripted-model");
      assert.equal(doc.messages.length, count);
      assert.equal(doc.messages.at(-1).content, "partial answer");
      assert.deepEqual(doc.sampling, {
        temperature: 0.5,
        top_p: 0.9,
        top_k: 40,
        min_p: 0.05,
        max_tokens: 7,
        seed: 3,
      });
    });

    await t.step(
      "a model without a chat template says so, and the question comes back to the box",
      async () => {
        engine.hasChatTemplate = false;
        await send(page, "Hello base model");
        assert.match(
          await js<string>(page, `document.querySelector("#banner").textContent`),
          /no chat template/,
        );
        assert.equal(await js(page, `document.querySelector("#prompt").value`), "Hello base model");
        engine.hasChatTemplate = true;
      },
    );

    await t.step("on a phone-sized screen nothing overflows sideways", async () => {
      await page.setViewport({ width: 390, height: 844, isMobile: true });
      await page.reload({ waitUntil: "networkidle0" });
      assert.ok(await js(page, `document.documentElement.scrollWidth <= window.innerWidth`));
      await page.screenshot({ path: join(dir, "chat_phone.png") });
    });
    await assertWellBehaved(w);
  } finally {
    await browser.close();
    await server.stop();
  }
});

async function gpuAvailable(): Promise<boolean> {
  const gpu = await testGpu();
  gpu?.device.destroy();
  if (!gpu && IN_CI) throw new Error("CI needs a WebGPU adapter");
  return gpu !== null;
}
