/**
 * The quantization console (GET /admin) in headless Chromium.
 * - Against the real server quantizing stories260K over the real /v1/quantize API: the form's files, the live
 *   job (1-based layer i/n as the API sends it), losses and chart, perplexities, the hot swap and an answer
 *   from the quantized model.
 * - Against a test double of the same API (tests/_quantize_double.ts, validated by the real parser) for what
 *   a real job cannot be made to do on demand: a paced timeline, a 409, a cancel mid-way, two artifacts side
 *   by side, and the form's guards.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import type { Page } from "puppeteer-core";
import { HELP_TEXT } from "../config.ts";
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
import { quantizeApiDouble } from "./_quantize_double.ts";

function js<T>(page: Page, expression: string): Promise<T> {
  return page.evaluate(expression) as Promise<T>;
}

const text = (page: Page, selector: string) =>
  js<string>(page, `document.querySelector(${JSON.stringify(selector)}).textContent`);

async function fill(page: Page, selector: string, value: string): Promise<void> {
  await page.click(selector, { count: 3 });
  await page.keyboard.press("Backspace");
  if (value) await page.type(selector, value);
}

Deno.test("console over the quantize API double: form, live progress and chart, 409, cancel, activate, side by side", async (t) => {
  const browser = await launchBrowser();
  if (!browser) return;
  const engine = new ScriptedEngine();
  engine.deltas = ["full precision says hi"];
  const double = quantizeApiDouble({ onActivate: (a) => (engine.deltas = [`answer from ${a.name}`]) });
  const outer = new Hono();
  outer.get("/v1/models", (c) => {
    const a = double.artifacts.find((x) => x.active);
    const quantization = a
      ? { method: a.method, bits: a.bits, group_size: a.group_size, ppl: a.ppl }
      : undefined;
    return c.json({
      object: "list",
      data: [{ id: engine.modelId, object: "model", ...(a ? { quantization } : {}) }],
    });
  });
  outer.route("/", double.app);
  outer.route("/", createApp({ engine, config: {}, logError: () => {} }));
  const server = serveApp(outer);
  const dir = await artifactDir();
  try {
    const w = await watchedPage(browser, server.base);
    const { page } = w;
    await page.setViewport({ width: 1200, height: 900 });
    await page.goto(`${server.base}/admin`, { waitUntil: "domcontentloaded" });

    await t.step("a 401 asks for the admin key; the lists load with it", async () => {
      await page.waitForFunction(`document.querySelector("#settings-dialog").open`);
      assert.equal(await js(page, `document.activeElement.id`), "admin-key");
      await page.type("#admin-key", "admin-key");
      await page.click("#settings-save");
      await page.waitForFunction(`document.querySelectorAll("#artifacts-rows tr").length === 1`);
      assert.equal(await text(page, "#model-quant"), "full precision");
    });

    await t.step("the form sends the contract's body and the job streams in live", async () => {
      await page.select("#q-method", "gptq");
      await page.select("#q-bits", "3");
      await fill(page, "#q-group-size", "64");
      await page.click("#q-act-order");
      await page.type("#q-calib-text", "Once upon a time there was a cat.");
      await fill(page, "#q-nsamples", "4");
      await fill(page, "#q-seqlen", "64");
      await fill(page, "#q-calib-seed", "7");
      await page.type("#q-eval-text", "The cat sat on the mat.");
      await fill(page, "#q-eval-ctx", "64");
      await fill(page, "#q-eval-windows", "2");
      await fill(page, "#q-name", "g3");
      await js(
        page,
        `new MutationObserver(() => (globalThis.__points ??= new Set()).add(
        document.querySelectorAll("#loss-chart circle").length)).observe(document.querySelector("#loss-chart"), { childList: true })`,
      );
      await page.click("#q-start");
      await page.waitForFunction(`document.querySelector("#job-status").textContent === "quantizing"`);
      assert.deepEqual(double.posted[0], {
        method: "gptq",
        bits: 3,
        group_size: 64,
        act_order: false,
        calibration: { text: "Once upon a time there was a cat.", nsamples: 4, seqlen: 64, seed: 7 },
        activate: true,
        eval: { text: "The cat sat on the mat.", ctx: 64, max_windows: 2 },
        name: "g3",
      });
      assert.match(await text(page, "#job-layer"), /^layer [1-4]\/4 · quantize (self_attn|mlp)\./);
      assert.match(await text(page, "#job-eta"), /^\d+ s$/);
      assert.match(await text(page, "#job-gpu"), /MiB now · [\d.]+ MiB peak$/);
      assert.equal(await text(page, "#job-ppl-before"), "—"); // the API reports both perplexities at the end
      assert.equal(await text(page, "#job-title"), "g3 (gptq 3-bit g64)");

      await page.click("#q-start"); // while one runs
      await page.waitForFunction(`/already running/.test(document.querySelector("#q-message").textContent)`);

      await page.waitForFunction(`document.querySelector("#job-status").textContent === "done"`, {
        timeout: 20_000,
      });
      const losses = double.jobs.get("qjob-1")!.losses.length;
      assert.equal(losses, 20);
      // One point per loss, plus one per layer for the total line.
      assert.equal(await js(page, `document.querySelectorAll("#loss-chart circle").length`), losses + 4);
      assert.equal(await js(page, `document.querySelectorAll("#loss-chart polyline").length`), 6);
      assert.equal(await js(page, `document.querySelectorAll("#loss-rows tr").length`), losses);
      assert.equal(await js(page, `document.querySelectorAll("#loss-legend li").length`), 6);
      const counts = await js<number[]>(page, `[...globalThis.__points].sort((a, b) => a - b)`);
      assert.ok(counts.length >= 5, `the chart filled in step by step: ${counts}`);
      assert.equal(await text(page, "#job-layer"), "layer 4/4");
      assert.equal(await text(page, "#job-eta"), "—");
      assert.equal(await text(page, "#job-ppl-before"), "10.250");
      assert.equal(await text(page, "#job-ppl-after"), "10.750");
      assert.equal(await text(page, "#job-percent"), "100%");
      assert.match(await text(page, "#job-artifact"), /^g3 \(/);
      await page.waitForFunction(
        `document.querySelector("#model-quant").textContent === "gptq 3-bit g64 · ppl 10.75"`,
      );
      assert.equal(
        await js(
          page,
          `document.querySelector('#jobs-rows tr[data-job="qjob-1"] td:nth-child(3)').textContent`,
        ),
        "done",
      );
      assert.equal(await js(page, `document.querySelectorAll("#artifacts-rows tr").length`), 2);
      await page.screenshot({ path: join(dir, "admin.png"), fullPage: true });
    });

    await t.step("Cancel job stops a running job", async () => {
      await fill(page, "#q-name", "");
      await page.click("#q-start");
      await page.waitForFunction(`document.querySelector("#job-status").textContent === "quantizing"`);
      await page.click("#job-cancel");
      await page.waitForFunction(`document.querySelector("#job-status").textContent === "cancelled"`);
      assert.equal(double.jobs.get("qjob-2")!.status, "cancelled");
      await page.waitForFunction(`document.querySelector("#job-cancel").disabled`);
    });

    await t.step("the form keeps to what the API accepts, and shows its 400s", async () => {
      await page.select("#q-method", "leanquant-nu");
      assert.deepEqual(
        await js(
          page,
          `[document.querySelector("#q-group-size").disabled, document.querySelector("#q-group-size").value]`,
        ),
        [true, "0"],
      );
      await page.select("#q-method", "rtn");
      assert.equal(await js(page, `document.querySelector("#q-group-size").value`), "64");
      assert.equal(await js(page, `document.querySelector("#q-act-order").checked`), false);
      assert.equal(await js(page, `document.querySelector("#q-calib").disabled`), true);
      assert.equal(await js(page, `document.querySelector("#q-calib-note").hidden`), false);
      await fill(page, "#q-eval-text", ""); // perplexity ticked without a text
      await page.click("#q-start");
      await page.waitForFunction(
        `/Cannot start: Missing eval\.text/.test(document.querySelector("#q-message").textContent)`,
      );
      const body = double.posted.at(-1) as Record<string, unknown>;
      assert.equal(body.method, "rtn");
      assert.equal(body.calibration, undefined, "rtn without act order sends no calibration");
      await page.click("#q-eval");
      assert.equal(await js(page, `document.querySelector("#q-eval-ctx").disabled`), true);
      await page.click("#q-eval");
    });

    await t.step("side by side: activate A, ask, activate B, ask, each answer labelled", async () => {
      await page.click("#c-clear");
      await page.select("#c-artifact-a", "g3");
      await page.select("#c-artifact-b", "rtn4");
      await page.click("#c-compare");
      await page.waitForFunction(`/Done/.test(document.querySelector("#c-message").textContent)`, {
        timeout: 20_000,
      });
      const cards = await js<string[][]>(
        page,
        `[...document.querySelectorAll("#answers .msg")].map((c) =>
        [c.querySelector(".who").textContent, c.querySelector(".body").textContent, c.dataset.state])`,
      );
      assert.deepEqual(cards, [
        ["A g3: scripted-model · gptq 3-bit g64 · ppl 10.75", "answer from g3", "done"],
        ["B rtn4: scripted-model · rtn 4-bit g128 · ppl 12.50", "answer from rtn4", "done"],
      ]);
      assert.equal(await text(page, "#model-quant"), "rtn 4-bit g128 · ppl 12.50");
      // The artifact row's own Activate button, then a plain ask keeps the earlier answers beside the new one.
      await page.click('#artifacts-rows tr[data-artifact="g3"] button');
      await page.waitForFunction(`document.querySelector("#model-quant").textContent.startsWith("gptq")`);
      await page.click("#c-ask");
      await page.waitForFunction(
        `document.querySelectorAll('#answers .msg[data-state="done"]').length === 3`,
      );
      assert.equal(
        await text(page, "#answers .msg:last-child .who"),
        "scripted-model · gptq 3-bit g64 · ppl 10.75",
      );
    });
    await assertWellBehaved(w);
  } finally {
    await browser.close();
    await server.stop();
  }
});

/**
 * The console against the real server and the real quantization API: quantizes stories260K with gptq (4 bits,
 * g32, 4 calibration windows of 64 tokens from a file given by absolute path, perplexity on 4 windows of a
 * file given by name) through the form, follows the job over SSE to the end, checks what the page shows
 * against the job JSON the API returns, sees the hot swap in the header and the artifact list, and asks the
 * quantized model through the side-by-side view.
 */
