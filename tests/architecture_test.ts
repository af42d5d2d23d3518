/**
 * Enforces the dependency direction (style.md B):
 * main.ts → server/ → inference/ → quant/ → kernels/, plus inference/ → kernels/. kernels/ is a leaf,
 * and server/ imports only inference/engine.ts and inference/types.ts.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const LAYERS = ["main", "server", "inference", "quant", "kernels"] as const;
type Layer = (typeof LAYERS)[number] | "config" | "tests" | "bench" | "other";

const ALLOWED: Record<string, readonly string[]> = {
  main: ["config", "server", "inference", "quant", "kernels"],
  config: [],
  server: ["inference", "config"],
  inference: ["quant", "kernels"],
  quant: ["kernels"],
  kernels: [],
};

function layerOf(file: string): Layer {
  const rel = relative(ROOT, file);
  if (rel === "main.ts") return "main";
  if (rel === "config.ts" || rel === "deno.json") return "config"; // deno.json: the version, read by /version
  if (rel.startsWith("cli/")) return "main";
  const top = rel.split("/")[0];
  if ((LAYERS as readonly string[]).includes(top)) return top as Layer;
  if (top === "tests" || top === "bench") return top;
  return "other";
}

function* sourceFiles(dir: string): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (
      entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts") && !entry.name.endsWith("_bench.ts")
    ) {
      yield path;
    }
  }
}

Deno.test("imports follow main → server → inference → quant → kernels", () => {
  const violations: string[] = [];
  const importRe = /(?:^|\n)\s*(?:import|export)[^"'`]*?from\s*["']([^"']+)["']/g;
  for (const file of sourceFiles(ROOT)) {
    const from = layerOf(file);
    if (!(from in ALLOWED)) continue;
    const text = Deno.readTextFileSync(file);
    for (const m of text.matchAll(importRe)) {
      const spec = m[1];
      if (!spec.startsWith(".")) continue;
      const target = resolve(dirname(file), spec);
      const to = layerOf(target);
      if (to === from) continue;
      if (!ALLOWED[from].includes(to)) violations.push(`${relative(ROOT, file)} → ${relative(ROOT, target)}`);
      if (from === "server" && to === "inference" && !/inference\/(engine|types)\.ts$/.test(target)) {
        violations.push(
          `${relative(ROOT, file)} → ${relative(ROOT, target)} (server sees only engine.ts and types.ts)`,
        );
      }
    }
  }
  assert.deepEqual(violations, [], `Imports against the dependency direction:\n${violations.join("\n")}`);
});
