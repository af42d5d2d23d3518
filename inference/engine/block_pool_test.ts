/**
 * The block allocator and the prefix names: shared blocks return once their last holder lets go, cached
 * ones stay matchable until evicted (never-cached blocks go first, then the least recently freed, a
 * sequence's tail before its start), and a prefix's name covers every id up to its block's end.
 */
import assert from "node:assert/strict";
import { BlockPool } from "./block_pool.ts";
import { PrefixHashes } from "./prefix_hash.ts";

Deno.test("BlockPool counts holders and frees a block with its last one", () => {
  const pool = new BlockPool(4);
  const a = pool.allocate(2)!;
  assert.deepEqual(a, [0, 1], "lower ids first");
  pool.share([a[0]]);
  pool.release(a);
  assert.deepEqual([pool.usedBlocks, pool.freeBlocks], [1, 3]);
  pool.release([a[0]]);
  assert.deepEqual([pool.usedBlocks, pool.freeBlocks, pool.cachedBlocks], [0, 4, 0]);
  assert.equal(pool.allocate(5), null, "all or nothing");
  assert.equal(pool.freeBlocks, 4);
  assert.throws(() => pool.release([a[0]]), /already free/);
  assert.throws(() => pool.share([a[0]]), /it is free/);
});

Deno.test("BlockPool keeps registered blocks matchable after release, until it must evict them", () => {
  const pool = new BlockPool(4);
  const seq = pool.allocate(3)!;
  ["h0", "h1", "h2"].forEach((h, i) => pool.register(seq[i], h));
  assert.deepEqual(pool.match(["h0", "h1", "x", "h2"]), [seq[0], seq[1]], "a run from the first name");
  pool.release(seq);
  assert.deepEqual([pool.usedBlocks, pool.cachedBlocks, pool.freeBlocks], [0, 3, 4]);
  // Taking a cached block back holds it again: it leaves the free count.
  const hit = pool.match(["h0", "h1"]);
  assert.equal(pool.countFree(hit), 2);
  pool.share(hit);
  assert.deepEqual([pool.usedBlocks, pool.cachedBlocks, pool.countFree(hit)], [2, 1, 0]);
  pool.release(hit);
  // Never-cached blocks go first, then the least recently freed: the first sequence's tail (h2), and of
  // the two released since, again the tail (h1) before the start (h0).
  const [fresh] = pool.allocate(1)!;
  assert.ok(!seq.includes(fresh));
  assert.deepEqual(pool.match(["h0", "h1", "h2"]), [seq[0], seq[1], seq[2]]);
  pool.allocate(1);
  assert.deepEqual(pool.match(["h0", "h1", "h2"]), [seq[0], seq[1]], "h2 evicted");
  pool.allocate(1);
  assert.deepEqual(pool.match(["h0", "h1"]), [seq[0]], "h1 evicted before h0");
  assert.equal(pool.cachedBlocks, 1);
});

Deno.test("BlockPool keeps the first copy of a prefix and never registers a free block", () => {
  const pool = new BlockPool(3);
  const [a, b] = pool.allocate(2)!;
  pool.register(a, "h");
  pool.register(b, "h"); // the same ids computed twice: the first copy serves
  pool.register(a, "other"); // a registered block keeps its name
  assert.deepEqual(pool.match(["h"]), [a]);
  assert.deepEqual(pool.match(["other"]), []);
  pool.release([a, b]);
  assert.equal(pool.cachedBlocks, 1, "the unregistered copy is plainly free");
  assert.throws(() => pool.register(b, "g"), /it is free/);
});

Deno.test("PrefixHashes names a block by every id up to its end, and by the model", () => {
  const ids = Array.from({ length: 40 }, (_, i) => i);
  const names = new PrefixHashes("m0", 16).upTo(2, ids);
  assert.equal(names.length, 2);
  assert.notEqual(names[0], names[1]);
  // The same second block after another first block has another name.
  const other = [99, ...ids.slice(1)];
  const theirs = new PrefixHashes("m0", 16).upTo(2, other);
  assert.notEqual(theirs[0], names[0]);
  assert.notEqual(theirs[1], names[1]);
  // Another model (salt) names the same ids apart.
  assert.notEqual(new PrefixHashes("m1", 16).upTo(1, ids)[0], names[0]);
  // Names grow with the stream and stay what they were.
  const h = new PrefixHashes("m0", 16);
  h.upTo(1, ids.slice(0, 16));
  assert.deepEqual(h.upTo(2, ids.slice(0, 20), ids.slice(20)), names, "a stream in two parts");
  assert.deepEqual(h.upTo(1, ids), [names[0]]);
  assert.throws(() => h.upTo(3, ids), /the stream has 40 ids/);
});
