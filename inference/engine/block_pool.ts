/**
 * The KV cache's block allocator, on the host: reference counts (sequences that share a prompt share its
 * full blocks) and automatic prefix caching (vLLM's APC): a full block whose positions are written may be
 * registered under the hash of every token up to its end (prefix_hash.ts); when its last holder lets go
 * it stays cached, evictable, and a later prompt that starts with the same tokens takes it back instead of
 * recomputing it. Allocation takes never-cached blocks first, then evicts the least recently freed cached
 * one. A sequence's blocks are let go tail first, so its prefix outlives its tail.
 */

/** The block ids a cache holds, their holders and their cached prefixes. */
export class BlockPool {
  readonly numBlocks: number;
  /** free blocks that hold no cached prefix; popped from the end, lower ids first */
  #free: number[];
  /** free blocks that hold a cached prefix, least recently freed first (a Map keeps insertion order) */
  #evictable = new Map<number, true>();
  #refs: Uint32Array;
  #hashOf: (string | null)[];
  #byHash = new Map<string, number>();

  constructor(numBlocks: number) {
    this.numBlocks = numBlocks;
    this.#free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.#refs = new Uint32Array(numBlocks);
    this.#hashOf = new Array(numBlocks).fill(null);
  }

  /** Blocks a new allocation may take: never-cached free blocks and evictable cached ones. */
  get freeBlocks(): number {
    return this.#free.length + this.#evictable.size;
  }

  /** Blocks some sequence holds. */
  get usedBlocks(): number {
    return this.numBlocks - this.freeBlocks;
  }

  /** Free blocks that still hold a cached prefix. */
  get cachedBlocks(): number {
    return this.#evictable.size;
  }

  /** Takes `n` free blocks (reference 1 each; evicting cached ones last), or returns null and takes none. */
  allocate(n: number): number[] | null {
    if (n > this.freeBlocks) return null;
    const fresh = Math.min(n, this.#free.length);
    const out = this.#free.splice(this.#free.length - fresh, fresh).reverse();
    for (const b of this.#evictable.keys()) {
      if (out.length === n) break;
      this.#evictable.delete(b);
      this.#byHash.delete(this.#hashOf[b]!);
      this.#hashOf[b] = null;
      out.push(b);
    }
    for (const b of out) this.#refs[b] = 1;
    return out;
  }

  /** Adds a holder to blocks that another sequence holds or that are cached (a shared or cached prefix). */
  share(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.#refs[b] === 0 && !this.#evictable.delete(b)) {
        throw new Error(`Cannot share KV block ${b}: it is free`);
      }
      this.#refs[b]++;
    }
  }

  /** Drops one holder of each block, tail first; blocks nobody holds become free (cached ones evictable). */
  release(blocks: readonly number[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const b = blocks[i];
      if (this.#refs[b] === 0) throw new Error(`Cannot release KV block ${b}: it is already free`);
      if (--this.#refs[b] > 0) continue;
      if (this.#hashOf[b] === null) this.#free.push(b);
      else this.#evictable.set(b, true);
    }
  }

  /**
   * Registers held block `block` as the one whose positions hold the prefix `hash` names. A block already
   * registered, or a prefix another block holds, stays as it is (the first copy serves later prompts).
   */
  register(block: number, hash: string): void {
    if (this.#refs[block] === 0) throw new Error(`Cannot register KV block ${block}: it is free`);
    if (this.#hashOf[block] !== null || this.#byHash.has(hash)) return;
    this.#hashOf[block] = hash;
    this.#byHash.set(hash, block);
  }

  /** The cached blocks of the longest run of `hashes` from the first, in order (not yet held). */
  match(hashes: readonly string[]): number[] {
    const out: number[] = [];
    for (const h of hashes) {
      const b = this.#byHash.get(h);
      if (b === undefined) break;
      out.push(b);
    }
    return out;
  }

  /** How many of `blocks` are free (cached): holding them takes them out of {@link freeBlocks}. */
  countFree(blocks: readonly number[]): number {
    return blocks.filter((b) => this.#refs[b] === 0).length;
  }
}
