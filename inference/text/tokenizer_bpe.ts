/**
 * The BPE model of a Hugging Face `tokenizer.json`: one pre-tokenized word in, token ids out.
 * Mirrors `tokenizers/src/models/bpe/{model,word}.rs`: a word starts as one symbol per code point
 * (unknown ones fall back to `<0xNN>` byte tokens or to the unk token), then the adjacent pair with
 * the lowest merge rank is merged, leftmost first, until no pair has a rank.
 * A heap keeps that O(n log n), which matters for SentencePiece-style tokenizers without a
 * pre-tokenizer, where the whole text is one "word".
 */

/** `model` of a tokenizer.json with `type: "BPE"` (fields we read). */
export interface BpeModelJson {
  type?: string;
  vocab: Record<string, number>;
  /** Either "a b" strings (older files) or ["a", "b"] pairs. */
  merges: (string | [string, string])[];
  unk_token?: string | null;
  byte_fallback?: boolean;
  fuse_unk?: boolean;
  ignore_merges?: boolean;
  continuing_subword_prefix?: string | null;
  end_of_word_suffix?: string | null;
  dropout?: number | null;
}

/** Open-addressing hash map (id a, id b) → merge rank, kept in typed arrays so lookups allocate nothing. */
class PairTable {
  #a: Int32Array;
  #b: Int32Array;
  #rank: Int32Array;
  #mask: number;

  constructor(count: number) {
    let cap = 16;
    while (cap < count * 2) cap *= 2;
    this.#a = new Int32Array(cap).fill(-1);
    this.#b = new Int32Array(cap);
    this.#rank = new Int32Array(cap);
    this.#mask = cap - 1;
  }

  #slot(a: number, b: number): number {
    let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 13;
    let i = h & this.#mask;
    while (this.#a[i] !== -1 && (this.#a[i] !== a || this.#b[i] !== b)) i = (i + 1) & this.#mask;
    return i;
  }

  /** A later duplicate overwrites an earlier one, as the Rust HashMap collect does. */
  set(a: number, b: number, rank: number): void {
    const i = this.#slot(a, b);
    this.#a[i] = a;
    this.#b[i] = b;
    this.#rank[i] = rank;
  }

  /** The merge rank of the pair, or -1. */
  get(a: number, b: number): number {
    const i = this.#slot(a, b);
    return this.#a[i] === -1 ? -1 : this.#rank[i];
  }
}

/** Words longer than this are not cached (HF uses the same kind of bound). */
const MAX_CACHED_WORD = 256;
const MAX_CACHE_ENTRIES = 200_000;
/** Heap keys are rank · 2³² + position: ordering by key is ordering by (rank, position). */
const POS_SPAN = 4294967296;

/** A BPE model: vocabulary, ranked merges and the per-word merge loop. */
export class BpeModel {
  /** token string → id for the model vocabulary (added tokens live in the tokenizer). */
  readonly vocab: Map<string, number>;
  /** id → token string; holes where the vocabulary skips ids. */
  readonly idToToken: string[];
  #pairs: PairTable;
  /** [rank] → id of the merged token. */
  #mergedId: Int32Array;
  #unkId: number | null;
  #byteIds: Int32Array | null;
  #fuseUnk: boolean;
  #ignoreMerges: boolean;
  #prefix: string;
  #suffix: string;
  #cache = new Map<string, number[]>();

