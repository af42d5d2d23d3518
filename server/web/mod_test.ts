import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createApp } from "../app.ts";
import type { Engine } from "../../inference/engine/types.ts";
import { CONTENT_SECURITY_POLICY, webRoutes } from "./mod.ts";

const DIR = new URL(".", import.meta.url).pathname;
const FILES = readdirSync(DIR).filter((f) => /\.(js|html|css|svg)$/.test(f));
const read = (f: string) => readFileSync(join(DIR, f), "utf8");

const engine: Engine = {
  status: () => ({ state: "ready", detail: "", modelId: "m", contextLength: 8, hasChatTemplate: true }),
  generate: () => {
    throw new Error("not used");
  },
};

Deno.test("web routes serve both pages and every asset with type, ETag, no-cache and the CSP", async () => {
  const app = createApp({ engine, config: {} });
  for (const [path, type] of [["/", "text/html"], ["/admin", "text/html"]]) {
    const res = await app.request(path);
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get("content-type") ?? "", new RegExp(`^${type}`));
    assert.equal(res.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY);
    await res.body?.cancel();
  }
  for (const file of FILES.filter((f) => !f.endsWith(".html"))) {
    const res = await app.request(`/web/${file}`);
    assert.equal(res.status, 200, file);
    const type = { js: "text/javascript", css: "text/css", svg: "image/svg+xml" }[file.split(".").pop()!]!;
    assert.ok(
      res.headers.get("content-type")?.startsWith(type),
      `${file}: ${res.headers.get("content-type")}`,
    );
    assert.equal(res.headers.get("cache-control"), "no-cache");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.match(res.headers.get("etag") ?? "", /^"[\w-]{22}"$/);
    assert.equal(await res.text(), read(file), `${file} is served as it is in the repo`);
  }
  assert.match(CONTENT_SECURITY_POLICY, /default-src 'self'/);
  assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval|\*/);
});

Deno.test("web routes answer 304 to a matching If-None-Match and 404 in OpenAI's shape for unknown assets", async () => {
  const app = createApp({ engine, config: {} });
  const first = await app.request("/web/chat.js");
  const etag = first.headers.get("etag")!;
  await first.body?.cancel();
  for (const header of [etag, `W/${etag}`, `"other", ${etag}`, "*"]) {
    const res = await app.request("/web/chat.js", { headers: { "if-none-match": header } });
    assert.equal(res.status, 304, header);
    assert.equal(res.headers.get("etag"), etag);
    assert.equal(await res.text(), "");
  }
  const changed = await app.request("/web/chat.js", { headers: { "if-none-match": '"stale"' } });
  assert.equal(changed.status, 200);
  await changed.body?.cancel();
  const missing = await app.request("/web/nope.js");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.type, "not_found_error");
  assert.equal((await webRoutes().request("/web/..%2Fmod.ts")).status, 404);
});

Deno.test("pages reference only assets that are served, and nothing on another host", async () => {
  const app = webRoutes();
  for (const file of FILES) {
    const text = read(file);
    // The SVG namespace is an identifier, not a request.
    const urls = text.match(/\b(?:https?:)?\/\/[^\s"'`)]+/g)?.filter((u) =>
      !u.includes("www.w3.org/2000/svg")
    );
    const comments = /^\s*(\/\/|\*|\/\*)/;
    const external = (urls ?? []).filter((u) =>
      !text.split("\n").some((l) => l.includes(u) && comments.test(l))
    );
    assert.deepEqual(external, [], `${file} names another host`);
    const refs = [
      ...text.matchAll(/(?:src|href)="(\/[^"]*)"/g),
      ...text.matchAll(/\bfrom\s+"\.\/([^"]+)"/g),
    ].map((m) => (m[1].startsWith("/") ? m[1] : `/web/${m[1]}`));
    for (const ref of refs) {
      const res = await app.request(ref);
      assert.equal(res.status, 200, `${file} refers to ${ref}`);
      await res.body?.cancel();
    }
  }
  for (const page of ["index.html", "admin.html"]) {
    assert.doesNotMatch(read(page), /<script(?![^>]*\bsrc=)[^>]*>/, `${page} has an inline script`);
    assert.doesNotMatch(read(page), /\sstyle=|<style|\son[a-z]+=/, `${page} has inline style or handlers`);
    const ids = new Set([...read(page).matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]));
    for (const label of read(page).matchAll(/<label for="([^"]+)"/g)) {
      assert.ok(ids.has(label[1]), `${page}: label for missing #${label[1]}`);
    }
    for (const control of read(page).matchAll(/<(input|select|textarea)\b[^>]*\bid="([^"]+)"/g)) {
      const labelled = read(page).includes(`for="${control[2]}"`) ||
        new RegExp(`<label[^>]*>\\s*<${control[1]}[^>]*id="${control[2]}"`).test(read(page));
      assert.ok(labelled, `${page}: #${control[2]} has no label`);
    }
  }
});

Deno.test("page scripts never turn text into markup", () => {
  for (const file of FILES.filter((f) => f.endsWith(".js"))) {
    const code = read(file).split("\n").filter((l) => !/^\s*(\/\/|\*)/.test(l)).join("\n");
    assert.doesNotMatch(
      code,
      /innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/,
      file,
    );
  }
});

Deno.test("page scripts type-check as strict JavaScript against the DOM", async () => {
  const files = FILES.filter((f) => f.endsWith(".js")).map((f) => join(DIR, f));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--quiet", "--config", join(DIR, "check.json"), ...files],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
});
