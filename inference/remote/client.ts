/**
 * The HTTP thread's side of the thread boundary: an Engine and a JobManager whose work runs in the engine's
 * Worker (host.ts). Status and counters are the host's latest push (at most ~100 ms old, fresher after any
 * answer); everything else is a call or a stream. When the Worker dies, every pending call and stream fails
 * and the status turns to "error", so requests get a clear 503 instead of waiting forever.
 */
import type {
  EmbedOptions,
  EmbedResult,
  Engine,
  EngineCounters,
  EngineStatus,
  GenerateInput,
  GenerateRequest,
  TokenEvent,
  TokenizeOptions,
  TokenizeResult,
} from "../engine/mod.ts";
import type { ArtifactJson, JobJson, JobManager, QuantizeRequest, SubmitOptions } from "../jobs/mod.ts";
import { packGrammar } from "../structured/mod.ts";
import { Inbox } from "./inbox.ts";
import { fromWire, type Port, type ToClient, type ToHost, type WireGenerateRequest } from "./protocol.ts";

/** The engine as the HTTP thread sees it, plus what only a remote one has. */
export interface RemoteEngine extends Engine {
  counters(): EngineCounters;
  tokenize(input: GenerateInput, options?: TokenizeOptions): Promise<TokenizeResult>;
  detokenize(ids: readonly number[]): Promise<string>;
  embed(input: GenerateInput, options?: EmbedOptions): Promise<EmbedResult>;
  /** Fetches the status and counters now (tests; the pushed ones are at most ~100 ms old). */
  refresh(): Promise<void>;
}

/** Both faces, and the way to fail them. */
export interface Remote {
  engine: RemoteEngine;
  jobs: JobManager;
  /** The Worker is gone: fails every pending call and stream, and every later one, with `reason`. */
  fail(reason: string): void;
}

/**
 * Connects to a host on `port`.
 * @param port the engine's Worker (or a MessagePort in tests)
 * @param modelId the served name, reported until the host's first status arrives
 * @returns the engine and job manager faces
 */
export function connectEngine(port: Port, modelId: string): Remote {
  let status: EngineStatus = {
    state: "loading",
    detail: "starting the engine",
    modelId,
    contextLength: 0,
    hasChatTemplate: false,
  };
  let counters: EngineCounters = {
    running: 0,
    waiting: 0,
    kvBlocksUsed: 0,
    kvBlocksTotal: 0,
    kvBlocksCached: 0,
    gpuBytes: { weights: 0, kvCache: 0, scratch: 0 },
    cacheConfig: null,
    promptTokensTotal: 0,
    generatedTokensTotal: 0,
    preemptionsTotal: 0,
    prefixCacheQueriesTotal: 0,
    prefixCacheHitsTotal: 0,
  };
  let failed: Error | null = null;
  let next = 1;
  const calls = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const streams = new Map<number, Inbox<unknown>>();
  const post = (m: ToHost) => port.postMessage(m);

  port.addEventListener("message", (event) => {
    const m = event.data as ToClient;
    switch (m?.t) {
      case "state":
        if (!failed) status = m.status;
        counters = m.counters;
        break;
      case "result":
        calls.get(m.id)?.resolve(m.value);
        calls.delete(m.id);
        break;
      case "error":
        calls.get(m.id)?.reject(fromWire(m.error));
        calls.delete(m.id);
        streams.get(m.id)?.end(fromWire(m.error));
        break;
      case "item":
        streams.get(m.id)?.push(m.value);
        break;
      case "done":
        streams.get(m.id)?.end();
        break;
    }
  });

  function call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (failed) return Promise.reject(failed);
    const id = next++;
    return new Promise<T>((resolve, reject) => {
      calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      post({ t: "call", id, method, args });
    });
  }

  /** A stream's items; leaving early (or `signal`) closes it on the host. */
  async function* stream<T>(method: string, args: unknown[], signal?: AbortSignal): AsyncGenerator<T> {
    if (failed) throw failed;
    const id = next++;
    const inbox = new Inbox<unknown>();
    streams.set(id, inbox);
    const close = () => {
      if (!inbox.ended) post({ t: "close", id });
      inbox.end();
    };
    signal?.addEventListener("abort", close);
    post({ t: "open", id, method, args });
    try {
      if (signal?.aborted) return close();
      yield* inbox as AsyncIterable<T>;
    } finally {
      signal?.removeEventListener("abort", close);
      close();
      streams.delete(id);
    }
  }

  const engine: RemoteEngine = {
    status: () => status,
    counters: () => counters,
    generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent> {
      const { grammar, ...rest } = request;
      const wire: WireGenerateRequest = grammar ? { ...rest, grammar: packGrammar(grammar) } : rest;
      return stream<TokenEvent>("generate", [wire], signal);
    },
    tokenize: (input, options) => call("tokenize", input, options),
    detokenize: (ids) => call("detokenize", [...ids]),
    embed: (input, options) => call("embed", input, options),
    async refresh() {
      const s = await call<{ status: EngineStatus; counters: EngineCounters }>("state");
      if (!failed) status = s.status;
      counters = s.counters;
    },
  };

  const jobs: JobManager = {
    submit: (request: QuantizeRequest, options?: SubmitOptions) =>
      call<JobJson>("jobs.submit", request, options),
    activate: (name: string) => call<JobJson>("jobs.activate", name),
    get: (id: string) => call<JobJson | null>("jobs.get", id),
    list: () => call<JobJson[]>("jobs.list"),
    cancel: (id: string) => call<JobJson>("jobs.cancel", id),
    wait: (id: string) => call<JobJson>("jobs.wait", id),
    artifacts: () => call<ArtifactJson[]>("jobs.artifacts"),
    subscribe(id: string, listener: (job: JobJson) => void): () => void {
      const stop = new AbortController();
      void (async () => {
        try {
          for await (const job of stream<JobJson>("jobs.events", [id], stop.signal)) listener(job);
        } catch {
          // an unknown job or a dead Worker: the route reads the job itself and reports it
        }
      })();
      return () => stop.abort();
    },
  };

  return {
    engine,
    jobs,
    fail(reason) {
      if (failed) return;
      failed = new Error(`The engine stopped: ${reason}`);
      status = { ...status, state: "error", detail: failed.message };
      for (const c of calls.values()) c.reject(failed);
      calls.clear();
      for (const s of streams.values()) s.end(failed);
    },
  };
}
