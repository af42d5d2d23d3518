/**
 * The container recipe stays in step with the code and the README (there is no Docker engine on the
 * development machines, so the image itself is not built here): the entry command is the README's start
 * command, every source folder main.ts needs is copied, and docs/kubernetes.yaml probes /health.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const read = (path: string) => Deno.readTextFileSync(join(ROOT, path));

/** Dockerfile instructions as [keyword, argument text], continuation lines joined, comments dropped. */
function instructions(text: string): [string, string][] {
  const joined = text.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n").replace(/\\\n/g, " ");
  return joined.split("\n").map((l) => l.trim()).filter((l) => l !== "")
    .map((l) => {
      const m = /^(\w+)\s+(.*)$/.exec(l)!;
      return [m[1].toUpperCase(), m[2].trim()];
    });
}

/** The first command of the README's Quick start code block. */
function readmeStartCommand(): string {
  const readme = read("README.md");
  const quick = readme.slice(readme.indexOf("## Quick start"));
  const block = /```sh\n([\s\S]*?)```/.exec(quick)![1];
  return block.split("\n")[0].replace(/#.*$/, "").trim();
}

/**
 * Top-level files and folders reached by main.ts's relative imports (static, dynamic and text imports) and
 * the Workers it starts (`new Worker(new URL("./…", import.meta.url))`).
 */
function sourceRoots(): Set<string> {
  const seen = new Set<string>();
  const todo = [join(ROOT, "main.ts")];
  const importRe = /(?:from\s*|import\s*\(\s*|import\s+|new URL\(\s*)["'](\.[^"']+)["']/g;
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    if (!file.endsWith(".ts")) continue;
    // Doc comments hold example imports (`@example`) that are not part of the program.
    const code = Deno.readTextFileSync(file).replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    for (const m of code.matchAll(importRe)) todo.push(resolve(dirname(file), m[1]));
  }
  return new Set([...seen].map((f) => relative(ROOT, f).split("/")[0]));
}

/** The modules main.ts starts as Workers, directly or from a Worker (`new Worker(new URL("./…", …))`). */
function workerModules(): string[] {
  const seen = new Set<string>();
  const workers = new Set<string>();
  const todo = [join(ROOT, "main.ts")];
  const importRe = /(?:from\s*|import\s*\(\s*|import\s+)["'](\.[^"']+)["']/g;
  const workerRe = /new Worker\(\s*new URL\(\s*["'](\.[^"']+)["']/g;
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file) || !file.endsWith(".ts")) continue;
    seen.add(file);
    const code = Deno.readTextFileSync(file).replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    for (const m of code.matchAll(importRe)) todo.push(resolve(dirname(file), m[1]));
    for (const m of code.matchAll(workerRe)) {
      const worker = resolve(dirname(file), m[1]);
      workers.add(relative(ROOT, worker));
      todo.push(worker);
    }
  }
  return [...workers];
}

Deno.test("Dockerfile runs the README's start command as a non-root user", () => {
  const steps = instructions(read("Dockerfile"));
  const json = (key: string) => steps.filter(([k]) => k === key).map(([, v]) => JSON.parse(v) as string[]);
  const entry = [...(json("ENTRYPOINT").at(-1) ?? []), ...(json("CMD").at(-1) ?? [])].join(" ");
  assert.equal(readmeStartCommand(), "deno task start");
  assert.equal(entry, readmeStartCommand());
  const user = steps.filter(([k]) => k === "USER").at(-1)?.[1];
  assert.ok(user !== undefined && user !== "root" && user !== "0", `USER ${user}`);
});

Deno.test("Dockerfile copies every source folder main.ts imports and caches dependencies after them", () => {
  const steps = instructions(read("Dockerfile"));
  const copied = new Set(
    steps.filter(([k]) => k === "COPY")
      .flatMap(([, v]) => v.split(/\s+/).filter((a) => !a.startsWith("--")).slice(0, -1))
      .map((src) => src.replace(/\/$/, "")),
  );
  const roots = sourceRoots();
  for (
    const needed of [
      "main.ts",
      "engine_worker.ts",
      "config.ts",
      "server",
      "inference",
      "kernels",
      "quant",
      "cli",
    ]
  ) {
    assert.ok(roots.has(needed), `main.ts no longer imports ${needed}: update this test`);
  }
  for (const root of [...roots, "deno.json", "deno.lock"]) assert.ok(copied.has(root), `COPY ${root}`);
  // Every entry point: main.ts and each Worker's module (loaded by URL, outside main.ts's import graph), so
  // their imports are cached too.
  const install = steps.findIndex(([k, v]) =>
    k === "RUN" && v.startsWith("deno install --entrypoint main.ts")
  );
  assert.ok(install >= 0, "RUN deno install --entrypoint main.ts …");
  const entries = steps[install][1].split(/\s+/).slice(3);
  for (const worker of workerModules()) {
    assert.ok(entries.includes(worker), `deno install --entrypoint … ${worker}`);
  }
  const lastCopy = steps.findLastIndex(([k]) => k === "COPY");
  assert.ok(install > lastCopy, "deno install runs after the sources are copied");
});

Deno.test("Dockerfile listens on all interfaces, keeps the caches on volumes and checks /health", () => {
  const steps = instructions(read("Dockerfile"));
  const env = steps.filter(([k]) => k === "ENV").map(([, v]) => v).join(" ");
  assert.match(env, /\bHOST=0\.0\.0\.0\b/);
  assert.match(env, /\bHF_HOME=\/data\/hf\b/);
  assert.match(env, /\bNVIDIA_DRIVER_CAPABILITIES=all\b/);
  const volumes = steps.filter(([k]) => k === "VOLUME").flatMap(([, v]) => JSON.parse(v));
  assert.deepEqual(volumes.sort(), ["/data/artifacts", "/data/hf"]);
  const health = steps.find(([k]) => k === "HEALTHCHECK")?.[1] ?? "";
  assert.match(health, /\/health/);
});

Deno.test("docs/kubernetes.yaml runs replicas on a shared claim, ready when /health is", () => {
  const docs = read("docs/kubernetes.yaml").split(/^---$/m);
  const kind = (k: string) => docs.find((d) => new RegExp(`^kind: ${k}$`, "m").test(d)) ?? "";
  const deployment = kind("Deployment");
  const claim = /^metadata:\n\s+name: (\S+)/m.exec(kind("PersistentVolumeClaim"))?.[1];
  assert.ok(kind("Service") !== "");
  assert.match(kind("PersistentVolumeClaim"), /ReadWriteMany/);
  assert.ok(Number(/^\s+replicas: (\d+)/m.exec(deployment)?.[1]) >= 2);
  assert.match(deployment, /readinessProbe:\n\s+httpGet:\n\s+path: \/health\n/);
  assert.match(deployment, new RegExp(`claimName: ${claim}\\n`));
  assert.match(deployment, /mountPath: \/data\/hf\n/);
  assert.match(deployment, /containerPort: 8000\n/);
  assert.match(read("README.md"), /docs\/kubernetes\.yaml/);
});
