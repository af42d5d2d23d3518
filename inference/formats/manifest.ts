/**
 * `leanserve-manifest.json`: the checksum manifest of a quantized folder (an "artifact"). It lists the
 * sha256 of every other file in the folder plus what the writer wants to record (source model, options,
 * perplexity). It is written last, inside the still-hidden temporary folder, so a folder with a manifest is
 * complete; loading verifies every checksum and refuses a folder that differs, naming the file.
 */
import { createHash } from "node:crypto";
import { join, relative } from "node:path";

/** The manifest's file name. */
export const MANIFEST_FILE = "leanserve-manifest.json";

/** The manifest's format tag and version. */
export const MANIFEST_FORMAT = "leanserve-artifact";
export const MANIFEST_VERSION = 1;

/** A parsed manifest: `files` maps a path relative to the folder to its sha256 (hex). */
export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  files: Record<string, string>;
  /** Whatever the writer recorded beside the checksums (name, source, options, eval, created_at). */
  [key: string]: unknown;
}

/**
 * Hashes every file of `dir` (recursively, the manifest itself excluded) and writes the manifest.
 * @param dir the finished folder
 * @param record fields stored beside the checksums
 * @returns the manifest written
 */
export async function writeManifest(dir: string, record: Record<string, unknown>): Promise<Manifest> {
  const files: Record<string, string> = {};
  for (const path of await listFiles(dir)) files[path] = await sha256File(join(dir, path));
  const manifest: Manifest = { ...record, format: MANIFEST_FORMAT, version: MANIFEST_VERSION, files };
  await Deno.writeTextFile(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

/**
 * Reads a folder's manifest without checking the files (cheap; for listings).
 * @param dir the folder
 * @returns the manifest, or null when the folder has none; throws when it is not a valid manifest
 */
export async function readManifest(dir: string): Promise<Manifest | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, MANIFEST_FILE));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return null;
    throw err;
  }
  let m: Manifest;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot read "${join(dir, MANIFEST_FILE)}": ${(err as Error).message}`);
  }
  if (m?.format !== MANIFEST_FORMAT || m.version !== MANIFEST_VERSION || typeof m.files !== "object") {
    throw new Error(
      `Cannot read "${join(dir, MANIFEST_FILE)}": not a ${MANIFEST_FORMAT} v${MANIFEST_VERSION} manifest`,
    );
  }
  return m;
}

/**
 * Checks every file against the manifest: each listed file exists with its checksum, and no other file is
 * there (a file added to a published folder is as suspect as a changed one).
 * @param dir the folder
 * @returns the manifest, or null when the folder has none
 */
export async function verifyManifest(dir: string): Promise<Manifest | null> {
  const m = await readManifest(dir);
  if (!m) return null;
  const fail = (msg: string): never => {
    throw new Error(
      `Cannot load "${dir}": ${msg} (${MANIFEST_FILE}); the folder was changed or is incomplete`,
    );
  };
  const present = new Set(await listFiles(dir));
  for (const [path, sum] of Object.entries(m.files)) {
    if (!present.has(path)) fail(`file "${path}" is missing`);
    if (await sha256File(join(dir, path)) !== sum) fail(`file "${path}" does not match its checksum`);
    present.delete(path);
  }
  const extra = [...present][0];
  if (extra !== undefined) fail(`file "${extra}" is not listed`);
  return m;
}

/** sha256 of a file, streamed (hex). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk); // the stream closes the file at its end
  return hash.digest("hex");
}

/** Regular files under `dir`, relative paths with "/" separators, the manifest excluded, sorted. */
async function listFiles(dir: string, root = dir): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) out.push(...await listFiles(path, root));
    else if (e.isFile) {
      const rel = relative(root, path).split("\\").join("/");
      if (rel !== MANIFEST_FILE) out.push(rel);
    } else throw new Error(`Cannot checksum "${path}": only plain files belong in a model folder`);
  }
  return out.sort();
}
