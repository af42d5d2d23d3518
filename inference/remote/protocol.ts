/**
 * The messages between the HTTP thread (client.ts) and the engine's Worker (host.ts). A call is one request
 * and one answer; a stream (a generation, a job's snapshots) is opened, sends items, and ends with `done`
 * or `error`, or is closed early by the client (a client that hung up). The host also pushes the engine's
 * status and counters whenever they change, so the HTTP thread reads them without a round trip.
 */
import {
  EngineBusyError,
  type EngineCounters,
  EngineInputError,
  type EngineStatus,
  type GenerateRequest,
} from "../engine/mod.ts";
import { JobInputError } from "../jobs/mod.ts";
import type { PackedGrammar } from "../structured/mod.ts";

/** A MessagePort, a Worker or a Worker's global scope: what both ends talk through. */
export interface Port {
  postMessage(message: unknown): void;
  addEventListener(type: "message", listener: (event: MessageEvent) => void): void;
  removeEventListener(type: "message", listener: (event: MessageEvent) => void): void;
}

/** The HTTP thread to the engine. */
export type ToHost =
  | { t: "call"; id: number; method: string; args: unknown[] }
  | { t: "open"; id: number; method: string; args: unknown[] }
  /** the client stopped reading stream `id` (its generation is cancelled) */
  | { t: "close"; id: number };

/** The engine to the HTTP thread. */
export type ToClient =
  | { t: "result"; id: number; value: unknown }
  /** a call's or a stream's failure */
  | { t: "error"; id: number; error: WireError }
  | { t: "item"; id: number; value: unknown }
  | { t: "done"; id: number }
  | { t: "state"; status: EngineStatus; counters: EngineCounters };

/** A GenerateRequest as it travels: its grammar packed (grammar_transfer.ts). */
export type WireGenerateRequest = Omit<GenerateRequest, "grammar"> & { grammar?: PackedGrammar };

/** An error as it travels: the fields the server's error mapping reads, by class name. */
export interface WireError {
  name: string;
  message: string;
  param?: string | null;
  code?: string | null;
  retryAfterSeconds?: number;
  field?: string | null;
  status?: 400 | 404 | 409 | 503;
}

/** The wire form of anything thrown. */
export function toWire(err: unknown): WireError {
  if (err instanceof EngineInputError) {
    return { name: err.name, message: err.message, param: err.param, code: err.code };
  }
  if (err instanceof EngineBusyError) {
    return { name: err.name, message: err.message, retryAfterSeconds: err.retryAfterSeconds };
  }
  if (err instanceof JobInputError) {
    return { name: err.name, message: err.message, field: err.field, status: err.status, code: err.code };
  }
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: "Error", message: String(err) };
}

/** The error a wire error stands for: the server's classes where it knows them, so it maps them to 4xx. */
export function fromWire(w: WireError): Error {
  switch (w.name) {
    case "EngineInputError":
      return new EngineInputError(w.message, w.param ?? null, w.code ?? null);
    case "EngineBusyError":
      return new EngineBusyError(w.message, w.retryAfterSeconds);
    case "JobInputError":
      return new JobInputError(w.message, w.field ?? null, w.status ?? 400, w.code ?? null);
  }
  const err = new Error(w.message);
  err.name = w.name;
  return err;
}
