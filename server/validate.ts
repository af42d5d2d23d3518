/**
 * The field checks every request validator shares (protocol.ts, constraints.ts): each throws a 400 ApiError
 * naming the field. `null` counts as not given, as OpenAI's clients send it.
 */
import { ApiError, invalidRequest } from "./errors.ts";

/** A parsed JSON request body. */
export type Body = Record<string, unknown>;

/** A number in [min, max] (or (min, max] with minExclusive), or undefined when not given. */
export function numberIn(
  b: Body,
  key: string,
  min: number,
  max: number,
  minExclusive: boolean,
): number | undefined {
  const v = b[key];
  if (!given(v)) return undefined;
  const ok = typeof v === "number" && Number.isFinite(v) && (minExclusive ? v > min : v >= min) && v <= max;
  if (!ok) throw badValue(key, v, `a number in ${minExclusive ? "(" : "["}${min}, ${max}]`);
  return v as number;
}

/** An integer in [min, max]. */
export function intIn(b: Body, key: string, min: number, max: number): number {
  const v = b[key];
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    throw badValue(key, v, `an integer from ${min} to ${max}`);
  }
  return v as number;
}

/** A positive integer, or undefined when not given. */
export function positiveInt(b: Body, key: string): number | undefined {
  const v = b[key];
  if (!given(v)) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw badValue(key, v, "a positive integer");
  return v as number;
}

/** A boolean. */
export function requireBool(b: Body, key: string): boolean {
  if (typeof b[key] !== "boolean") throw badValue(key, b[key], "a boolean");
  return b[key] as boolean;
}

/** The body as a JSON object. */
export function requireObject(body: unknown): Body {
  if (!isObject(body)) throw invalidRequest("Cannot read the request body: expected a JSON object");
  return body;
}

/** Whether a value is a plain JSON object. */
export function isObject(v: unknown): v is Body {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Clients send `null` for fields they leave at the default. */
export function given(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** The 400 for a field whose value is not what it should be. */
export function badValue(param: string, value: unknown, expected: string): ApiError {
  return invalidRequest(`Cannot accept "${param}" = ${JSON.stringify(value)}: expected ${expected}`, param);
}

/** The 400 for a field the server does not serve (`code: unsupported_parameter`). */
export function unsupported(param: string, detail: string): ApiError {
  return invalidRequest(`Cannot serve this request: ${detail}`, param, "unsupported_parameter");
}
