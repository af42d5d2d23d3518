/**
 * Continuous (iteration-level) batching (Orca, Yu et al. 2022; vLLM): one loop owns the GPU. Every step
 * of a chunk advances each running sequence by one token and fills the rest of its row budget
 * (--max-num-batched-tokens) with pieces of prompts (chunked prefill), so running streams keep flowing
 * while a long prompt is read. New sequences join and finished or cancelled ones leave between steps; the
 * host learns what was sampled once per chunk (batch_runner.ts), so a stopped sequence may run a chunk or
 * two longer on the GPU (its ids are dropped).
 *
 * Sequences wait in a FIFO per model until a slot (--max-num-seqs) and the blocks of their whole prompt
 * are free; decode allocates blocks as it goes. When the cache runs out, the most recently admitted
 * sequence is preempted: its slot and blocks are freed at once (every later use of them is queued after
 * the GPU work already submitted, so reuse is safe) and, once its in-flight chunks are read, it waits again
 * with prompt + output as its new prompt (recompute). The `n` sequences of a request share their prompt's
 * full blocks: the first prefills the whole prompt, the others only its last (partial) block.
 *
 * Prefix caching (vLLM's APC; on unless --no-enable-prefix-caching; prefix_cache.ts): a full block is
 * registered in the cache (block_pool.ts) under the name of every id up to its end (prefix_hash.ts) once the
 * steps that write it are planned and its ids are known (prompt ids at once, sampled ids when they are read), and stays
 * cached after its holders let go. An admitted prompt takes the longest run of cached blocks from its
 * start (all but its last id: that one's row gives the first sampled id) and prefills from there. The
 * steps that wrote those blocks are planned before any step that reads them, and a planned step's writes
 * precede a later step's reads on the GPU queue, so a cached block is complete whenever it is read. A
 * preempted sequence takes back its own blocks unless they were evicted meanwhile.
 *
 * Structured output (SeqInit.constraint): the mask of the ids a sequence's grammar allows next depends on
 * the id it sampled last, which the host learns only at the readback, so a constrained sequence has at most
 * one sampling row in flight. Its mask is asked for once that id is read (and at each admission) and written
 * when it comes; until then the sequence samples nothing (its prompt's last row waits too) while the others
 * go on. A mask comes from the mask thread (structured/mask_thread.ts), so a slow one (a new grammar state
 * on a large vocabulary: up to 150 ms) stalls no other stream; before planning a chunk the loop waits up
 * to MASK_GRACE_MS for masks asked just before, so a cached one (well under a millisecond) costs the
 * sequence no chunk. That wait idles the GPU only when no chunk is in flight, and then only for masks
 * slower than the grace.
 *
 * Prompt logprobs (SeqInit.score: echo with logprobs, prompt_logprobs) come from the prefill that serves
 * the prompt, as in vLLM: a scored prompt's rows go first in their prefill step, the runner scores them
 * after the step's sampling (batch_runner.ts StepSpec.score), and the sequence gets all its records once
 * they are read, before its first id. A chunk holds one scoring step at most; a scored prompt takes no
 * cached prefix (its logprobs come from its rows) and, preempted before all are read, is scored again.
 * A sequence of limit 0 (echo with max_tokens 0, an embedding) samples nothing and ends when its prompt
 * is read; an embedding's (SeqInit.embed) is its last row's final-normed hidden state, read with the ids.
 *
 * Two models may be served at once while one replaces the other (hot swap): each has its own runner and
 * queue; the loop alternates between them and frees the old one when its last sequence ends.
 */
import { LOGPROB_RECORD_WORDS as RECORD } from "../../kernels/ops/mod.ts";
import type { BatchRunner, ChunkResult, StepSpec } from "./batch_runner.ts";
import type { KvCache } from "./kv_cache.ts";
import { cachedPrefix, registerFull } from "./prefix_cache.ts";
import { type ModelEntry, Seq, type SeqInit } from "./sequence.ts";

export { type ModelEntry, Seq, type SeqConstraint, type SeqInit, type SeqSink } from "./sequence.ts";