  /** Builds the model; throws on a merge whose parts or result are not in the vocabulary. */
  constructor(json: BpeModelJson) {
    if (json.dropout) throw new Error(`unsupported BPE dropout ${json.dropout}: inference needs it off`);
    this.vocab = new Map(Object.entries(json.vocab));
    this.idToToken = [];
    for (const [token, id] of this.vocab) this.idToToken[id] = token;
    this.#prefix = json.continuing_subword_prefix ?? "";
    this.#suffix = json.end_of_word_suffix ?? "";
    this.#fuseUnk = json.fuse_unk ?? false;
    this.#ignoreMerges = json.ignore_merges ?? false;
    const unk = json.unk_token ?? null;
    this.#unkId = unk === null ? null : this.vocab.get(unk) ?? null;
    if (unk !== null && this.#unkId === null) throw new Error(`unk_token "${unk}" is not in the vocabulary`);
    this.#byteIds = json.byte_fallback ? this.#collectByteTokens() : null;
    this.#pairs = new PairTable(json.merges.length);
    this.#mergedId = new Int32Array(json.merges.length);
    json.merges.forEach((merge, rank) => this.#addMerge(merge, rank));
  }

  #collectByteTokens(): Int32Array {
    const ids = new Int32Array(256).fill(-1);
    for (let b = 0; b < 256; b++) {
      ids[b] = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`) ?? -1;
    }
    return ids;
  }

  #addMerge(merge: string | [string, string], rank: number): void {
    let left: string, right: string;
    if (typeof merge === "string") {
      const space = merge.indexOf(" ");
      if (space < 0) throw new Error(`invalid merge "${merge}": expected two tokens separated by a space`);
      left = merge.slice(0, space);
      right = merge.slice(space + 1);
    } else {
      [left, right] = merge;
    }
    const a = this.vocab.get(left);
    const b = this.vocab.get(right);
    const merged = this.vocab.get(left + right.slice(this.#prefix.length));
    if (a === undefined || b === undefined || merged === undefined) {
      throw new Error(`invalid merge "${left} ${right}": a token is not in the vocabulary`);
    }
    this.#pairs.set(a, b, rank);
    this.#mergedId[rank] = merged;
  }

  /**
   * Token ids of one pre-tokenized word (already normalized and, for byte-level models, byte-mapped).
   * @param word the word's text
   * @returns its ids; the returned array is shared with the cache and must not be modified
   */
  tokenize(word: string): readonly number[] {
    const cached = this.#cache.get(word);
    if (cached !== undefined) return cached;
    let ids: number[];
    const whole = this.#ignoreMerges ? this.vocab.get(word) : undefined;
    if (whole !== undefined) ids = [whole];
    else ids = this.#merge(this.#symbols(word));
    if (word.length <= MAX_CACHED_WORD) {
      if (this.#cache.size >= MAX_CACHE_ENTRIES) this.#cache.clear();
      this.#cache.set(word, ids);
    }
    return ids;
  }

  /** Initial symbols: one per code point, with byte fallback or (fused) unk for unknown ones. */
  #symbols(word: string): number[] {
    const out: number[] = [];
    const chars = Array.from(word);
    let pendingUnk = false;
    for (let i = 0; i < chars.length; i++) {
      let s = chars[i];
      if (i > 0) s = this.#prefix + s;
      if (i === chars.length - 1) s += this.#suffix;
      const id = this.vocab.get(s);
      if (id !== undefined) {
        pendingUnk = false;
        out.push(id);
        continue;
      }
      const bytes = this.#byteIds === null ? null : this.#fallbackBytes(s);
      if (bytes !== null) {
        pendingUnk = false;
        out.push(...bytes);
      } else if (this.#unkId !== null) {
        // fuse_unk collapses a run of unknown characters into one unk token
        if (!(this.#fuseUnk && pendingUnk)) out.push(this.#unkId);
        pendingUnk = true;
      }
    }
    return out;
  }

  #fallbackBytes(s: string): number[] | null {
    const ids: number[] = [];
    for (const b of new TextEncoder().encode(s)) {
      const id = this.#byteIds![b];
      if (id < 0) return null;
      ids.push(id);
    }
    return ids;
  }

  /** Applies merges lowest rank first, leftmost first (HF `Word::merge_all` without dropout). */
  #merge(symbols: number[]): number[] {
    const n = symbols.length;
    if (n < 2) return symbols;
    const ids = Int32Array.from(symbols);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    const heap = new MinHeap();
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
      if (i + 1 < n) this.#push(heap, ids[i], ids[i + 1], i);
    }
    while (heap.size > 0) {
      const key = heap.pop();
      const rank = Math.floor(key / POS_SPAN);
      const pos = key - rank * POS_SPAN;
      const right = next[pos];
      // stale entries: the left symbol was absorbed, or the pair changed since it was queued
      if (!alive[pos] || right < 0 || this.#pairs.get(ids[pos], ids[right]) !== rank) continue;
      ids[pos] = this.#mergedId[rank];
      alive[right] = 0;
      next[pos] = next[right];
      if (next[pos] >= 0) prev[next[pos]] = pos;
      if (prev[pos] >= 0) this.#push(heap, ids[prev[pos]], ids[pos], prev[pos]);
      if (next[pos] >= 0) this.#push(heap, ids[pos], ids[next[pos]], pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(ids[i]);
    return out;
  }

  #push(heap: MinHeap, a: number, b: number, pos: number): void {
    const rank = this.#pairs.get(a, b);
    if (rank >= 0) heap.push(rank * POS_SPAN + pos);
  }
}

/** Binary min-heap of numbers. */
class MinHeap {
  #items: number[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(value: number): void {
    const items = this.#items;
    let i = items.length;
    items.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.#items;
    const top = items[0];
    const last = items.pop()!;
    const n = items.length;
    if (n === 0) return top;
    let i = 0;
    while (true) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && items[child + 1] < items[child]) child++;
      if (items[child] >= last) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
    return top;
  }
}
