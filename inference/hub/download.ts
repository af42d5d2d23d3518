/**
 * The hub's three requests, as huggingface_hub makes them (file_download.py):
 * - `GET {endpoint}/api/models/{repo}/revision/{rev}`: the commit (`sha`) and the file list (`siblings`);
 * - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}`: the blob's etag and size, from `X-Linked-Etag` and
 *   `X-Linked-Size` on the redirect of an LFS file, else `ETag` and `Content-Length`;
 * - `GET` of the same URL, redirects followed, into `blobs/<etag>.incomplete`, resumed with `Range:`.
 *
 * Unlike huggingface_hub, every blob is verified before it is renamed into place: an LFS file's linked etag
 * is the sha256 of its contents; a small file's etag is its git blob id, sha1("blob <size>\0" + contents).
 */
import { createHash, type Hash } from "node:crypto";
import { HubError } from "./errors.ts";
import { type HubClient, hubRequest, sameOrigin, statusError } from "./http.ts";
import { encodeRepoPath, isCommitHash } from "./repo_id.ts";

/** A repo at one commit. */
export interface RepoInfo {
  /** The 40-hex commit the revision resolved to. */
  readonly commit: string;
  /** Every file path in the repo at that commit. */
  readonly files: readonly string[];
}

/** What the hub says about one file before it is downloaded. */
export interface FileMeta {
  /** The normalized etag: the blob's name in the cache. */
  readonly etag: string;
  readonly size: number;
  /** True for an LFS file (its etag is the sha256 of the contents). */
  readonly lfs: boolean;
  /** `X-Repo-Commit`: the commit the hub resolved the file at, when it says. */
  readonly commit: string | null;
}

/**
 * Asks the hub which commit a revision is at and which files it has.
 * @param client endpoint and token
 * @param repoId `org/name`
 * @param revision branch, tag or commit
 */
export async function fetchRepoInfo(client: HubClient, repoId: string, revision: string): Promise<RepoInfo> {
  const url = `${client.endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}`;
  const res = await hubRequest(client, url, { follow: (_, next) => sameOrigin(next, client.endpoint) });
  if (!res.ok) throw await statusError(client, res, { repoId, revision });
  let json: { sha?: unknown; siblings?: unknown };
  try {
    json = await res.json();
  } catch (err) {
    throw new HubError("http", `Cannot read repo info of "${repoId}" from ${url}: ${(err as Error).message}`);
  }
  const siblings = Array.isArray(json.siblings) ? json.siblings : null;
  if (typeof json.sha !== "string" || !isCommitHash(json.sha) || siblings === null) {
    throw new HubError("http", `Cannot read repo info of "${repoId}" from ${url}: no "sha" or "siblings"`);
  }
  const files = siblings.map((s) => (s as { rfilename?: unknown })?.rfilename)
    .filter((f): f is string => typeof f === "string");
  return { commit: json.sha, files };
}

/** `{endpoint}/{repo}/resolve/{commit}/{file}`. */
export function resolveUrl(client: HubClient, repoId: string, commit: string, file: string): string {
  return `${client.endpoint}/${repoId}/resolve/${encodeURIComponent(commit)}/${encodeRepoPath(file)}`;
}

/**
 * HEADs a file: the etag and size. Redirects to another origin (the CDN of LFS files) are not followed: the
 * hub's redirect itself carries `X-Linked-Etag` and `X-Linked-Size`.
 */
export async function fetchFileMeta(
  client: HubClient,
  repoId: string,
  commit: string,
  file: string,
): Promise<FileMeta> {
  const res = await hubRequest(client, resolveUrl(client, repoId, commit, file), {
    method: "HEAD",
    follow: (r, next) => !r.headers.has("x-linked-etag") && sameOrigin(next, client.endpoint),
  });
  const redirected = res.status >= 300 && res.status < 400;
  if (!res.ok && !redirected) throw await statusError(client, res, { repoId, revision: commit, file });
  await res.body?.cancel();
  const linked = res.headers.get("x-linked-etag");
  const etag = normalizeEtag(linked ?? res.headers.get("etag"));
  const size = Number(res.headers.get("x-linked-size") ?? res.headers.get("content-length") ?? NaN);
  if (etag === null || !Number.isSafeInteger(size) || size < 0) {
    throw new HubError("http", `Cannot download "${file}" of "${repoId}": the hub sent no ETag or size`);
  }
  return { etag, size, lfs: linked !== null, commit: res.headers.get("x-repo-commit") };
}

