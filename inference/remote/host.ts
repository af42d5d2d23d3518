/**
 * The engine's side of the thread boundary: answers the HTTP thread's calls and streams with the engine
 * and the job manager that live in this Worker, and pushes the engine's status and counters when they
 * change (checked after every answer and every STATE_EVERY_MS).
 */
import type { EngineHandle, GenerateRequest } from "../engine/mod.ts";
import type { JobJson, JobManager } from "../jobs/mod.ts";
import { GrammarCache } from "../structured/mod.ts";
import { Inbox } from "./inbox.ts";
import { type Port, type ToClient, type ToHost, toWire, type WireGenerateRequest } from "./protocol.ts";

/** How often the host looks for a changed status or counters while nothing else happens. */
const STATE_EVERY_MS = 100;

/** What the host serves. */
export interface HostOptions {
  engine: EngineHandle;
  jobs: JobManager;
}

/** A serving host; `stop()` ends its timer and stops listening. */
export interface Host {
  stop(): void;
}

type Call = (...args: never[]) => unknown;
type Stream = (signal: AbortSignal, ...args: never[]) => AsyncIterable<unknown>;

/**
 * Serves the engine and the jobs on `port`.
 * @param port the Worker's global scope (or a MessagePort in tests)
 * @param o the engine and the job manager
 * @returns the host
 */
export function serveEngine(port: Port, { engine, jobs }: HostOptions): Host {
  const calls: Record<string, Call> = {
    tokenize: (
      input: Parameters<EngineHandle["tokenize"]>[0],
      options?: Parameters<EngineHandle["tokenize"]>[1],
    ) => engine.tokenize(input, options),
    detokenize: (ids: number[]) => engine.detokenize(ids),
    embed: (...a: Parameters<EngineHandle["embed"]>) => engine.embed(...a),
    state: () => state(),
    "jobs.submit": (...a: Parameters<JobManager["submit"]>) => jobs.submit(...a),
    "jobs.activate": (name: string) => jobs.activate(name),
    "jobs.get": (id: string) => jobs.get(id),
    "jobs.list": () => jobs.list(),
    "jobs.cancel": (id: string) => jobs.cancel(id),
    "jobs.wait": (id: string) => jobs.wait(id),
    "jobs.artifacts": () => jobs.artifacts(),
  };
  const streams: Record<string, Stream> = {
    generate: (signal, wire: WireGenerateRequest) => engine.generate(fromWireRequest(wire, grammars), signal),
    "jobs.events": (signal, id: string) => jobSnapshots(jobs, id, signal),
  };
  const open = new Map<number, AbortController>();
  // One grammar per schema across requests, so their token masks are computed once (grammar_transfer.ts).
  const grammars = new GrammarCache();
  const post = (m: ToClient) => port.postMessage(m);
  let sent = "";
  function state(): Extract<ToClient, { t: "state" }> {
    return { t: "state", status: engine.status(), counters: engine.counters() };
  }
  function pushState(): void {
    const s = state();
    const text = JSON.stringify(s);
    if (text === sent) return;
    sent = text;
    post(s);
  }

  async function answer(m: Extract<ToHost, { t: "call" }>): Promise<void> {
    try {
      const fn = calls[m.method];
      if (!fn) throw new Error(`Unknown engine call "${m.method}"`);
      post({ t: "result", id: m.id, value: await fn(...(m.args as never[])) });
    } catch (err) {
      post({ t: "error", id: m.id, error: toWire(err) });
    }
    pushState();
  }

  async function run(m: Extract<ToHost, { t: "open" }>): Promise<void> {
    const abort = new AbortController();
    open.set(m.id, abort);
    try {
      const fn = streams[m.method];
      if (!fn) throw new Error(`Unknown engine stream "${m.method}"`);
      for await (const value of fn(abort.signal, ...(m.args as never[]))) {
        if (abort.signal.aborted) break;
        post({ t: "item", id: m.id, value });
      }
      if (!abort.signal.aborted) post({ t: "done", id: m.id });
    } catch (err) {
      if (!abort.signal.aborted) post({ t: "error", id: m.id, error: toWire(err) });
    } finally {
      open.delete(m.id);
      pushState();
    }
  }

  const onMessage = (event: MessageEvent) => {
    const m = event.data as ToHost;
    if (m?.t === "call") void answer(m);
    else if (m?.t === "open") void run(m);
    else if (m?.t === "close") open.get(m.id)?.abort();
  };
  port.addEventListener("message", onMessage);
  const timer = setInterval(pushState, STATE_EVERY_MS);
  pushState();
  return {
    stop() {
      clearInterval(timer);
      port.removeEventListener("message", onMessage);
      for (const abort of open.values()) abort.abort();
    },
  };
}

/** The request the engine takes: the grammar rebuilt, or the one rebuilt before for the same content. */
function fromWireRequest(wire: WireGenerateRequest, grammars: GrammarCache): GenerateRequest {
  const { grammar, ...rest } = wire;
  return grammar ? { ...rest, grammar: grammars.unpack(grammar) } : rest;
}

/** A job's snapshots as a stream: each change until the job ends (or the reader stops). */
function jobSnapshots(jobs: JobManager, id: string, signal: AbortSignal): AsyncIterable<JobJson> {
  const inbox = new Inbox<JobJson>();
  let sawEnd = false;
  const push = (job: JobJson) => {
    sawEnd ||= ["done", "failed", "cancelled"].includes(job.status);
    inbox.push(job);
  };
  const unsubscribe = jobs.subscribe(id, push);
  const stop = () => {
    unsubscribe();
    inbox.end();
  };
  signal.addEventListener("abort", stop, { once: true });
  // The final snapshot, should the end come before its notification.
  void jobs.wait(id).then((job) => (sawEnd || push(job), stop()), stop);
  return inbox;
}
