import assert from "node:assert/strict";
import { loadTokenizer } from "../text/mod.ts";
import { sharedPath } from "../../tests/_gpu.ts";
import { badWordIds, BadWords, badWordsConstraint, maskWithout } from "./bad_words.ts";
import { EngineInputError } from "./types.ts";

/** The ids a mask allows. */
function allowedIds(mask: Uint32Array, vocab: number): number[] {
  return Array.from({ length: vocab }, (_, id) => id).filter((id) => (mask[id >>> 5] >>> (id & 31)) & 1);
}

Deno.test("badWordIds() tokenizes a word bare and after a space, as vLLM does", async () => {
  const dir = sharedPath("models/lq-49m");
  if (!dir) return;
  const tok = await loadTokenizer(dir);
  const enc = (t: string) => tok.encode(t, { addSpecialTokens: false });
  // SmolLM2's byte-level BPE: " world" is one id other than "world"'s, so both are banned
  const bad = badWordIds(tok, ["  world", "unbelievably"]);
  const seqs = [...bad.always.map((id) => [id]), ...bad.sequences];
  assert.ok(seqs.some((s) => s.join() === enc("world").join()), "the bare word, leading spaces dropped");
  assert.ok(seqs.some((s) => s.join() === enc(" world").join()), "the spaced word");
  assert.notDeepEqual(enc("world"), enc(" world"));
  // a spaced form of another length is left out (vLLM's rule)
  for (const word of ["unbelievably", "world"]) {
    const [bare, spaced] = [enc(word), enc(" " + word)];
    const listed = seqs.some((s) => s.join() === spaced.join());
    assert.equal(listed, spaced.length === bare.length && spaced[0] !== bare[0], word);
  }
  assert.throws(
    () => badWordIds(tok, ["ok", "   "]),
    (e: unknown) => e instanceof EngineInputError && e.param === "bad_words[1]",
  );
});

Deno.test("BadWords bans a one-token word always and a longer one's last id after the rest", () => {
  const bad = new BadWords([[7], [3, 4, 5], [4, 9], [7]]);
  assert.deepEqual(bad.always, [7]);
  assert.equal(bad.dynamic, true);
  assert.deepEqual(bad.bannedAfter([]), [7]);
  assert.deepEqual(bad.bannedAfter([1, 3, 4]).sort(), [5, 7, 9]);
  assert.deepEqual(bad.bannedAfter([3, 4, 1]), [7]);
  assert.deepEqual(bad.bannedAfter([4]), [7, 9]);
  assert.equal(new BadWords([[2], [3]]).dynamic, false);
});

Deno.test("maskWithout() and badWordsConstraint() take the bans out of a base or a grammar's mask", async () => {
  const vocab = 70; // three mask words, the last one partial
  const all = maskWithout(vocab, null, [0, 33, 69, 500]);
  assert.deepEqual(
    allowedIds(all, vocab),
    Array.from({ length: 70 }, (_, i) => i).filter((i) => ![0, 33, 69].includes(i)),
  );
  assert.equal(all[2] >>> 6, 0, "no bit past the vocabulary");
  const base = maskWithout(vocab, null, []).map((_, i) => i === 0 ? 0b1110 : 0); // ids 1, 2, 3
  assert.deepEqual(allowedIds(maskWithout(vocab, base, [2]), vocab), [1, 3]);
  assert.deepEqual(allowedIds(base, vocab), [1, 2, 3], "the base is not changed");

  const bad = new BadWords([[2], [5, 3]]);
  const plain = badWordsConstraint(bad, vocab, base, null);
  assert.deepEqual(allowedIds(plain.mask([]) as Uint32Array, vocab), [1, 3]);
  assert.deepEqual(allowedIds(plain.mask([5]) as Uint32Array, vocab), [1]);
  // over a grammar whose masks come later (the mask thread), and its release passed on
  let released = 0;
  const grammar = {
    mask: () => Promise.resolve(maskWithout(vocab, null, [])),
    release: () => released++,
  };
  const wrapped = badWordsConstraint(bad, vocab, null, grammar);
  const m = await wrapped.mask([1, 5]);
  assert.deepEqual(allowedIds(m, vocab).filter((id) => id < 6), [0, 1, 4, 5]);
  wrapped.release!();
  assert.equal(released, 1);
});
