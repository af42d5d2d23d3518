/**
 * Which files of a repo the server needs: the configs and tokenizer, then the safetensors weights (one
 * file, or the shards a `model.safetensors.index.json` lists). Nothing else is downloaded.
 */
import { join } from "node:path";
import { HubError } from "./errors.ts";
import { checkRepoFile } from "./repo_id.ts";

/** Files the server cannot start without. */
export const REQUIRED_FILES: readonly string[] = ["config.json", "tokenizer.json"];
/** Files fetched when the repo has them. */
export const OPTIONAL_FILES: readonly string[] = [
  "generation_config.json",
  "tokenizer_config.json",
  "chat_template.jinja",
  "special_tokens_map.json",
];
/** Unsharded weights. */
export const WEIGHTS_FILE = "model.safetensors";
/** Sharded weights: `weight_map` maps tensor names to shard files. */
export const WEIGHTS_INDEX = "model.safetensors.index.json";

/**
 * The non-weight files to fetch from a repo's file list (config.json first), plus the index when sharded.
 * @param repoId for messages
 * @param files every path in the repo
 * @returns files to fetch first, and whether the weights are sharded
 */
export function planMetadata(
  repoId: string,
  files: readonly string[],
): { first: string[]; sharded: boolean } {
  const have = new Set(files);
  const missing = REQUIRED_FILES.find((f) => !have.has(f));
  if (missing) throw missingFile(repoId, missing);
  const sharded = have.has(WEIGHTS_INDEX);
  if (!sharded && !have.has(WEIGHTS_FILE)) throw missingFile(repoId, `${WEIGHTS_FILE} or ${WEIGHTS_INDEX}`);
  const first = [...REQUIRED_FILES, ...OPTIONAL_FILES.filter((f) => have.has(f))];
  return { first: sharded ? [...first, WEIGHTS_INDEX] : first, sharded };
}

/**
 * The weight files of a folder whose metadata is in place: `model.safetensors`, or the shards of the index.
 * @param repoId for messages
 * @param dir the snapshot folder
 * @param sharded whether the repo has `model.safetensors.index.json`
 */
export async function weightFiles(repoId: string, dir: string, sharded: boolean): Promise<string[]> {
  if (!sharded) return [WEIGHTS_FILE];
  let map: unknown;
  try {
    map = JSON.parse(await Deno.readTextFile(join(dir, WEIGHTS_INDEX))).weight_map;
  } catch (err) {
    throw new HubError("invalid", `Cannot read ${WEIGHTS_INDEX} of "${repoId}": ${(err as Error).message}`);
  }
  const shards = typeof map === "object" && map !== null ? Object.values(map) : [];
  if (shards.length === 0 || !shards.every((s) => typeof s === "string")) {
    throw new HubError(
      "invalid",
      `Cannot read ${WEIGHTS_INDEX} of "${repoId}": no "weight_map" of file names`,
    );
  }
  const unique = [...new Set(shards as string[])].sort();
  unique.forEach((f) => checkRepoFile(repoId, f));
  return unique;
}

function missingFile(repoId: string, file: string): HubError {
  return new HubError(
    "missing_file",
    `Cannot serve "${repoId}": the repo has no ${file} (leanserve reads safetensors weights and tokenizer.json)`,
  );
}
