/**
 * Enforces the folder graph (docs/architecture.md): which concern folder may import which, that another
 * folder is reached only through its `mod.ts` face, and that no import cycle exists between files.
 * main.ts (and cli/, and engine_worker.ts, the engine's Worker) → server/ and inference/remote →
 * inference/engine → inference/model → inference/formats; inference/quantize beside the engine; inference/hub
 * a leaf that only the composition roots use; quant/ under inference; kernels/ a leaf of four folders.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");

/** Folder → the folders it may import (its own files are always allowed). */
const ALLOWED: Record<string, readonly string[]> = {
  "main": [
    "config",
    "server",
    "inference/engine",
    "inference/model",
    "inference/text",
    "inference/quantize",
    "inference/formats",
    "inference/jobs",
    "inference/hub",
    "inference/remote",
    "quant",
    "quant/reference",
    "kernels/core",
    "kernels/ops",
    "kernels/matmul",
    "kernels/quant",
  ],
  // config.ts parses --quantize with the request validator the CLI and HTTP share (inference/quantize/options.ts).
  "config": ["quant", "inference/quantize"],
  // The admin routes (/v1/quantize, /v1/artifacts) talk to the job manager.
  "server": ["config", "inference/engine", "inference/jobs"],
  // load_model.ts verifies an artifact's checksum manifest (formats/manifest.ts) before reading it.
  "inference/engine": [
    "inference/model",
    "inference/text",
    "inference/structured",
    "inference/formats",
    "kernels/core",
    "kernels/ops",
  ],
  // Quantization jobs: read the source from disk, run the pipeline, write and verify artifacts, hot-swap.
  "inference/jobs": [
    "inference/engine",
    "inference/model",
    "inference/quantize",
    "inference/formats",
    "inference/text",
    "quant",
    "kernels/core",
  ],
  "inference/quantize": [
    // `--calib self` samples calibration text with the engine's sequence runner (self_calibration.ts).
    "inference/engine",
    "inference/model",
    "inference/text",
    "inference/formats",
    "quant",
    "kernels/core",
    "kernels/ops",
    "kernels/quant",
  ],
  "inference/model": ["inference/formats", "quant", "kernels/core", "kernels/ops", "kernels/matmul"],
  // The engine in a Worker: the HTTP thread's client and the Worker's host speak the engine's and the jobs'
  // interfaces, and carry grammars packed (structured/grammar_transfer.ts).
  "inference/remote": ["inference/engine", "inference/jobs", "inference/structured"],
  "inference/text": [],
  // Structured output knows bytes and JSON Schema, not tokenizers or the GPU: the engine hands it token bytes.
  "inference/structured": [],
  "inference/formats": [],
  // Model sources know files and HTTP, not the GPU or the model: main.ts hands in the config.json check.
  "inference/hub": [],
  "quant": ["quant/reference", "kernels/core", "kernels/quant", "kernels/matmul"],
  // The f64 spec shares only the contract's types with the GPU quantizer.
  "quant/reference": ["quant/types", "kernels/core"],
  "kernels/core": [],
  "kernels/ops": ["kernels/core"],
  "kernels/matmul": ["kernels/core", "kernels/ops"],
  "kernels/quant": ["kernels/core"],
};

/**
 * The concern folder a file belongs to ("main" for the composition roots, main.ts and engine_worker.ts, and
 * cli/; null for tests, bench, fixtures).
 */
function folderOf(file: string): string | null {
  const rel = relative(ROOT, file);
  if (rel === "main.ts" || rel === "engine_worker.ts" || rel.startsWith("cli/")) return "main";
  if (rel === "config.ts" || rel === "deno.json") return "config"; // deno.json: the version, read by /version
  if (rel === "quant/types.ts") return "quant/types";
  const dir = dirname(rel);
  if (dir.startsWith("server")) return "server";
  if (dir in ALLOWED) return dir;
  return null;
}

/** A folder's face: what other folders import. */
function isFace(file: string, folder: string): boolean {
  if (folder === "quant/types") return true;
  return folder === "config" || relative(ROOT, file) === `${folder}/mod.ts`;
}

function* sourceFiles(dir: string): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) yield path;
  }
}

const IMPORT_RE = /(?:^|\n)\s*(?:import|export)[^"'`]*?from\s*["']([^"']+)["']/g;

/**
 * Every relative import of the non-test sources, JSON modules included (server/ reads deno.json's version):
 * file → resolved targets. With `values`, only imports that load a module at run time (`import type` is
 * erased, so it orders no evaluation and forms no real cycle).
 */
function importGraph({ values = false } = {}): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(ROOT)) {
    const text = Deno.readTextFileSync(file);
    const targets = [...text.matchAll(IMPORT_RE)]
      .filter((m) => !values || !/^\s*(import|export)\s+type\b/.test(m[0]))
      .map((m) => m[1]).filter((s) => s.startsWith("."))
      .map((s) => resolve(dirname(file), s)).filter((t) => t.endsWith(".ts") || t.endsWith(".json"));
    graph.set(file, targets);
  }
  return graph;
}

Deno.test("imports follow the folder graph, through each folder's mod.ts", () => {
  const violations: string[] = [];
  for (const [file, targets] of importGraph()) {
    const from = folderOf(file);
    if (from === null || from === "quant/types") continue;
    for (const target of targets) {
      const to = folderOf(target);
      const edge = `${relative(ROOT, file)} → ${relative(ROOT, target)}`;
      if (to === null) {
        violations.push(`${edge} (sources never import tests or bench)`);
        continue;
      }
      if (to === from || (from === "quant" && to === "quant/types")) continue;
      if (!ALLOWED[from].includes(to) && !(to === "quant/types" && ALLOWED[from].includes("quant"))) {
        violations.push(`${edge} (${from} may not import ${to})`);
      } else if (from !== "main" && !isFace(target, to)) {
        violations.push(`${edge} (import ${to}/mod.ts instead)`);
      }
    }
  }
  assert.deepEqual(violations, [], `Imports against the folder graph:\n${violations.join("\n")}`);
});

Deno.test("source files load each other without cycles", () => {
  const graph = importGraph({ values: true });
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].map((f) => relative(ROOT, f)).join(" → "));
      return;
    }
    state.set(file, "open");
    for (const t of graph.get(file) ?? []) visit(t, [...path, file]);
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file, []);
  assert.deepEqual(cycles, [], `Import cycles:\n${cycles.join("\n")}`);
});

Deno.test("every concern folder has a mod.ts face", () => {
  const missing = Object.keys(ALLOWED).filter((f) => f.includes("/") && f !== "quant/types")
    .filter((f) => {
      try {
        Deno.statSync(join(ROOT, f));
      } catch {
        return false; // a folder planned in ALLOWED but not created yet needs no face
      }
      try {
        Deno.statSync(join(ROOT, f, "mod.ts"));
        return false;
      } catch {
        return true;
      }
    });
  assert.deepEqual(missing, [], `Folders without mod.ts: ${missing.join(", ")}`);
});
