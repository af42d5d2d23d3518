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
   * The names of the first `blocks` full blocks of `tokens`. `tokens` must extend the stream the earlier
   * calls saw (a sequence's prompt, then its prompt and output).
   */
  upTo(tokens: readonly number[], blocks: number): readonly string[] {
    const bs = this.#blockSize;
    if (blocks * bs > tokens.length) {
      throw new Error(`Cannot name ${blocks} blocks of ${bs} positions: the stream has ${tokens.length} ids`);
    }
    for (let k = this.#names.length; k < blocks; k++) {
      const ids = Uint32Array.from(tokens.slice(k * bs, (k + 1) * bs));
      this.#names.push(
        createHash("sha256")
          .update(k === 0 ? this.#salt : this.#names[k - 1])
          .update(new Uint8Array(ids.buffer))
          .digest("base64"),
      );
    }
    return this.#names.slice(0, blocks);
  }
}