/** A scored prompt's rows in a chunk's scoring step: positions [from, from + count) at records [row, …). */
interface ScoredRows {
  seq: Seq;
  from: number;
  count: number;
  row: number;
}

interface Chunk {
  entry: ModelEntry;
  samplers: [number, Seq][][];
  /** the prompts its scoring step scores (StepSpec.score) */
  scored: ScoredRows[];
  /** the sequences whose embeddings its embedding step keeps (StepSpec.embed), in order */
  embedded: Seq[];
  seqs: Set<Seq>;
  result: Promise<ChunkResult>;
  steps: number;
  submitted: number;
  /** holds a prefill forward (its time says nothing about a decode step's) */
  prefill: boolean;
}

/**
 * While sequences decode, a prompt piece holds at most PIECE_STEPS times the decode step's rows (at least
 * PIECE_MIN_ROWS, so prompts advance): the batched kernels' time grows about linearly with the rows
 * (BENCHMARKS.md "Serving under load"), so the step that carries a piece delays the streams' next ids by
 * about 1 + PIECE_STEPS decode steps (issue 9: p99 inter-token latency within 3× the median while a long
 * prompt arrives). `--decoding-prefill-tokens` caps it further.
 */
const PIECE_STEPS = 2;
const PIECE_MIN_ROWS = 32;

/** How long the loop waits for a mask asked just before it plans a chunk (see the header). */
const MASK_GRACE_MS = 2;

/**
 * A mask asked for and not yet written: while a sequence has one, it samples nothing; one answering an older
 * request (no longer the sequence's entry in #maskWaits) is dropped.
 */
interface MaskWait {
  since: number;
  done: Promise<void>;
}

/** Scheduler tuning. */
export interface SchedulerOptions {
  /** most chunks submitted and not yet read */
  readAhead?: number;
  /** aim for chunks of about this many milliseconds of GPU time (ids arrive in bursts of one chunk) */
  chunkTargetMs?: number;
  /** keep full blocks for later prompts with the same start (the engine's default: BATCH_DEFAULTS) */
  prefixCaching?: boolean;
}

/** The batching loop. */
export class Scheduler {
  #entries: ModelEntry[] = [];
  #live = new Set<Seq>();
  /**
   * Sequences preempted while a chunk is planned. Their slots stay out of use until that chunk is submitted:
   * its earlier steps still read the slot's state, and a new owner's writes would land before them.
   */
  #preempted: Seq[] = [];
  #inflight: Chunk[] = [];
  #maskWaits = new Map<Seq, MaskWait>();
  #wake: (() => void) | null = null;
  #admitted = 0;
  #next = 0;
  #stepMs = 5;
  #lastDone = 0;
  #failed: Error | null = null;
  #readAhead: number;
  #targetMs: number;
  #prefixCaching: boolean;
  #models = 0;
  promptTokens = 0;
  generatedTokens = 0;
  preemptions = 0;
  /** prompt ids of first admissions, and those of them a cached prefix covered */
  prefixQueries = 0;
  prefixHits = 0;

  constructor({ readAhead = 3, chunkTargetMs = 15, prefixCaching = false }: SchedulerOptions = {}) {
    this.#readAhead = readAhead;
    this.#targetMs = chunkTargetMs;
    this.#prefixCaching = prefixCaching;
    this.#loop().catch((err) => this.#failAll(err as Error));
  }

