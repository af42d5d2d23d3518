/**
 * GET /version: the leanserve version (deno.json's "version") plus the Deno runtime and build target, for
 * bug reports and fleet inventories. Public, like /health.
 */
import type { Handler } from "hono";
import denoJson from "../../deno.json" with { type: "json" };

/** The body of GET /version. */
export interface VersionInfo {
  version: string;
  deno: { deno: string; v8: string; typescript: string };
  build: { target: string; os: string; arch: string };
}

/**
 * Reads the version and runtime.
 * @returns The version info.
 * @example
 * ```ts
 * import { versionInfo } from "./version.ts";
 * console.assert(/^\d+\.\d+\.\d+/.test(versionInfo().version));
 * ```
 */
export function versionInfo(): VersionInfo {
  const { deno, v8, typescript } = Deno.version;
  const { target, os, arch } = Deno.build;
  return { version: denoJson.version, deno: { deno, v8, typescript }, build: { target, os, arch } };
}

/**
 * Builds the GET /version handler.
 * @returns A handler answering versionInfo().
 */
export function versionHandler(): Handler {
  const info = versionInfo();
  return (c) => c.json(info);
}
