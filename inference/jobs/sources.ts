/**
 * Where calibration and evaluation text comes from, resolved before a job starts so that a bad source is a
 * 400 naming the field, never a failed job:
 *  - `file`: over HTTP confined to the configured calibration directories (`--calib-dir`, several allowed):
 *    a relative path is looked up in each directory in order, an absolute one must lie inside one; the real
 *    path (symlinks resolved) must stay inside the directory's real path, so `..` and symlinks pointing out
 *    are refused. From the command line (`--calib`) a file is the operator's own and is read as given.
 *  - `dataset`: a file of the calibration directories named `<name>` or `<name>.txt` (same confinement);
 *    the reserved name "builtin" is the built-in source (inference/quantize `builtinCalibration`), and
 *    "self" samples the windows from the model itself (inference/quantize `sampleCalibration`).
 *  - `text`: inline, size-checked by the request validator.
 */
import { createHash } from "node:crypto";
import { isAbsolute, join, normalize, resolve, sep } from "node:path";
import { sha256File } from "../formats/mod.ts";
import {
  BUILTIN_CALIBRATION_VERSION,
  BUILTIN_DATASET,
  SELF_DATASET,
  type TextSource,
} from "../quantize/mod.ts";

/** A client error found while preparing a job; `field` is the request's JSON path. */
export class JobInputError extends Error {
  constructor(
    message: string,
    readonly field: string | null,
    readonly status: 400 | 404 | 409 | 503 = 400,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "JobInputError";
  }
}

/** A source ready to read. */
export type ResolvedText =
  | { kind: "file"; path: string; label: string }
  | { kind: "text"; text: string; label: string }
  | { kind: "builtin"; label: string }
  | { kind: "self"; label: string };

/** How sources are looked up. */
export interface SourceRules {
  /** The calibration directories (`--calib-dir`). */
  calibDirs: readonly string[];
  /** Files must lie inside calibDirs (HTTP); false for the operator's own command line. */
  confine: boolean;
}

/**
 * Resolves a source; throws JobInputError naming `field` (e.g. "calibration.file").
 * @param source the validated source
 * @param field its JSON path's parent ("calibration" or "eval")
 * @param rules directories and confinement
 * @returns the resolved source
 */
export async function resolveTextSource(
  source: TextSource,
  field: "calibration" | "eval",
  rules: SourceRules,
): Promise<ResolvedText> {
  if (source.kind === "text") {
    return { kind: "text", text: source.text, label: `inline text (${source.text.length} characters)` };
  }
  if (source.kind === "dataset") {
    if (source.name === BUILTIN_DATASET || source.name === SELF_DATASET) {
      if (field === "eval") {
        throw new JobInputError(
          `Cannot use eval.dataset "${source.name}": perplexity needs real text`,
          "eval.dataset",
        );
      }
      return source.name === SELF_DATASET
        ? { kind: "self", label: "text sampled from the model" }
        : { kind: "builtin", label: `built-in calibration (${BUILTIN_CALIBRATION_VERSION})` };
    }
    const path = await findConfined(
      [source.name, `${source.name}.txt`],
      `${field}.dataset`,
      source.name,
      rules,
    );
    return { kind: "file", path, label: path };
  }
  if (!rules.confine) {
    const path = resolve(source.path);
    try {
      if (!(await Deno.stat(path)).isFile) throw new Error("not a file");
    } catch (err) {
      throw new JobInputError(
        `Cannot read ${field} file "${source.path}": ${(err as Error).message}`,
        `${field}.file`,
      );
    }
    return { kind: "file", path, label: path };
  }
  const path = await findConfined([source.path], `${field}.file`, source.path, rules);
  return { kind: "file", path, label: path };
}

/**
 * What identifies a source's content, for the artifact name's hash: the sha256 of the text, or the built-in
 * source's version.
 */
export async function sourceIdentity(s: ResolvedText): Promise<string> {
  if (s.kind === "builtin") return `builtin:${BUILTIN_CALIBRATION_VERSION}`;
  // The model's own samples: the model and the seed (both in the artifact name's hash) fix them.
  if (s.kind === "self") return "self:v1";
  if (s.kind === "text") return `sha256:${createHash("sha256").update(s.text).digest("hex")}`;
  return `sha256:${await sha256File(s.path)}`;
}

/** Reads a file or inline source (not the built-in one). */
export async function readSourceText(s: ResolvedText): Promise<string> {
  if (s.kind === "text") return s.text;
  if (s.kind === "file") {
    try {
      return await Deno.readTextFile(s.path);
    } catch (err) {
      throw new Error(`Cannot read "${s.path}": ${(err as Error).message}`);
    }
  }
  throw new Error("Cannot read the built-in calibration source as text");
}

/** The first candidate that exists in a calibration directory, checked to stay inside it. */
async function findConfined(
  names: string[],
  field: string,
  given: string,
  { calibDirs }: SourceRules,
): Promise<string> {
  if (calibDirs.length === 0) {
    throw new JobInputError(
      `Cannot use ${field} "${given}": the server has no --calib-dir to read files from`,
      field,
    );
  }
  if (!isAbsolute(given) && normalize(given).split(/[\\/]/)[0] === "..") {
    throw new JobInputError(
      `Cannot use ${field} "${given}": it resolves outside the calibration directories`,
      field,
    );
  }
  const roots = await Promise.all(calibDirs.map((d) => realPath(d)));
  for (const [i, dir] of calibDirs.entries()) {
    const root = roots[i];
    if (root === null) continue;
    for (const name of names) {
      const real = await realPath(isAbsolute(name) ? name : join(dir, name));
      if (real === null) continue;
      if (!roots.some((r) => r !== null && real.startsWith(r + sep))) {
        throw new JobInputError(
          `Cannot use ${field} "${given}": it resolves outside the calibration directories`,
          field,
        );
      }
      if (!(await Deno.stat(real)).isFile) {
        throw new JobInputError(`Cannot use ${field} "${given}": it is not a file`, field);
      }
      return real;
    }
  }
  const known = (await listDatasets(calibDirs)).slice(0, 20);
  throw new JobInputError(
    `Cannot find ${field} "${given}" in the calibration directories` +
      (known.length ? ` (they hold: ${known.join(", ")})` : ""),
    field,
  );
}

/** Names of the files in the calibration directories (".txt" dropped), for error messages. */
export async function listDatasets(calibDirs: readonly string[]): Promise<string[]> {
  const names = new Set<string>();
  for (const dir of calibDirs) {
    try {
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile && !e.name.startsWith(".")) names.add(e.name.replace(/\.txt$/, ""));
      }
    } catch {
      // A missing directory holds nothing; startup already said so.
    }
  }
  return [...names].sort();
}

async function realPath(path: string): Promise<string | null> {
  try {
    return await Deno.realPath(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return null;
    throw err;
  }
}