  /** Adds a model; earlier ones drain. */
  addModel(runner: BatchRunner, onDrained: () => void): ModelEntry {
    for (const e of this.#entries) e.draining = true;
    const entry: ModelEntry = {
      runner,
      waiting: [],
      running: [],
      freeSlots: Array.from({ length: runner.options.maxSlots }, (_, i) => runner.options.maxSlots - 1 - i),
      draining: false,
      onDrained,
      prefixSalt: this.#prefixCaching ? `leanserve model ${this.#models++}` : null,
    };
    this.#entries.push(entry);
    this.#poke();
    return entry;
  }

  /** Queues one request's sequences (admitted together, sharing their prompt). */
  add(entry: ModelEntry, inits: SeqInit[]): Seq[] {
    if (this.#failed) throw this.#failed;
    const group: Seq[] = [];
    for (const init of inits) group.push(new Seq(init, entry, group));
    group.forEach((seq) => this.#live.add(seq));
    // Behind every waiting sequence of its priority or a higher one (a lower value): FCFS within a priority.
    const p = priorityOf(group[0]);
    const at = entry.waiting.findIndex((s) => priorityOf(s) > p);
    entry.waiting.splice(at < 0 ? entry.waiting.length : at, 0, ...group);
    this.#poke();
    return group;
  }

  /** Stops a sequence now (client gone): its slot and blocks are free for the next step. */
  cancel(seq: Seq): void {
    if (seq.state === "done") return;
    this.#finish(seq);
    this.#poke();
  }

  /** Counts for the metrics endpoint. */
  counts(): { running: number; waiting: number } {
    let running = 0;
    let waiting = 0;
    for (const e of this.#entries) {
      running += e.running.length;
      waiting += e.waiting.length;
    }
    return { running, waiting };
  }

  #poke(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async #loop(): Promise<void> {
    for (;;) {
      this.#retire();
      if (this.#inflight.length < this.#aheadNow()) {
        if (this.#maskWaits.size > 0) await this.#maskGrace();
        if (this.#submitNext()) continue;
      }
      if (this.#inflight.length > 0) {
        await this.#readOldest();
        continue;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Waits for the masks asked less than MASK_GRACE_MS ago, at most until the last of them is that old. */
  async #maskGrace(): Promise<void> {
    const now = performance.now();
    const fresh = [...this.#maskWaits.values()].filter((w) => now - w.since < MASK_GRACE_MS);
    if (fresh.length === 0) return;
    const left = Math.max(...fresh.map((w) => w.since)) + MASK_GRACE_MS - now;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(fresh.map((w) => w.done)),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, left))),
    ]);
    clearTimeout(timer);
  }

  /**
   * Asks for a constrained sequence's next mask and writes it to its slot when it comes (at once when the
   * constraint has it at hand); the sequence samples nothing meanwhile. A failed mask fails the sequence.
   */
  #askMask(entry: ModelEntry, seq: Seq): void {
    const fail = (err: unknown) => {
      if (seq.state === "done") return;
      this.#finish(seq);
      seq.init.sink.fail(err as Error);
    };
    this.#maskWaits.delete(seq); // an older request's answer is stale now
    let mask: Uint32Array | Promise<Uint32Array>;
    try {
      mask = seq.init.constraint!.mask(seq.output);
    } catch (err) {
      return fail(err);
    }
    if (mask instanceof Uint32Array) return entry.runner.setMask(seq.slot, mask);
    const current = () => this.#maskWaits.get(seq) === wait;
    const wait: MaskWait = {
      since: performance.now(),
      // A mask that fails, or cannot be written, fails its sequence; never the loop that awaits `done`.
      done: mask.then((words) => {
        if (current()) entry.runner.setMask(seq.slot, words);
      }).catch((err) => {
        if (current()) fail(err);
      }).finally(() => {
        if (current()) this.#maskWaits.delete(seq);
        this.#poke();
      }),
    };
    this.#maskWaits.set(seq, wait);
  }

  /**
   * Chunks to keep submitted ahead of the readback. A constrained sequence waits for its readback before its
   * next row, so each further queued chunk it is not in delays its next id by a chunk: with one running, two
   * (one chunk runs while the host reads the other, so the GPU still never waits on the host).
   */
  #aheadNow(): number {
    const constrained = this.#entries.some((e) => e.running.some((s) => s.init.constraint));
    return constrained ? Math.min(2, this.#readAhead) : this.#readAhead;
  }

  /** Plans and submits a chunk for the next model with work (round robin); false when none has any. */
  #submitNext(): boolean {
    for (let i = 0; i < this.#entries.length; i++) {
      const entry = this.#entries[(this.#next + i) % this.#entries.length];
      if (this.#plan(entry)) {
        this.#next = (this.#next + i + 1) % this.#entries.length;
        return true;
      }
    }
    return false;
  }

