/**
 * The byte-level NFA every regular expression of structured output compiles to, and the UTF-8 byte sequences
 * its edges read: a character class becomes the byte ranges of its characters' encodings. Apart from the
 * parser (regex_parser.ts) and the DFA (regex.ts) because three builders make these NFAs: the parser from a
 * pattern, gbnf_regular.ts from a GBNF grammar's regular parts, and regex.ts's DFAs of object keys (lists of
 * names, lengths, and the intersection of DFAs).
 */

/** A pattern the compiler cannot take. */
export class RegexError extends Error {}

/**
 * NFA: per state, byte ranges [lo, hi] to a state, and ε-edges (built by regex_parser.ts, gbnf_regular.ts or
 * regex.ts's key DFAs).
 */
export interface Nfa {
  edges: [lo: number, hi: number, to: number][][];
  eps: number[][];
  start: number;
  accept: number;
}

const encoder = new TextEncoder();

/** Byte-level alternatives of one Unicode character class, as UTF-8 byte sequences of ranges. */
export type ByteSeq = [lo: number, hi: number][];

/** Every UTF-8 character except those of `exclude` (ASCII code points), as byte sequences. */
export function anyChar(excludeAscii: (c: number) => boolean): ByteSeq[] {
  const out: ByteSeq[] = [];
  // ASCII, minus the excluded: maximal runs.
  for (let c = 0; c < 0x80;) {
    if (excludeAscii(c)) {
      c++;
      continue;
    }
    let d = c;
    while (d + 1 < 0x80 && !excludeAscii(d + 1)) d++;
    out.push([[c, d]]);
    c = d + 1;
  }
  const cont: [number, number] = [0x80, 0xbf];
  out.push([[0xc2, 0xdf], cont], [[0xe0, 0xef], cont, cont], [[0xf0, 0xf4], cont, cont, cont]);
  return out;
}

/** The UTF-8 bytes of one code point, each as a range of one byte. */
export function bytesOf(cp: number): ByteSeq {
  return Array.from(encoder.encode(String.fromCodePoint(cp)), (b): [number, number] => [b, b]);
}

/**
 * The UTF-8 encodings of code points lo..hi (surrogates left out) as byte sequences of ranges: the range is
 * split until each piece's first and last characters differ only in bytes that span whole ranges (the
 * method of Rust's regex-syntax `Utf8Sequences`).
 */
export function utf8Seqs(lo: number, hi: number, out: ByteSeq[] = []): ByteSeq[] {
  if (lo > hi) return out;
  if (lo <= 0xdfff && hi >= 0xd800) {
    utf8Seqs(lo, 0xd7ff, out);
    return utf8Seqs(0xe000, hi, out);
  }
  for (const max of [0x7f, 0x7ff, 0xffff]) {
    if (lo <= max && hi > max) {
      utf8Seqs(lo, max, out);
      return utf8Seqs(max + 1, hi, out);
    }
  }
  const n = hi < 0x80 ? 1 : hi < 0x800 ? 2 : hi < 0x10000 ? 3 : 4;
  for (let k = 1; k < n; k++) {
    const m = (1 << (6 * k)) - 1; // the low k continuation bytes
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        utf8Seqs(lo, lo | m, out);
        return utf8Seqs((lo | m) + 1, hi, out);
      }
      if ((hi & m) !== m) {
        utf8Seqs(lo, (hi & ~m) - 1, out);
        return utf8Seqs(hi & ~m, hi, out);
      }
    }
  }
  const a = bytesOf(lo), b = bytesOf(hi);
  out.push(a.map(([x], k): [number, number] => [x, b[k][0]]));
  return out;
}
