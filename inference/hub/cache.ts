/**
 * The Hugging Face hub cache layout, as huggingface_hub writes it, so that both sides share one cache:
 *
 *   <cacheDir>/models--org--name/refs/<revision>             the commit a branch or tag resolved to
 *   <cacheDir>/models--org--name/blobs/<etag>                file contents, named by the hub's etag
 *   <cacheDir>/models--org--name/blobs/<etag>.incomplete     a download in progress (resumable)
 *   <cacheDir>/models--org--name/snapshots/<commit>/<file>   relative symlink into ../../blobs/
 *   <cacheDir>/.locks/models--org--name/<etag>.lock          flock held while a blob downloads
 *
 * See huggingface_hub's file_download.py (`hf_hub_download`, `_create_symlink`, `_cache_commit_hash_for_specific_revision`).
 */
import { dirname, join, relative } from "node:path";
import { repoFolderName } from "./repo_id.ts";

/** Paths of one repo in the cache. */
export interface RepoCache {
  /** `<cacheDir>/models--org--name`. */
  readonly root: string;
  /** `<cacheDir>/.locks/models--org--name`. */
  readonly locksDir: string;
}

/**
 * The cache paths of a repo.
 * @param cacheDir the hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`)
 * @param repoId `org/name`
 * @returns the repo's folders
 */
export function repoCache(cacheDir: string, repoId: string): RepoCache {
  const folder = repoFolderName(repoId);
  return { root: join(cacheDir, folder), locksDir: join(cacheDir, ".locks", folder) };
}

/** `blobs/<etag>` of a repo. */
export function blobPath(cache: RepoCache, etag: string): string {
  return join(cache.root, "blobs", etag);
}

/** `snapshots/<commit>` of a repo: the folder the model is served from. */
export function snapshotDir(cache: RepoCache, commit: string): string {
  return join(cache.root, "snapshots", commit);
}

/**
 * Reads `refs/<revision>`.
 * @returns the commit, or null when the revision was never resolved into this cache
 */
export async function readRef(cache: RepoCache, revision: string): Promise<string | null> {
  try {
    const commit = (await Deno.readTextFile(join(cache.root, "refs", revision))).trim();
    return commit === "" ? null : commit;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Writes `refs/<revision>` = commit, through a rename so that a reader never sees half a ref. */
export async function writeRef(cache: RepoCache, revision: string, commit: string): Promise<void> {
  const path = join(cache.root, "refs", revision);
  if ((await readRef(cache, revision)) === commit) return;
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, commit);
  await Deno.rename(tmp, path);
}

/**
 * Links `snapshots/<commit>/<file>` to `blobs/<etag>` with a relative symlink, as huggingface_hub does, so
 * the cache can be moved or mounted elsewhere (a container volume) and stays valid.
 */
export async function linkSnapshotFile(
  cache: RepoCache,
  commit: string,
  file: string,
  etag: string,
): Promise<void> {
  const pointer = join(snapshotDir(cache, commit), file);
  const target = relative(dirname(pointer), blobPath(cache, etag));
  await Deno.mkdir(dirname(pointer), { recursive: true });
  const existing = await Deno.readLink(pointer).catch(() => null);
  if (existing === target) return;
  await Deno.remove(pointer).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  try {
    await Deno.symlink(target, pointer);
  } catch (err) {
    // Another process linked the same file meanwhile; its link is as good as ours if it points the same way.
    if (!(err instanceof Deno.errors.AlreadyExists) || (await Deno.readLink(pointer)) !== target) throw err;
  }
}

/** True when `path` is a file, following symlinks (a snapshot link whose blob is gone is not a file). */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Runs `fn` holding the exclusive lock of one blob (`.locks/models--org--name/<etag>.lock`, an flock as
 * Python's filelock takes), so that two servers sharing a cache volume, or a server and a Python tool, never
 * write the same `.incomplete` file at once.
 */
export async function withBlobLock<T>(cache: RepoCache, etag: string, fn: () => Promise<T>): Promise<T> {
  await Deno.mkdir(cache.locksDir, { recursive: true });
  using file = await Deno.open(join(cache.locksDir, `${etag}.lock`), { create: true, write: true });
  await file.lock(true);
  try {
    return await fn();
  } finally {
    await file.unlock();
  }
}
