/**
 * Hugging Face repo ids (`org/name[@revision]`) and the names they take in URLs and in the cache, following
 * huggingface_hub's `validate_repo_id` and `repo_folder_name`.
 */
import { HubError } from "./errors.ts";

/** A parsed `org/name[@revision]`. */
export interface RepoSpec {
  /** `org/name`. */
  readonly repoId: string;
  /** A branch, tag or commit; "main" when the spec names none. */
  readonly revision: string;
}

// One segment of a repo id: word characters, "-" and ".", starting and ending with a word character.
const SEGMENT = "[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?";
const REPO_ID = new RegExp(`^${SEGMENT}/${SEGMENT}$`);

/**
 * Parses `org/name[@revision]`.
 * @param spec the `--model` value
 * @returns the repo id and revision, or null when `spec` is not shaped like a repo id
 * @example
 * ```ts
 * import { parseRepoSpec } from "./repo_id.ts";
 * console.assert(parseRepoSpec("HuggingFaceTB/SmolLM2-360M-Instruct@main")?.revision === "main");
 * console.assert(parseRepoSpec("./models/x") === null);
 * ```
 */
export function parseRepoSpec(spec: string): RepoSpec | null {
  const at = spec.indexOf("@");
  const repoId = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? "main" : spec.slice(at + 1);
  if (!REPO_ID.test(repoId) || repoId.includes("--") || repoId.includes("..")) return null;
  if (revision === "" || !isSafeRelativePath(revision)) return null;
  return { repoId, revision };
}

/** True for a full 40-hex-digit git commit id, which needs no `refs/` entry. */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

/** The cache folder of a model repo: `models--org--name` (huggingface_hub's `repo_folder_name`). */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split("/").join("--")}`;
}

/**
 * True for a relative path that stays inside its folder: no leading "/", no "." or ".." segment, no
 * backslash. File names come from the hub (siblings, a shard index), so they are checked before they name a
 * path in the cache.
 */
export function isSafeRelativePath(path: string): boolean {
  if (path === "" || path.startsWith("/") || path.includes("\\") || path.includes("\0")) return false;
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

/**
 * Throws unless `file` is a safe relative path (see isSafeRelativePath).
 * @param repoId for the message
 * @param file a file name from the hub
 */
export function checkRepoFile(repoId: string, file: string): void {
  if (!isSafeRelativePath(file)) {
    throw new HubError("invalid", `Cannot use file "${file}" of "${repoId}": not a plain relative path`);
  }
}

/** A file path inside a repo, escaped segment by segment for a URL. */
export function encodeRepoPath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}
