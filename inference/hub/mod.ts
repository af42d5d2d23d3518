/**
 * Model sources: a local folder, or a Hugging Face repo id resolved through the standard hub cache
 * (shared with Python tools) and downloaded when missing. No GPU, no model types.
 *
 * @example
 * ```ts ignore
 * import { resolveModel } from "./inference/hub/mod.ts";
 * const { dir, commit } = await resolveModel("HuggingFaceTB/SmolLM2-360M-Instruct", {
 *   cacheDir: `${Deno.env.get("HOME")}/.cache/huggingface/hub`,
 *   onProgress: (p) => console.log(p.file, p.bytes, p.total),
 * });
 * ```
 */
export { type HubOptions, type ResolvedModel, resolveModel, type ResolveOptions } from "./resolve.ts";
export { HubError, type HubErrorKind } from "./errors.ts";
export type { DownloadProgress } from "./progress.ts";
export { parseRepoSpec, type RepoSpec } from "./repo_id.ts";