  #plan(entry: ModelEntry): boolean {
    const { maxChunk } = entry.runner.options;
    const steps = Math.max(1, Math.min(maxChunk, Math.round(this.#targetMs / this.#stepMs)));
    const chunk: Chunk = {
      entry,
      samplers: [],
      scored: [],
      embedded: [],
      seqs: new Set(),
      result: null!,
      steps: 0,
      submitted: 0,
      prefill: false,
    };
    const specs: StepSpec[] = [];
    let logprobs = false;
    const push = (step: StepSpec, samplers: [number, Seq][]) => {
      specs.push(step);
      chunk.samplers.push(samplers);
      for (const [, seq] of samplers) logprobs ||= seq.init.settings.logprobs;
    };
    // Each iteration: a decode forward (one row per running sequence), then a prefill forward. While
    // sequences decode, a chunk holds one prefill forward at most, after its first decode step: the
    // decoding streams get the chunk's ids when all of it has run, so each further decode step or prompt
    // piece in it would delay them again.
    while (specs.length < steps) {
      this.#admit(entry); // a draining model still serves the requests it accepted
      this.#growBlocks(entry);
      const decode = this.#decodeStep(entry, chunk);
      if (decode) push(...decode);
      const prompting = entry.running.some((s) => s.prefilling);
      const last = !decode || specs.length >= steps || prompting;
      const prefill = specs.length < maxChunk && last
        ? this.#prefillStep(entry, chunk, decode?.[0].rows.length ?? 0)
        : null;
      if (prefill) push(...prefill);
      if (!decode && !prefill) break;
      if (prefill) {
        chunk.prefill = true;
        if (decode || prefill[1].length > 0) break; // a first id: deliver it without waiting for a long chunk
        // one scoring and one embedding step per chunk (batch_runner.ts StepSpec.score, .embed)
        if (prefill[0].score || prefill[0].embed) break;
      }
    }
    if (specs.length > 0) {
      for (const seq of chunk.seqs) seq.inFlight++;
      chunk.steps = specs.length;
      chunk.submitted = performance.now();
      chunk.result = entry.runner.submit(specs, logprobs);
      chunk.result.catch(() => {}); // awaited in order by #readOldest
      this.#inflight.push(chunk);
    }
    for (const seq of this.#preempted.splice(0)) {
      seq.model.freeSlots.push(seq.slot);
      seq.slot = -1;
      this.#requeueIfIdle(seq);
    }
    return specs.length > 0;
  }

  /** One row for every sequence that decodes; null when none does. */
  #decodeStep(entry: ModelEntry, chunk: Chunk): [StepSpec, [number, Seq][]] | null {
    const step: StepSpec = { kind: "decode", rows: [], gather: [] };
    const samplers: [number, Seq][] = [];
    for (const seq of entry.running) {
      if (seq.prefilling || seq.sampled >= seq.budget) continue;
      // A constrained sequence's next mask needs the id it sampled last: one sampling row per readback.
      if (seq.init.constraint && (this.#maskWaits.has(seq) || seq.inFlight > 0 || chunk.seqs.has(seq))) {
        continue;
      }
      step.gather.push(step.rows.length);
      step.rows.push({ slot: seq.slot, pos: seq.computed++, token: null });
      samplers.push([seq.slot, seq]);
      seq.sampled++;
      chunk.seqs.add(seq);
    }
    return step.rows.length > 0 ? [step, samplers] : null;
  }

  /**
   * Pieces of prompts, oldest admission first, up to the row budget (smaller while `decodeRows` rows
   * decode); null when no prompt is pending.
   */
  #prefillStep(entry: ModelEntry, chunk: Chunk, decodeRows: number): [StepSpec, [number, Seq][]] | null {
    const { maxRows: most, decodingPrefillRows } = entry.runner.options;
    const piece = Math.max(PIECE_MIN_ROWS, PIECE_STEPS * decodeRows);
    const maxRows = decodeRows > 0 ? Math.min(most, decodingPrefillRows ?? most, piece) : most;
    const step: StepSpec = { kind: "prefill", rows: [], gather: [] };
    const samplers: [number, Seq][] = [];
    const pieces: [Seq, number][] = [];
    /** positions written once this step's rows are: a child may join its parent's last piece's step */
    const reach = new Map<Seq, number>();
    let taken = 0;
    for (const seq of entry.running) {
      const room = maxRows - taken;
      const parentReach = seq.parent && (reach.get(seq.parent) ?? seq.parent.computed);
      if (!seq.prefilling || room <= 0 || (parentReach !== null && parentReach < seq.start)) continue;
      // Without its mask, a constrained sequence's prompt stops short of the row that samples.
      const waits = this.#maskWaits.has(seq) ? 1 : 0;
      const n = Math.min(room, seq.prompt.length - seq.computed - waits);
      if (n <= 0) continue;
      pieces.push([seq, n]);
      reach.set(seq, seq.computed + n);
      taken += n;
    }
    // Scored prompts' rows first: the step scores rows [0, targets.length).
    pieces.sort(([a], [b]) => Number(b.scores !== null) - Number(a.scores !== null));
    const targets: number[] = [];
    const embeds: number[] = [];
    let top = 0;
    for (const [seq, n] of pieces) {
      if (seq.scores) {
        chunk.scored.push({ seq, from: seq.computed, count: n, row: step.rows.length });
        top = Math.max(top, seq.init.score!.top);
        // each row's next prompt id (the last row has none: it samples, if anything)
        for (let i = 1; i <= n; i++) targets.push(seq.prompt[seq.computed + i] ?? 0);
      }
      for (let i = 0; i < n; i++) {
        step.rows.push({ slot: seq.slot, pos: seq.computed, token: seq.prompt[seq.computed++] });
      }
      registerFull(seq);
      this.promptTokens += n;
      chunk.seqs.add(seq);
      if (!seq.prefilling && seq.budget > 0) {
        step.gather.push(step.rows.length - 1);
        samplers.push([seq.slot, seq]);
        seq.sampled++;
      } else if (!seq.prefilling && seq.init.embed) {
        step.gather.push(step.rows.length - 1); // its logits are not sampled; its hidden state is kept
        embeds.push(step.gather.length - 1);
        chunk.embedded.push(seq);
      }
    }
    if (targets.length > 0) step.score = { targets, top };
    if (embeds.length > 0) step.embed = embeds;
    return step.rows.length > 0 ? [step, samplers] : null;
  }

  /** Admits waiting sequences (whole groups) while slots and prompt blocks are free. */
  #admit(entry: ModelEntry): void {
    const cache = entry.runner.cache;
    const bs = cache.shape.blockSize;
    const watermark = Math.max(1, Math.ceil(cache.shape.numBlocks / 100));
    while (entry.waiting.length > 0) {
      const head = entry.waiting[0];
      const group = head.group.filter((s) => s.state === "waiting" && entry.waiting.includes(s));
      const first = head.output.length === 0 && head.sampledBase === 0;
      const fresh = group.length > 1 && group.every((s) => s.output.length === 0 && s.sampledBase === 0);
      const len = head.prompt.length;
      // A scored prompt reads every row: its logprobs come from them.
      const hit = head.scores ? [] : cachedPrefix(head);
      let members = fresh ? group : [head];
      let shared = fresh ? Math.floor((len - 1) / bs) : 0;
      const hold = (m: number) => cache.blocksFor(len) + (m - 1) * (cache.blocksFor(len) - shared);
      if (hold(members.length) > cache.shape.numBlocks) [members, shared] = [[head], 0]; // never fits together
      // Cached blocks that nobody holds leave the free count once held.
      const take = hold(members.length) - hit.length + cache.countFree(hit);
      // Keep a little room for running sequences to grow; an idle cache takes any prompt that fits.
      const room = this.#cacheBusy(cache) ? watermark : 0;
      if (entry.freeSlots.length < members.length || cache.freeBlocks < take + room) return;
      cache.share(hit);
      const parentBlocks = [...hit, ...cache.allocate(cache.blocksFor(len) - hit.length)!];
      if (first) {
        this.prefixQueries += len;
        this.prefixHits += hit.length * bs;
      }
      members.forEach((seq, i) => {
        if (i === 0) {
          seq.blocks = parentBlocks;
          seq.start = hit.length * bs;
          seq.registered = hit.length;
        } else {
          const own = cache.allocate(cache.blocksFor(len) - shared)!;
          cache.share(parentBlocks.slice(0, shared));
          seq.parent = members[0];
          seq.start = shared * bs;
          seq.registered = shared; // the parent registers them
          seq.blocks = [...parentBlocks.slice(0, shared), ...own];
        }
        seq.computed = seq.start;
        if (first) seq.init.sink.cached?.(hit.length * bs);
        this.#install(entry, seq);
      });
      entry.waiting = entry.waiting.filter((s) => !members.includes(s));
    }
  }

