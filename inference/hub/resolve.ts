/**
 * `resolveModel`: turns a `--model` value into a local folder. A folder is used as it is; a repo id
 * `org/name[@revision]` is resolved through the Hugging Face cache, downloading only the files the server
 * needs when they are not there yet (or, offline, only from the cache).
 */
import { dirname, join } from "node:path";
import { HubError } from "./errors.ts";
import type { HubClient } from "./http.ts";
import { downloadBlob, fetchFileMeta, fetchRepoInfo, type FileMeta } from "./download.ts";
import {
  blobPath,
  isFile,
  linkSnapshotFile,
  readRef,
  type RepoCache,
  repoCache,
  snapshotDir,
  withBlobLock,
  writeRef,
} from "./cache.ts";
import { planMetadata, REQUIRED_FILES, weightFiles, WEIGHTS_FILE, WEIGHTS_INDEX } from "./files.ts";
import { checkRepoFile, isCommitHash, parseRepoSpec, type RepoSpec } from "./repo_id.ts";
import { createProgressTracker, type DownloadProgress } from "./progress.ts";

/** How to reach the hub and where its cache is; config.ts builds this from the environment. */
export interface HubOptions {
  /** The hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`). */
  cacheDir: string;
  /** Sent as `Authorization: Bearer` to the endpoint only; null or absent for none. */
  token?: string | null;
  /** Read for a token when `token` is null (`huggingface-cli login` writes `$HF_HOME/token`). */
  tokenFile?: string | null;
  /** Resolve only from the cache (HF_HUB_OFFLINE). */
  offline?: boolean;
  /** Default "https://huggingface.co" (HF_ENDPOINT). */
  endpoint?: string;
}

/** Options of one resolve: the hub settings plus callbacks. */
export interface ResolveOptions extends HubOptions {
  /** Download progress, at most every 100 ms and once at the end of each file. */
  onProgress?: (progress: DownloadProgress) => void;
  /** Non-fatal news, e.g. "hub unreachable, serving the cached snapshot". */
  onWarning?: (message: string) => void;
  /** Validates config.json before any weights are downloaded; throws to stop (unsupported architecture). */
  checkConfig?: (config: Record<string, unknown>, source: string) => void;
}

/** Where a model was found. */
export interface ResolvedModel {
  /** The folder to load: the local folder, or `snapshots/<commit>` in the cache. */
  dir: string;
  repoId: string | null;
  revision: string | null;
  commit: string | null;
}

/** Spec shapes that can only mean a local path. */
const PATH_LIKE = /^(\/|\.|~)|\\/;

/**
 * Resolves a local folder or a Hugging Face repo id to a folder holding the model's files.
 * @param spec a folder, or `org/name[@revision]` (revision default "main")
 * @param options the cache, token, endpoint, offline flag and callbacks
 * @returns the folder and, for a repo, the repo id, revision and commit
 * @example
 * ```ts ignore
 * const { dir } = await resolveModel("HuggingFaceTB/SmolLM2-360M-Instruct", { cacheDir: "/data/hf/hub" });
 * ```
 */
