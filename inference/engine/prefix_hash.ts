/**
 * Names of token prefixes for the prefix cache (block_pool.ts): block k of a sequence is named by a
 * SHA-256 over the name of block k − 1 and the ids of block k, so a name stands for every id from the
 * first position to the block's end (vLLM's prefix-caching hash). The first block's name starts from a
 * salt: one per served model, so a model that shares the cache during a hot swap never takes another
 * model's keys and values. SHA-256 rather than a fast 64-bit hash: a collision would hand a prompt another
 * prompt's keys and values, and hashing 64 bytes per 16 positions costs nothing next to computing them.
 */
import { createHash } from "node:crypto";

/** The names of a token stream's full blocks, computed as far as asked and kept. */
export class PrefixHashes {
  readonly #salt: string;
  readonly #blockSize: number;
  readonly #names: string[] = [];

  constructor(salt: string, blockSize: number) {
    this.#salt = salt;
    this.#blockSize = blockSize;
  }

  /**
   * The names of the first `blocks` full blocks of the stream that `parts` spell one after another (a
   * sequence's prompt, then its prompt and output: no copy of them is made). The stream must extend the
   * one the earlier calls saw.
   */
  upTo(blocks: number, ...parts: readonly (readonly number[])[]): readonly string[] {
    const bs = this.#blockSize;
    const length = parts.reduce((n, p) => n + p.length, 0);
    if (blocks * bs > length) {
      throw new Error(`Cannot name ${blocks} blocks of ${bs} positions: the stream has ${length} ids`);
    }
    const ids = new Uint32Array(bs);
    for (let k = this.#names.length; k < blocks; k++) {
      for (let j = 0; j < bs; j++) ids[j] = tokenAt(parts, k * bs + j);
      this.#names.push(
        createHash("sha256")
          .update(k === 0 ? this.#salt : this.#names[k - 1])
          .update(new Uint8Array(ids.buffer))
          .digest("base64"),
      );
    }
    // Most calls ask for every name known so far: no copy then.
    return this.#names.length === blocks ? this.#names : this.#names.slice(0, blocks);
  }
}

/** Id `i` of the stream `parts` spell. */
function tokenAt(parts: readonly (readonly number[])[], i: number): number {
  for (const p of parts) {
    if (i < p.length) return p[i];
    i -= p.length;
  }
  throw new Error(`Cannot read id ${i} past the stream's end`);
}