  /** Whether any model's running sequences hold blocks of `cache`. */
  #cacheBusy(cache: KvCache): boolean {
    return this.#entries.some((e) => e.runner.cache === cache && e.running.length > 0);
  }

  #install(entry: ModelEntry, seq: Seq): void {
    seq.slot = entry.freeSlots.pop()!;
    seq.state = "running";
    seq.sampled = 0;
    seq.admittedAt = this.#admitted++;
    entry.runner.setSlot(seq.slot, seq.init.settings, {
      step: seq.sampledBase,
      prompt: seq.init.prompt,
      output: seq.output,
      blocks: seq.blocks,
    });
    entry.running.push(seq);
    if (seq.init.constraint) this.#askMask(entry, seq);
    else if (seq.init.mask) entry.runner.setMask(seq.slot, seq.init.mask);
  }

  /** Gives every decoding sequence the block its next position needs, preempting when the cache is full. */
  #growBlocks(entry: ModelEntry): void {
    const cache = entry.runner.cache;
    const needy = () =>
      entry.running.filter((s) =>
        !s.prefilling && s.sampled < s.budget && cache.blocksFor(s.computed + 1) > s.blocks.length
      );
    for (;;) {
      const want = needy();
      if (want.length <= cache.freeBlocks) {
        for (const s of want) {
          const [b] = cache.allocate(1)!;
          entry.runner.setBlocks(s.slot, s.blocks.length, [b]);
          s.blocks.push(b);
        }
        return;
      }
      this.#preempt(cache);
    }
  }

  /**
   * Preempts a running sequence of any model on this cache: of the lowest priority (the largest value), the
   * most recently admitted.
   */
  #preempt(cache: KvCache): void {
    let victim: Seq | null = null;
    const later = (a: Seq, b: Seq) =>
      priorityOf(a) !== priorityOf(b) ? priorityOf(a) > priorityOf(b) : a.admittedAt > b.admittedAt;
    for (const e of this.#entries) {
      if (e.runner.cache !== cache) continue;
      for (const s of e.running) if (!victim || later(s, victim)) victim = s;
    }
    if (!victim) throw new Error("Cannot grow the KV cache: nothing to preempt");
    // Blocks may go to others at once (a later step writes a position before reading it); the slot may not.
    const e = victim.model;
    e.runner.cache.release(victim.blocks);
    victim.blocks = [];
    this.#maskWaits.delete(victim); // its slot goes to others; re-admission asks again
    e.running = e.running.filter((s) => s !== victim);
    victim.state = "preempted";
    this.#preempted.push(victim);
    this.preemptions++;
  }

  #requeueIfIdle(seq: Seq): void {
    if (seq.state !== "preempted" || seq.inFlight > 0) return;
    seq.state = "waiting";
    seq.prompt = [...seq.init.prompt, ...seq.output];
    seq.sampledBase = seq.output.length;
    seq.parent = null;
    seq.start = 0;
    seq.computed = 0;
    seq.registered = 0;
    seq.scoredRows = 0;
    // First of its priority (it was running): ahead of the waiting ones of its priority, behind higher ones.
    const waiting = seq.model.waiting;
    const at = waiting.findIndex((s) => priorityOf(s) >= priorityOf(seq));
    waiting.splice(at < 0 ? waiting.length : at, 0, seq);
  }

  #release(seq: Seq): void {
    const entry = seq.model;
    if (seq.slot >= 0 && !this.#preempted.includes(seq)) {
      entry.runner.cache.release(seq.blocks);
      entry.freeSlots.push(seq.slot);
      entry.running = entry.running.filter((s) => s !== seq);
    }
    seq.slot = -1;
    seq.blocks = [];
  }

  #finish(seq: Seq): void {
    this.#release(seq);
    seq.model.waiting = seq.model.waiting.filter((s) => s !== seq);
    seq.state = "done";
    seq.scores = null;
    this.#live.delete(seq);
    this.#maskWaits.delete(seq);
    seq.init.constraint?.release?.();
  }

  async #readOldest(): Promise<void> {
    const chunk = this.#inflight.shift()!;
    chunk.entry.runner.flush(chunk.result);
    const res = await chunk.result;
    const now = performance.now();
    const span = now - Math.max(this.#lastDone, chunk.submitted);
    this.#lastDone = now;
    // A chunk's length is planned in decode steps: a prompt piece's time would shorten the next chunks
    // and add readbacks.
    if (!chunk.prefill) this.#stepMs = 0.7 * this.#stepMs + 0.3 * Math.max(0.05, span / chunk.steps);
    this.#deliverScores(chunk, res);
    const dim = chunk.entry.runner.config.dim;
    chunk.embedded.forEach((seq, i) => {
      if (seq.state === "done") return;
      seq.init.embed!.done(res.embeds!.slice(i * dim, (i + 1) * dim));
      this.#finish(seq); // its work is done, even if it was preempted meanwhile
    });
    const slots = chunk.entry.runner.options.maxSlots;
    chunk.samplers.forEach((samplers, k) => {
      for (const [slot, seq] of samplers) {
        if (seq.state === "done") continue;
        const id = res.tokens[k * slots + slot];
        const rec = res.logprobs?.subarray((k * slots + slot) * RECORD, (k * slots + slot + 1) * RECORD) ??
          null;
        seq.output.push(id);
        this.generatedTokens++;
        registerFull(seq);
        if (seq.init.sink.token(id, rec) || seq.output.length >= seq.init.limit) this.#finish(seq);
        else if (seq.init.constraint && seq.state === "running") this.#askMask(chunk.entry, seq);
      }
    });
    for (const seq of chunk.seqs) {
      seq.inFlight--;
      // A prompt alone (limit 0: echo with max_tokens 0) ends once it is read.
      if (seq.init.limit === 0 && seq.state === "running" && !seq.prefilling && seq.inFlight === 0) {
        this.#finish(seq);
      }
      this.#requeueIfIdle(seq);
    }
  }

  /**
   * Keeps a chunk's prompt records and hands each prompt's to its sequence once all are read, before any
   * id of the chunk (its first comes with its last piece, or later).
   */
  #deliverScores(chunk: Chunk, res: ChunkResult): void {
    for (const { seq, from, count, row } of chunk.scored) {
      if (!seq.scores) continue; // done, or delivered
      const n = Math.max(0, Math.min(count, seq.init.prompt.length - 1 - from)); // the last row has none
      seq.scores.set(res.scores!.subarray(row * RECORD, (row + n) * RECORD), from * RECORD);
      seq.scoredRows += n;
    }
    for (const { seq } of chunk.scored) {
      const records = seq.scores;
      if (!records || seq.scoredRows < seq.init.prompt.length - 1) continue;
      seq.scores = null;
      seq.init.score!.done(records);
      if (seq.init.limit === 0) this.#finish(seq); // the prompt alone: done, even if preempted meanwhile
    }
  }

  /** Frees drained models. */
  #retire(): void {
    for (const e of this.#entries) {
      const busy = e.waiting.length > 0 || e.running.length > 0 || this.#inflight.some((c) => c.entry === e);
      if (!e.draining || busy) continue;
      this.#entries = this.#entries.filter((x) => x !== e);
      this.#next = 0;
      e.onDrained();
    }
  }

  #failAll(err: Error): void {
    this.#failed = err;
    for (const e of this.#entries) {
      e.running = [];
      e.waiting = [];
    }
    for (const s of this.#live) {
      s.state = "done";
      s.init.constraint?.release?.();
      s.init.sink.fail(err);
    }
    this.#live.clear();
    this.#maskWaits.clear();
  }
}

/** A sequence's place in the waiting order: lower first (GenerateRequest.priority). */
function priorityOf(seq: Seq): number {
  return seq.init.priority ?? 0;
}