Deno.test("console over the real server quantizes stories260K with gptq and follows the job to the end", async () => {
  const model = sharedPath("models/stories260K");
  const calibDir = sharedPath("data/calib");
  const evalDir = sharedPath("data/tinystories");
  if (!model || !calibDir || !evalDir || !(await gpuAvailable())) return;
  const calibFile = join(calibDir, "tinystories_calib_second_half.txt");
  const layers = JSON.parse(await Deno.readTextFile(join(model, "config.json"))).num_hidden_layers as number;
  const browser = await launchBrowser();
  if (!browser) return;
  const artifacts = await Deno.makeTempDir({ prefix: "leanserve-browser-artifacts-" });
  const adminKey = "browser-test-admin";
  const server = await startRealServer(model, [
    ...["--artifacts-dir", artifacts, "--calib-dir", calibDir, "--calib-dir", evalDir],
    // Where the server has admin keys the console must send one; elsewhere the header is ignored.
    ...(HELP_TEXT.includes("--admin-key") ? ["--admin-key", adminKey] : []),
  ]);
  try {
    const w = await watchedPage(browser, server.base);
    const { page } = w;
    await page.setViewport({ width: 1200, height: 900 });
    await page.evaluateOnNewDocument(
      `localStorage.setItem("leanserve.adminKey", ${JSON.stringify(adminKey)})`,
    );
    await page.goto(`${server.base}/admin`, { waitUntil: "networkidle0" });
    assert.equal(await text(page, "#model-name"), "stories260K");
    assert.equal(await text(page, "#model-quant"), "full precision");
    assert.equal(await js(page, `document.querySelector("#settings-dialog").open`), false);
    await js(
      page,
      `new MutationObserver(() => (globalThis.__layers ??= new Set()).add(document.querySelector("#job-layer").textContent))
        .observe(document.querySelector("#job-layer"), { childList: true, subtree: true, characterData: true })`,
    );
    await page.select("#q-method", "gptq");
    await page.select("#q-bits", "4");
    await fill(page, "#q-group-size", "32");
    await fill(page, "#q-calib-file", calibFile);
    await fill(page, "#q-nsamples", "4");
    await fill(page, "#q-seqlen", "64");
    await fill(page, "#q-eval-file", "tinystories_val_subset.txt");
    await fill(page, "#q-eval-ctx", "64");
    await fill(page, "#q-eval-windows", "4");
    await fill(page, "#q-name", "console-gptq4");
    await page.click("#q-start");
    await page.waitForFunction(
      `/^Started job qjob-/.test(document.querySelector("#q-message").textContent)`,
      {
        timeout: 30_000,
      },
    ).catch(async (err) => {
      throw new Error(`${err.message}: ${await text(page, "#q-message")}\n${server.logs()}`);
    });
    const id = (await text(page, "#q-message")).match(/job (qjob-\w+)/)![1];
    await page.waitForFunction(
      `["done", "failed", "cancelled"].includes(document.querySelector("#job-status").textContent)`,
      { timeout: 300_000 },
    );
    assert.equal(await text(page, "#job-status"), "done", await text(page, "#job-error"));

    const res = await fetch(`${server.base}/v1/quantize/${id}`, {
      headers: { authorization: `Bearer ${adminKey}` },
    });
    assert.equal(res.status, 200);
    const job = await res.json();
    assert.deepEqual([job.progress.layer, job.progress.layers], [layers, layers], "1-based: the last is n/n");
    assert.equal(await text(page, "#job-title"), "console-gptq4 (gptq 4-bit g32)");
    assert.equal(await text(page, "#job-layer"), `layer ${layers}/${layers}`);
    assert.equal(await text(page, "#job-percent"), "100%");
    const seen = await js<string[]>(page, `[...globalThis.__layers]`);
    const shownLayers = seen.map((t) => /^layer (\d+)\/(\d+)/.exec(t)).filter((m) => m !== null)
      .map((m) => [Number(m![1]), Number(m![2])]);
    assert.ok(shownLayers.length > 0, `layer i/n shown while the job ran: ${seen}`);
    assert.ok(
      shownLayers.every(([i, n]) => n === layers && i >= 1 && i <= layers),
      `every layer shown is 1…${layers} of ${layers}: ${seen}`,
    );
    assert.equal(await text(page, "#job-ppl-before"), job.eval.ppl_before.toFixed(3));
    assert.equal(await text(page, "#job-ppl-after"), job.eval.ppl_after.toFixed(3));
    assert.ok(
      job.eval.ppl_after > 1 && job.eval.ppl_after < 1.5 * job.eval.ppl_before,
      JSON.stringify(job.eval),
    );
    assert.equal(await text(page, "#job-artifact"), `console-gptq4 (${job.artifact.path})`);

    // Seven linears per layer, each a loss row and a chart point, plus one total point per layer.
    assert.equal(job.losses.length, 7 * layers);
    assert.equal(await js(page, `document.querySelectorAll("#loss-rows tr").length`), job.losses.length);
    assert.equal(
      await js(page, `document.querySelectorAll("#loss-chart circle").length`),
      job.losses.length + layers,
    );
    assert.equal(await js(page, `document.querySelectorAll("#loss-legend li").length`), 8);
    // The table and the axis count layers from 1, as "layer i/n" does (the JSON's loss index is 0-based).
    assert.deepEqual(
      await js(
        page,
        `[...document.querySelectorAll("#loss-rows tr td:first-child")].map((td) => td.textContent)`,
      ),
      job.losses.map((l: { layer: number }) => String(l.layer + 1)),
    );
    assert.equal(Math.min(...job.losses.map((l: { layer: number }) => l.layer)), 0);

    // The hot swap: the header, the artifact list and the jobs list follow. The header changes once the new
    // model is loaded and its step plans bound, which under the parallel suite on two cores took longer than
    // puppeteer's default 30 s once (CI, seventeenth session).
    const quant = `gptq 4-bit g32 · ppl ${job.eval.ppl_after.toFixed(2)}`;
    await page.waitForFunction(
      `document.querySelector("#model-quant").textContent === ${JSON.stringify(quant)}`,
      { timeout: 120_000 },
    ).catch(async (err) => {
      throw new Error(`${err.message}: header "${await text(page, "#model-quant")}"\n${server.logs()}`);
    });
    const row = `#artifacts-rows tr[data-artifact="console-gptq4"]`;
    assert.equal(await text(page, `${row} td:nth-child(5)`), "yes");
    assert.equal(await js(page, `document.querySelector('${row} button').disabled`), true);
    assert.deepEqual(
      await js(
        page,
        `[...document.querySelectorAll('#jobs-rows tr[data-job="${id}"] td')].slice(1, 3).map((td) => td.textContent)`,
      ),
      ["gptq 4-bit g32", "done"],
    );

    // The quantized model answers (stories260K has no chat template: the view falls back to a completion).
    await page.click("#c-ask");
    await page.waitForFunction(`document.querySelectorAll('#answers .msg[data-state="done"]').length === 1`, {
      timeout: 120_000,
    });
    assert.equal(await text(page, "#answers .msg .who"), `stories260K · ${quant}`);
    assert.ok((await text(page, "#answers .msg .body")).length > 0);
    assert.match(await text(page, "#answers .msg .meta"), / · completion$/);
    await page.screenshot({ path: join(await artifactDir(), "admin_real.png"), fullPage: true });
    await assertWellBehaved(w);
  } finally {
    await browser.close();
    await server.stop();
    await Deno.remove(artifacts, { recursive: true });
  }
});

async function gpuAvailable(): Promise<boolean> {
  const gpu = await testGpu();
  gpu?.device.destroy();
  if (!gpu && IN_CI) throw new Error("CI needs a WebGPU adapter");
  return gpu !== null;
}
