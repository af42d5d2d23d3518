/**
 * Token masks on a thread of their own. A mask is a walk of the vocabulary's trie (token_mask.ts), and the
 * first mask of a grammar state where most ids may follow (inside a string) takes tens of milliseconds on a
 * large vocabulary, 150 ms for Qwen3's (BENCHMARKS.md "Structured output"). Computed on the engine's loop,
 * that time stalls every stream of the batch; here the loop asks for the mask and goes on with the other
 * sequences while the mask thread walks (scheduler.ts waits for it a little, so a cached mask, which comes
 * back in well under a millisecond, costs the constrained sequence no step).
 *
 * The thread keeps a {@link GrammarMatcher} per open handle, advanced by the ids the engine reports with each
 * request (the engine's own matcher, in the sequence's sink, follows the same ids to know when the value is
 * complete), its grammars by content (GrammarCache: requests of one schema share their cached masks), and
 * the vocabulary's trie and mask cache. `serveMasks` is the thread's side; mask_worker.ts runs it in a Worker,
 * and tests run it over a MessageChannel.
 */
import type { JsonGrammar } from "./grammar.ts";
import { GrammarCache, grammarKey, type PackedGrammar, packGrammar } from "./grammar_transfer.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";

/** What both ends talk through: a Worker, the Worker's global scope, or a MessagePort. */
export interface MaskPort {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  addEventListener(type: "message", listener: (event: MessageEvent) => void): void;
}

/** The engine to the mask thread. */
type ToMasks =
  /** the vocabulary, once, first: every id's bytes end to end, `lengths[id]` of them (−1: never text) */
  | { t: "vocab"; bytes: Uint8Array; lengths: Int32Array; size: number }
  /** `key`: the grammar's grammarKey, when the pool computed it (the thread then need not walk it again) */
  | { t: "open"; handle: number; grammar: PackedGrammar; endIds: number[]; key?: string }
  /** advance handle by `ids` (the ids sampled since its last request), then answer `req` with its mask */
  | { t: "mask"; handle: number; req: number; ids: number[] }
  | { t: "close"; handle: number };

/** The mask thread to the engine. */
type FromMasks = { req: number; mask: Uint32Array } | { req: number; error: string };

/** The engine's end: opens one handle per constrained sequence. */
export class MaskThread {
  #port: MaskPort;
  #stop: () => void;
  #handles = 0;
  #requests = 0;
  #pending = new Map<number, { resolve: (m: Uint32Array) => void; reject: (e: Error) => void }>();
  #failed: Error | null = null;
  #open = new Set<number>();

  /**
   * Starts the mask thread (a Worker running mask_worker.ts) for a vocabulary.
   * @param vocab the vocabulary the masks cover (its bytes are sent once; the trie is built there)
   */
  static start(vocab: TokenVocab): MaskThread {
    const worker = new Worker(new URL("./mask_worker.ts", import.meta.url).href, { type: "module" });
    const thread = new MaskThread(worker, () => worker.terminate(), vocab);
    worker.addEventListener("error", (event) => {
      event.preventDefault(); // the engine stays up: its constrained sequences fail, the rest go on
      thread.#fail(new Error(`The token mask thread failed: ${event.message}`));
    });
    return thread;
  }

  /**
   * @param port the thread's port (a Worker, or one end of a MessageChannel in tests)
   * @param stop ends the thread (terminate, or closing the port)
   * @param vocab the vocabulary the masks cover
   */
  constructor(port: MaskPort, stop: () => void, vocab: TokenVocab) {
    this.#port = port;
    this.#stop = stop;
    port.addEventListener("message", (event) => this.#answer(event.data as FromMasks));
    const lengths = new Int32Array(vocab.bytes.length);
    let total = 0;
    vocab.bytes.forEach((b, id) => {
      lengths[id] = b ? b.length : -1;
      total += b?.length ?? 0;
    });
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const b of vocab.bytes) {
      if (!b) continue;
      bytes.set(b, at);
      at += b.length;
    }
    this.#send({ t: "vocab", bytes, lengths, size: vocab.size }, [bytes.buffer, lengths.buffer]);
  }

