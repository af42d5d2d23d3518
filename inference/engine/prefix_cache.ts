/**
 * Prefix caching (vLLM's automatic prefix caching) as the scheduler runs it: which cached blocks an
 * admitted prompt takes, and when a running sequence's full blocks are registered for later prompts. The
 * blocks live in the cache's allocator (block_pool.ts) under the names of prefix_hash.ts; the model's salt
 * (`ModelEntry.prefixSalt`, null when caching is off) keeps models sharing a cache apart, and a request's
 * own (`cache_salt`) keeps it apart from requests without that salt.
 */
import { PrefixHashes } from "./prefix_hash.ts";
import type { Seq } from "./sequence.ts";

/** The cached blocks that hold the start of `seq`'s prompt (all of it but its last id), not yet held. */
export function cachedPrefix(seq: Seq): number[] {
  const salt = seq.model.prefixSalt;
  if (salt === null) return [];
  const cache = seq.model.runner.cache;
  const bs = cache.shape.blockSize;
  seq.names ??= namesOf(seq, salt, bs);
  return cache.match(seq.names.upTo(Math.floor((seq.prompt.length - 1) / bs), seq.prompt));
}

/**
 * Registers the blocks of a running sequence that became full: every position written or planned, every
 * id known (a decode row's id is known once it is read back). With --batch-invariant only prompt rows'
 * blocks: decode rows run other kernels than prompt rows, so a block a decode step wrote has other bits
 * than the same ids prefilled, and a later prompt's answer would depend on whether it was still cached.
 */
export function registerFull(seq: Seq): void {
  const salt = seq.model.prefixSalt;
  if (salt === null || seq.state !== "running") return;
  const runner = seq.model.runner;
  const cache = runner.cache;
  const bs = cache.shape.blockSize;
  const known = runner.options.batchInvariant
    ? seq.prompt.length
    : seq.init.prompt.length + seq.output.length;
  const full = Math.min(Math.floor(seq.computed / bs), Math.floor(known / bs), seq.blocks.length);
  if (full <= seq.registered) return;
  seq.names ??= namesOf(seq, salt, bs);
  const names = seq.names.upTo(full, seq.init.prompt, seq.output);
  for (let k = seq.registered; k < full; k++) cache.register(seq.blocks[k], names[k]);
  seq.registered = full;
}

/** A sequence's block names: its model's salt, then its request's. */
function namesOf(seq: Seq, salt: string, blockSize: number): PrefixHashes {
  const own = seq.init.cacheSalt;
  return new PrefixHashes(own === undefined ? salt : `${salt}\u0000${own}`, blockSize);
}
