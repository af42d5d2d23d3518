/**
 * The artifact directory (`--artifacts-dir`): one folder per quantized model, each published by a rename
 * from a hidden temporary folder once it is complete and carries its checksum manifest
 * (formats/manifest.ts). Names are deterministic for a source revision and a set of options, so the server's
 * startup quantization finds its earlier result and serves it at once.
 *
 *   <model>-<rev12>-<method>-<bits>b-g<group>-<hash8>
 *
 * rev12: the hub snapshot's commit for a folder inside a Hugging Face cache (`…/snapshots/<sha>/`), else a
 * hash of config.json and the weight files' names, sizes and modification times. hash8: sha256 of every
 * option, the calibration text's sha256 (or the built-in source's version) included.
 */
import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import { readManifest } from "../formats/mod.ts";

/** Prefix of an unfinished artifact's temporary folder; such folders are never listed or loadable. */
export const PARTIAL_MARK = ".partial-";

/** One entry of GET /v1/artifacts. */
export interface ArtifactJson {
  name: string;
  path: string;
  method: string | null;
  bits: number | null;
  group_size: number | null;
  /** Unix seconds. */
  created_at: number | null;
  /** Perplexity of the artifact when its job evaluated it, else null. */
  ppl: number | null;
  /** True for the artifact the server serves now. */
  active: boolean;
}

/**
 * A revision id of a model folder (see the module comment).
 * @param dir the full-precision folder
 * @returns 40 or 64 hex digits
 */
export async function modelRevision(dir: string): Promise<string> {
  const real = await Deno.realPath(dir);
  const snap = real.match(/[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)/);
  if (snap) return snap[1];
  const hash = createHash("sha256");
  hash.update(await Deno.readFile(join(real, "config.json")));
  const names: string[] = [];
  for await (const e of Deno.readDir(real)) {
    if (/\.(safetensors|json)$/.test(e.name) && e.name !== "config.json") names.push(e.name);
  }
  for (const name of names.sort()) {
    const st = await Deno.stat(join(real, name));
    hash.update(`\n${name}\t${st.size}\t${st.mtime?.getTime() ?? 0}`);
  }
  return hash.digest("hex");
}

/** The model's short name: the repo's name for a hub snapshot, else the folder's name. */
export function modelShortName(realDir: string): string {
  const repo = realDir.match(/models--[^\\/]*?--([^\\/]+)[\\/]snapshots[\\/]/);
  const name = repo ? repo[1] : basename(realDir);
  return name.replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[._-]+/, "") || "model";
}

/**
 * The deterministic artifact name.
 * @param model the model's short name
 * @param revision from modelRevision
 * @param options the request as requestToJson writes it, with calibration text replaced by its identity
 * @returns e.g. "SmolLM2-360M-Instruct-a1b2c3d4e5f6-leanquant-aff-4b-g128-0f1e2d3c"
 */
export function artifactName(model: string, revision: string, options: Record<string, unknown>): string {
  const hash = createHash("sha256").update(canonicalJson(options)).digest("hex").slice(0, 8);
  return `${model}-${
    revision.slice(0, 12)
  }-${options.method}-${options.bits}b-g${options.group_size}-${hash}`;
}

/**
 * The published artifacts: folders not starting with "." that hold a readable manifest (checksums are
 * verified when one is loaded, not when listed).
 * @param dir the artifact directory (absent: none)
 * @param activeDir the served model's folder, to mark it
 * @returns newest first
 */
export async function listArtifacts(dir: string, activeDir: string | null): Promise<ArtifactJson[]> {
  const out: ArtifactJson[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  for (const e of entries) {
    if (!e.isDirectory || e.name.startsWith(".")) continue;
    const path = join(dir, e.name);
    const m = await readManifest(path).catch(() => null);
    if (!m) continue;
    const q = (m.quantization ?? {}) as Record<string, unknown>;
    const ev = (m.eval ?? null) as Record<string, unknown> | null;
    const real = await Deno.realPath(path);
    out.push({
      name: e.name,
      path: real,
      method: typeof q.method === "string" ? q.method : null,
      bits: typeof q.bits === "number" ? q.bits : null,
      group_size: typeof q.group_size === "number" ? q.group_size : null,
      created_at: typeof m.created_at === "number" ? m.created_at : null,
      ppl: typeof ev?.ppl_after === "number" ? ev.ppl_after : null,
      active: activeDir !== null && real === activeDir,
    });
  }
  return out.sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0) || a.name.localeCompare(b.name));
}

/** JSON with sorted keys, so equal options hash equally whatever their order. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/**
 * The full-precision folder behind a served folder: the folder itself when it is not quantized, the source
 * its manifest records when it is one of our artifacts, else null (a foreign quantized checkpoint).
 * @param dir the folder given to --model
 * @returns the folder to read source weights from, or null
 */
export async function sourceOfModel(dir: string): Promise<string | null> {
  const m = await readManifest(dir).catch(() => null);
  const recorded = (m?.source as { model?: unknown } | undefined)?.model;
  if (typeof recorded === "string") return recorded;
  try {
    const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    return config.quantization_config ? null : dir;
  } catch {
    return dir; // loading reports the real problem
  }
}