  /**
   * A handle for one constrained sequence.
   * @param grammar what its output follows
   * @param endIds ids that end the output (EOS, stop ids), allowed where the value may end
   */
  open(grammar: JsonGrammar, endIds: Iterable<number>): MaskHandle {
    return this.openPacked(packGrammar(grammar), endIds);
  }

  /**
   * {@link open} with the grammar already packed, and its grammarKey if known (MaskPool packs and keys it
   * once to find its thread).
   */
  openPacked(grammar: PackedGrammar, endIds: Iterable<number>, key?: string): MaskHandle {
    const handle = ++this.#handles;
    this.#open.add(handle);
    this.#send({ t: "open", handle, grammar, endIds: [...endIds], ...(key !== undefined ? { key } : {}) });
    return new MaskHandle(
      (ids) => this.#mask(handle, ids),
      () => {
        if (this.#open.delete(handle)) this.#send({ t: "close", handle });
      },
    );
  }

  /** Handles open (not yet closed). */
  get openHandles(): number {
    return this.#open.size;
  }

  /** Ends the thread; masks still pending fail. */
  close(): void {
    this.#fail(new Error("The token mask thread was closed"));
    this.#stop();
  }

  #mask(handle: number, ids: number[]): Promise<Uint32Array> {
    if (this.#failed) return Promise.reject(this.#failed);
    const req = ++this.#requests;
    const answer = new Promise<Uint32Array>((resolve, reject) => this.#pending.set(req, { resolve, reject }));
    this.#send({ t: "mask", handle, req, ids });
    return answer;
  }

  #send(m: ToMasks, transfer: Transferable[] = []): void {
    if (!this.#failed) this.#port.postMessage(m, transfer);
  }

  #answer(m: FromMasks): void {
    const p = this.#pending.get(m.req);
    if (!p) return;
    this.#pending.delete(m.req);
    if ("mask" in m) p.resolve(m.mask);
    else p.reject(new Error(m.error));
  }

  #fail(err: Error): void {
    this.#failed ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

/** Grammars whose thread a MaskPool remembers (the threads' own GrammarCache holds 32 each). */
const POOL_HOMES = 256;

/**
 * Mask threads for one vocabulary, so that slow masks of different grammars (a new state of a schema on a
 * 152K-id vocabulary: up to 150 ms) are walked side by side rather than one after the other. A grammar's
 * handles go to the thread that served it last, where its masks are cached (requests of one schema share
 * them); a new grammar goes to the thread with the fewest open handles, and another thread starts (up to
 * `size`) when every running one has some. Each thread builds its own copy of the vocabulary's trie.
 */
export class MaskPool {
  #threads: MaskThread[] = [];
  #homes = new Map<string, MaskThread>();
  #start: () => MaskThread;
  readonly size: number;

  /**
   * @param start starts one thread (MaskThread.start for a Worker; tests serve one over a MessageChannel)
   * @param size most threads
   */
  constructor(start: () => MaskThread, size: number) {
    this.#start = start;
    this.size = Math.max(1, size);
  }

  /**
   * A pool of Workers for a vocabulary.
   * @param size most threads (default: a quarter of the host's cores, 1 to 4)
   */
  static start(vocab: TokenVocab, size = defaultPoolSize()): MaskPool {
    return new MaskPool(() => MaskThread.start(vocab), size);
  }

  /**
   * A handle for one constrained sequence, on its grammar's thread.
   * @param grammar what its output follows
   * @param endIds ids that end the output, allowed where the value may end
   */
  open(grammar: JsonGrammar, endIds: Iterable<number>): MaskHandle {
    const packed = packGrammar(grammar);
    let key: string | null;
    try {
      key = grammarKey(packed);
    } catch {
      key = null; // not a grammar the threads can rebuild either: its handle's masks fail there
    }
    const home = key === null ? undefined : this.#homes.get(key);
    const thread = home ?? this.#leastBusy();
    if (key !== null) {
      this.#homes.delete(key); // most recently used last
      this.#homes.set(key, thread);
      for (const old of this.#homes.keys()) {
        if (this.#homes.size <= POOL_HOMES) break;
        this.#homes.delete(old);
      }
    }
    return thread.openPacked(packed, endIds, key ?? undefined);
  }

  /** Threads started so far. */
  get threads(): number {
    return this.#threads.length;
  }

  /** Handles open (not yet closed) over all threads. */
  get openHandles(): number {
    return this.#threads.reduce((n, t) => n + t.openHandles, 0);
  }

  /** Ends every thread; masks still pending fail. */
  close(): void {
    this.#threads.forEach((t) => t.close());
    this.#homes.clear();
  }

  #leastBusy(): MaskThread {
    const idle = this.#threads.reduce<MaskThread | null>(
      (best, t) => (best === null || t.openHandles < best.openHandles ? t : best),
      null,
    );
    if (idle && (idle.openHandles === 0 || this.#threads.length >= this.size)) return idle;
    const fresh = this.#start();
    this.#threads.push(fresh);
    return fresh;
  }
}

/** A quarter of the host's cores, 1 to 4: the engine's loop and the HTTP thread keep theirs. */
function defaultPoolSize(): number {
  return Math.min(4, Math.max(1, Math.floor((navigator.hardwareConcurrency ?? 1) / 4)));
}

/** One constrained sequence's masks. */
export class MaskHandle {
  #sent = 0;
  #ask: (ids: number[]) => Promise<Uint32Array>;
  #close: () => void;

  constructor(ask: (ids: number[]) => Promise<Uint32Array>, close: () => void) {
    this.#ask = ask;
    this.#close = close;
  }

  /**
   * The mask of the ids allowed next.
   * @param taken every id the sequence has produced so far, in order (only the new ones travel)
   * @returns a fresh mask (the caller may keep it)
   */
  mask(taken: readonly number[]): Promise<Uint32Array> {
    const ids = taken.slice(this.#sent);
    this.#sent = taken.length;
    return this.#ask(ids);
  }

  /** The sequence is over: the thread forgets its matcher (the engine's SeqConstraint.release). */
  release(): void {
    this.#close();
  }
}

/**
 * The mask thread's side: answers the engine's requests on `port` until the thread ends.
 * @param port the Worker's global scope, or a MessagePort
 */
export function serveMasks(port: MaskPort): void {
  let vocab: TokenVocab | null = null;
  const grammars = new GrammarCache();
  // A handle whose grammar could not be rebuilt keeps its error: its requests fail, the thread goes on.
  const matchers = new Map<number, { matcher: GrammarMatcher; endIds: number[] } | Error>();
  port.addEventListener("message", (event) => {
    const m = event.data as ToMasks;
    if (m.t === "vocab") {
      vocab = new TokenVocab(unflatten(m.bytes, m.lengths), m.size);
    } else if (m.t === "open") {
      try {
        const matcher = new GrammarMatcher(grammars.unpack(m.grammar, m.key), vocab!);
        matchers.set(m.handle, { matcher, endIds: m.endIds });
      } catch (err) {
        matchers.set(m.handle, new Error(`Cannot rebuild the grammar: ${(err as Error).message}`));
      }
    } else if (m.t === "close") {
      matchers.delete(m.handle);
    } else {
      let answer: FromMasks;
      try {
        const open = matchers.get(m.handle);
        if (!open) throw new Error(`Cannot compute a mask: handle ${m.handle} is not open`);
        if (open instanceof Error) throw open;
        const bad = m.ids.find((id) => !open.matcher.accept(id));
        if (bad !== undefined) throw new Error(`Cannot compute a mask: the grammar does not allow id ${bad}`);
        answer = { req: m.req, mask: open.matcher.mask(open.endIds) };
      } catch (err) {
        answer = { req: m.req, error: (err as Error).message };
      }
      port.postMessage(answer, "mask" in answer ? [answer.mask.buffer as ArrayBuffer] : []); // mask(): a fresh copy
    }
  });
}

/** Every id's bytes from their concatenation (`lengths[id]` each, −1 for none). */
function unflatten(bytes: Uint8Array, lengths: Int32Array): (Uint8Array | null)[] {
  const out: (Uint8Array | null)[] = [];
  let at = 0;
  for (const n of lengths) {
    if (n < 0) {
      out.push(null);
      continue;
    }
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}
