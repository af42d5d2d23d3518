/**
 * A sequence as the scheduler (scheduler.ts) tracks it, the sink its sampled ids go to, and a served model's
 * queue and running set.
 */
import { LOGPROB_RECORD_WORDS, type SlotSettings } from "../../kernels/ops/mod.ts";
import type { BatchRunner } from "./batch_runner.ts";
import type { PrefixHashes } from "./prefix_hash.ts";

/** Where a sequence's sampled ids go. */
export interface SeqSink {
  /** One sampled id and its logprob record (or null); returns true to stop the sequence. */
  token(id: number, logprobs: Uint32Array | null): boolean;
  /** The engine failed; the sequence is gone. */
  fail(err: Error): void;
  /** Once, at the sequence's first admission: the prompt ids its cached prefix saved prefilling. */
  cached?(tokens: number): void;
}

/** What a grammar allows next (structured output): the sequence samples one id per chunk, masked. */
export interface SeqConstraint {
  /**
   * The mask of the ids allowed after `taken` (kernels/ops/logits_process.ts): at once, or when the mask
   * thread (structured/mask_thread.ts) has walked it.
   * @param taken the sequence's output so far (the ids its sink has taken)
   */
  mask(taken: readonly number[]): Uint32Array | Promise<Uint32Array>;
  /** The sequence is over (finished, cancelled, failed): called once. */
  release?(): void;
}

/** What a sequence needs to run. */
export interface SeqInit {
  prompt: readonly number[];
  /** most ids to sample in all */
  limit: number;
  settings: SlotSettings;
  sink: SeqSink;
  /** its prefix-cache blocks are shared only with sequences of the same salt (GenerateRequest.cacheSalt) */
  cacheSalt?: string;
  /** the grammar its output follows (its sink advances it), or absent */
  constraint?: SeqConstraint;
  /** a mask for every id it samples (allowed_token_ids), written at admission; not with a constraint */
  mask?: Uint32Array;
  /** admitted before sequences of a larger value, preempted after them (GenerateRequest.priority); 0 */
  priority?: number;
  /**
   * Prompt logprobs: its prompt rows are scored in the prefill that reads them (no cached prefix is
   * taken), and `done` gets record t (LOGPROB_RECORD_WORDS u32, kernels/ops/logprobs.ts) for prompt[t + 1],
   * t < prompt.length − 1, with `top` alternatives, once, before the sequence's first id.
   */
  score?: { top: number; done(records: Uint32Array): void };
  /**
   * With limit 0: `done` gets the final-normed hidden state of the prompt's last row (the LM head's input:
   * a last-token embedding, config.dim f32) once its prefill is read.
   */
  embed?: { done(vector: Float32Array): void };
}

/** Where a sequence is in its life. */
export type SeqState = "waiting" | "running" | "preempted" | "done";

/** A sequence as the scheduler tracks it. */
export class Seq {
  readonly init: SeqInit;
  readonly model: ModelEntry;
  /** ids to prefill: the prompt, or prompt + output after a preemption */
  prompt: readonly number[];
  output: number[] = [];
  state: SeqState = "waiting";
  slot = -1;
  blocks: number[] = [];
  /** positions whose KV is written or scheduled */
  computed = 0;
  /** ids sampled or scheduled in this admission */
  sampled = 0;
  /** chunks in flight that hold rows of this sequence */
  inFlight = 0;
  /** the sequence whose prompt blocks below `start` this one shares (n > 1), else null */
  parent: Seq | null = null;
  start = 0;
  admittedAt = 0;
  /** its leading blocks registered in the prefix cache (or held from it) */
  registered = 0;
  /** the names of its full blocks (prefix_hash.ts), made when first needed */
  names: PrefixHashes | null = null;
  /** sequences admitted together (one request's choices) */
  group: Seq[];
  /** SeqInit.score's records as they are read; null when not asked or once delivered */
  scores: Uint32Array | null;
  /** prompt positions of `scores` read in this admission */
  scoredRows = 0;

  constructor(init: SeqInit, model: ModelEntry, group: Seq[]) {
    this.init = init;
    this.model = model;
    this.prompt = init.prompt;
    this.group = group;
    this.scores = init.score
      ? new Uint32Array(Math.max(0, init.prompt.length - 1) * LOGPROB_RECORD_WORDS)
      : null;
  }

  get prefilling(): boolean {
    return this.computed < this.prompt.length;
  }

  /** ids of earlier admissions (already part of `prompt`) */
  sampledBase = 0;

  /** Ids this admission may sample. */
  get budget(): number {
    return this.init.limit - this.sampledBase;
  }
}

/** One served model: its runner, queue and running set. */
export interface ModelEntry {
  runner: BatchRunner;
  waiting: Seq[];
  running: Seq[];
  freeSlots: number[];
  /** a newer model was installed: admit nothing more, free once empty */
  draining: boolean;
  /** called once the entry is empty after draining */
  onDrained: () => void;
  /** what names this model's blocks in the prefix cache (prefix_hash.ts), or null when it is off */
  prefixSalt: string | null;
}
