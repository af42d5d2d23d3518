/**
 * Typed reads of config.json fields for model_config.ts and its helpers: each names the field in its error.
 */

/** A parsed JSON object. */
export type Json = Record<string, unknown>;

/** Throws the caller's "Cannot load model config" error with this message. */
export type Fail = (msg: string) => never;

/** `raw[key]` (or the fallback when absent) as a positive safe integer. */
export function positiveInt(raw: Json, key: string, fail: Fail, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) fail(`${key} is missing`);
  if (!Number.isSafeInteger(v) || (v as number) <= 0) {
    fail(`${key} ${JSON.stringify(v)} is not a positive integer`);
  }
  return v as number;
}

/** A finite positive number. */
export function positiveNumber(v: unknown, key: string, fail: Fail): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    fail(`${key} ${JSON.stringify(v)} is not a positive number`);
  }
  return v as number;
}

/** A finite positive number, or null when the field is null or absent. */
export function positiveOrNull(v: unknown, key: string, fail: Fail): number | null {
  return v == null ? null : positiveNumber(v, key, fail);
}

/** `raw[key]` (or the fallback when absent) as a boolean. */
export function bool(raw: Json, key: string, fallback: boolean, fail: Fail): boolean {
  const v = raw[key] ?? fallback;
  if (typeof v !== "boolean") fail(`${key} ${JSON.stringify(v)} is not a boolean`);
  return v as boolean;
}

/** A string or null. */
export function stringOrNull(v: unknown, key: string, fail: Fail): string | null {
  if (v !== null && typeof v !== "string") fail(`${key} ${JSON.stringify(v)} is not a string`);
  return v as string | null;
}

/** A plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