export async function resolveModel(spec: string, options: ResolveOptions): Promise<ResolvedModel> {
  const stat = await Deno.stat(spec).catch(() => null);
  if (stat?.isDirectory) return { dir: spec, repoId: null, revision: null, commit: null };
  const repo = PATH_LIKE.test(spec) ? null : parseRepoSpec(spec);
  if (stat || repo === null) {
    const why = stat
      ? "not a folder"
      : "no such folder, and not a Hugging Face repo id (org/name[@revision])";
    throw new HubError("invalid", `Cannot find model folder "${spec}": ${why}`);
  }
  const cache = repoCache(options.cacheDir, repo.repoId);
  if (options.offline) {
    return await fromCache(cache, repo, options.cacheDir, "HF_HUB_OFFLINE is set").catch((err) => {
      if (!(err instanceof HubError)) throw err;
      throw new HubError(err.kind, `${err.message} (and there is no local folder "${spec}")`);
    });
  }
  const client: HubClient = {
    endpoint: (options.endpoint ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: options.token || await readToken(options.tokenFile ?? null),
  };
  let info;
  try {
    info = await fetchRepoInfo(client, repo.repoId, repo.revision);
  } catch (err) {
    if (err instanceof HubError && err.kind === "network") {
      const cached = await fromCache(cache, repo, options.cacheDir, err.message).catch(() => null);
      if (cached === null) {
        throw new HubError(
          "network",
          `${err.message}; "${spec}" is not in the cache "${options.cacheDir}" either`,
        );
      }
      options.onWarning?.(`${err.message}; serving "${spec}" from the cache (commit ${cached.commit})`);
      return cached;
    }
    if (err instanceof HubError && err.kind === "not_found") {
      throw new HubError("not_found", `${err.message} (and there is no local folder "${spec}")`);
    }
    throw err;
  }
  return await download(client, cache, repo, info.commit, info.files, options);
}

async function download(
  client: HubClient,
  cache: RepoCache,
  repo: RepoSpec,
  commit: string,
  files: readonly string[],
  options: ResolveOptions,
): Promise<ResolvedModel> {
  const { repoId, revision } = repo;
  const dir = snapshotDir(cache, commit);
  const plan = planMetadata(repoId, files);
  await ensureFiles(client, cache, repoId, commit, plan.first, options);
  if (options.checkConfig) {
    const path = join(dir, "config.json");
    options.checkConfig(JSON.parse(await Deno.readTextFile(path)), `${repoId}@${revision}: config.json`);
  }
  const weights = await weightFiles(repoId, dir, plan.sharded);
  const absent = weights.find((f) => !files.includes(f));
  if (absent) {
    throw new HubError(
      "missing_file",
      `Cannot serve "${repoId}": ${WEIGHTS_INDEX} lists "${absent}", not in repo`,
    );
  }
  await ensureFiles(client, cache, repoId, commit, weights, options);
  // Written last, so that a ref in the cache always names a complete snapshot.
  if (!isCommitHash(revision)) await writeRef(cache, revision, commit);
  return { dir, repoId, revision, commit };
}

/** Downloads and links whichever of `files` the snapshot lacks. */
async function ensureFiles(
  client: HubClient,
  cache: RepoCache,
  repoId: string,
  commit: string,
  files: readonly string[],
  options: ResolveOptions,
): Promise<void> {
  const todo: { file: string; meta: FileMeta }[] = [];
  for (const file of files) {
    checkRepoFile(repoId, file);
    if (await isFile(join(snapshotDir(cache, commit), file))) continue;
    const meta = await fetchFileMeta(client, repoId, commit, file);
    if (meta.commit !== null && meta.commit !== commit) {
      throw new HubError(
        "http",
        `Cannot download "${file}" of "${repoId}": asked for ${commit}, got ${meta.commit}`,
      );
    }
    todo.push({ file, meta });
  }
  const progress = createProgressTracker(todo.reduce((n, t) => n + t.meta.size, 0), options.onProgress);
  for (const { file, meta } of todo) {
    const blob = blobPath(cache, meta.etag);
    await Deno.mkdir(dirname(blob), { recursive: true });
    await withBlobLock(cache, meta.etag, async () => {
      // Another process sharing the cache may have finished this blob while we waited for the lock.
      if (await isFile(blob)) return progress.add(file, meta.size, true);
      const incomplete = `${blob}.incomplete`;
      const onBytes = (n: number, resumed: boolean) => progress.add(file, n, resumed);
      await downloadBlob(client, meta, { repoId, commit, file, incomplete, blob, onBytes });
    });
    progress.fileDone(file);
    await linkSnapshotFile(cache, commit, file, meta.etag);
  }
}

/** Resolves from the cache alone: `refs/<revision>` (or the commit itself), then a complete snapshot. */
async function fromCache(
  cache: RepoCache,
  repo: RepoSpec,
  cacheDir: string,
  why: string,
): Promise<ResolvedModel> {
  const { repoId, revision } = repo;
  const commit = isCommitHash(revision) ? revision : await readRef(cache, revision);
  const where = `"${repoId}@${revision}" in the Hugging Face cache "${cacheDir}"`;
  const advice =
    "download it once online (unset HF_HUB_OFFLINE), or set HF_HOME / HF_HUB_CACHE to the cache that has it";
  if (commit === null) throw new HubError("not_cached", `Cannot find ${where} (${why}): ${advice}`);
  const dir = snapshotDir(cache, commit);
  const missing = await missingFiles(repoId, dir);
  if (missing.length > 0) {
    throw new HubError(
      "not_cached",
      `Cannot find ${where} (${why}): snapshot ${commit} lacks ${missing.join(", ")}`,
    );
  }
  return { dir, repoId, revision, commit };
}

async function missingFiles(repoId: string, dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (const file of REQUIRED_FILES) if (!(await isFile(join(dir, file)))) missing.push(file);
  const sharded = await isFile(join(dir, WEIGHTS_INDEX));
  if (!sharded && !(await isFile(join(dir, WEIGHTS_FILE)))) missing.push(WEIGHTS_FILE);
  if (sharded) {
    for (const file of await weightFiles(repoId, dir, true)) {
      if (!(await isFile(join(dir, file)))) missing.push(file);
    }
  }
  return missing;
}

async function readToken(tokenFile: string | null): Promise<string | null> {
  if (tokenFile === null) return null;
  const token = await Deno.readTextFile(tokenFile).then((t) => t.trim(), () => "");
  return token === "" ? null : token;
}