/** `W/"abc"` and `"abc"` → `abc` (huggingface_hub's `_normalize_etag`); null when absent or unusable. */
export function normalizeEtag(header: string | null): string | null {
  if (header === null) return null;
  const etag = header.trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
  return /^[A-Za-z0-9._-]+$/.test(etag) ? etag : null;
}

/** Where a blob download writes, and who hears about its bytes. */
export interface BlobTarget {
  readonly repoId: string;
  readonly commit: string;
  readonly file: string;
  /** `blobs/<etag>.incomplete`: appended to, kept on a network failure so that a restart resumes it. */
  readonly incomplete: string;
  /** `blobs/<etag>`: the verified blob is renamed here. */
  readonly blob: string;
  /** Called with the bytes already on disk (`resumed`, once) and with each chunk received. */
  readonly onBytes: (n: number, resumed: boolean) => void;
}

/**
 * Downloads one file into the cache's blob store, resuming an `.incomplete` file with `Range:`, and checks
 * its size and checksum before renaming it into place. A mismatch removes the partial file.
 */
export async function downloadBlob(client: HubClient, meta: FileMeta, target: BlobTarget): Promise<void> {
  await fetchIntoIncomplete(client, meta, target);
  await verifyBlob(meta, target);
  await Deno.rename(target.incomplete, target.blob);
}

/** Appends what the `.incomplete` file lacks, from a `Range:` request when part of it is there already. */
async function fetchIntoIncomplete(client: HubClient, meta: FileMeta, target: BlobTarget): Promise<void> {
  const { repoId, file, incomplete } = target;
  let start = await Deno.stat(incomplete).then((s) => s.size, () => 0);
  if (start > meta.size) start = 0;
  if (start > 0) target.onBytes(start, true);
  if (start === meta.size) return;
  const headers: Record<string, string> = start > 0 ? { range: `bytes=${start}-` } : {};
  const res = await hubRequest(client, resolveUrl(client, repoId, target.commit, file), { headers });
  if (res.status !== 200 && res.status !== 206) {
    throw await statusError(client, res, { repoId, revision: target.commit, file });
  }
  // A server that ignores Range answers 200 with the whole file: start over.
  if (res.status === 200 && start > 0) {
    target.onBytes(-start, true);
    start = 0;
  }
  using out = await Deno.open(incomplete, { create: true, write: true });
  await out.truncate(start);
  await out.seek(start, Deno.SeekMode.Start);
  await copyBody(res, out, target, client);
}

async function copyBody(
  res: Response,
  out: Deno.FsFile,
  target: BlobTarget,
  client: HubClient,
): Promise<void> {
  try {
    for await (const chunk of res.body!) {
      for (let done = 0; done < chunk.length;) done += await out.write(chunk.subarray(done));
      target.onBytes(chunk.length, false);
    }
  } catch (err) {
    throw new HubError(
      "network",
      `Cannot download "${target.file}" of "${target.repoId}" from ${client.endpoint}: ${
        (err as Error).message
      }` +
        " (the partial file is kept; run again to resume)",
    );
  }
}

/** Checks size and checksum of the finished `.incomplete` file; removes it when they do not match. */
async function verifyBlob(meta: FileMeta, target: BlobTarget): Promise<void> {
  const hash = checksumOf(meta);
  let size = 0;
  using file = await Deno.open(target.incomplete, { read: true });
  for await (const chunk of file.readable) {
    size += chunk.length;
    hash?.hash.update(chunk);
  }
  const got = hash?.hash.digest("hex");
  const problem = size !== meta.size
    ? `size ${size} bytes, expected ${meta.size}`
    : hash && got !== meta.etag
    ? `${hash.name} ${got}, expected ${meta.etag}`
    : null;
  if (problem === null) return;
  await Deno.remove(target.incomplete);
  throw new HubError(
    "checksum",
    `Cannot use downloaded "${target.file}" of "${target.repoId}": ${problem}; the file was removed, run again`,
  );
}

/** The hash the etag is of: sha256 for LFS files, the git blob sha1 for others; null for other etags. */
function checksumOf(meta: FileMeta): { name: string; hash: Hash } | null {
  if (meta.lfs && /^[0-9a-f]{64}$/.test(meta.etag)) return { name: "sha256", hash: createHash("sha256") };
  if (!meta.lfs && /^[0-9a-f]{40}$/.test(meta.etag)) {
    const hash = createHash("sha1");
    hash.update(`blob ${meta.size}\0`);
    return { name: "git sha1", hash };
  }
  return null;
}
