/**
 * Decoders of a Hugging Face `tokenizer.json`: token strings in, text pieces out (HF `decode_chain`).
 * The tokenizer joins the final pieces with "". Invalid UTF-8 becomes U+FFFD exactly where HF puts it:
 * ByteLevel decodes all bytes at once (maximal-subpart replacement, as Rust's `from_utf8_lossy`),
 * ByteFallback writes one U+FFFD per byte of an invalid run.
 */
import { CHAR_TO_BYTE, type ComponentJson, patternRegex } from "./tokenizer_pretokenize.ts";

/** Maps the token strings of one decode call to text pieces. */
export type Decoder = (tokens: string[]) => string[];

const UTF8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/**
 * Builds the decoder function, or null when the JSON has none.
 * @param json the `decoder` entry
 * @returns the decode chain
 */
export function buildDecoder(json: ComponentJson | null | undefined): Decoder | null {
  if (!json) return null;
  switch (json.type) {
    case "Sequence": {
      const steps = (json.decoders as ComponentJson[]).map(buildDecoder).filter((d) => d !== null);
      return (tokens) => steps.reduce((ts, step) => step(ts), tokens);
    }
    case "ByteLevel":
      return (tokens) => [byteLevelDecode(tokens)];
    case "ByteFallback":
      return byteFallbackDecode;
    case "Fuse":
      return (tokens) => [tokens.join("")];
    case "Replace": {
      const regex = patternRegex(json.pattern);
      return (tokens) => tokens.map((t) => t.replace(regex, () => json.content as string));
    }
    case "Strip":
      return (tokens) =>
        tokens.map((t) => strip(t, json.content as string, json.start as number, json.stop as number));
    case "Metaspace": {
      const replacement = (json.replacement as string | undefined) ?? "▁";
      const never = json.prepend_scheme === "never" || json.add_prefix_space === false;
      // HF drops every replacement char of the first token (not only the leading one) unless "never"
      return (tokens) => tokens.map((t, i) => t.split(replacement).join(i === 0 && !never ? "" : " "));
    }
    default:
      throw new Error(`unsupported decoder type "${json.type}"`);
  }
}

/** Byte chars back to bytes; a token with any other char (an added token) contributes its UTF-8. */
function byteLevelDecode(tokens: string[]): string {
  const bytes: number[] = [];
  for (const token of tokens) pushByteLevelBytes(token, bytes);
  return UTF8.decode(new Uint8Array(bytes));
}

/** Appends the bytes of one ByteLevel token to `out` (its UTF-8 when a char is outside the byte table). */
function pushByteLevelBytes(token: string, out: number[]): void {
  const start = out.length;
  for (let i = 0; i < token.length; i++) {
    const cp = token.charCodeAt(i);
    const b = cp < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[cp] : -1;
    if (b < 0) {
      out.length = start;
      for (const u of ENCODER.encode(token)) out.push(u);
      return;
    }
    out.push(b);
  }
}

/** The byte of a `<0xNN>` token, or -1. */
export function byteTokenValue(token: string): number {
  if (token.length !== 6 || !token.startsWith("<0x") || token[5] !== ">") return -1;
  const v = parseInt(token.slice(3, 5), 16);
  return Number.isNaN(v) ? -1 : v;
}

/** Joins runs of `<0xNN>` tokens into text; an invalid run yields one U+FFFD per byte. */
function byteFallbackDecode(tokens: string[]): string[] {
  const out: string[] = [];
  let run: number[] = [];
  const flush = () => {
    if (run.length === 0) return;
    try {
      out.push(UTF8_STRICT.decode(new Uint8Array(run)));
    } catch {
      out.push(...run.map(() => "\uFFFD"));
    }
    run = [];
  };
  for (const token of tokens) {
    const b = byteTokenValue(token);
    if (b >= 0) {
      run.push(b);
    } else {
      flush();
      out.push(token);
    }
  }
  flush();
  return out;
}

/** Removes up to `start` leading and `stop` trailing copies of the char `content`. */
function strip(token: string, content: string, start: number, stop: number): string {
  const chars = Array.from(token);
  let from = 0;
  while (from < start && from < chars.length && chars[from] === content) from++;
  let to = chars.length;
  while (chars.length - to < stop && to > from && chars[to - 1] === content) to--;
  return chars.slice(from, to).join("");
}

/** One token on its way through a byte decoder: text, or raw bytes once a byte step has turned it into bytes. */
type Piece = string | Uint8Array;

/** One decoder step applied to a single token that is not the first of the text. */
type ByteStep = (piece: Piece) => Piece;

/** Maps a token string to the bytes it adds to decoded text when it is not the first token. */
export type ByteDecoder = (token: string) => Uint8Array;

/**
 * Builds the per-token form of the decode chain: the bytes a token adds in the middle of a decoded text,
 * so that `decode(ids)` is, as bytes, `decode([ids[0]])` followed by the bytes of `ids[1..]` (when all of
 * it is valid UTF-8). Metaspace's replacement char becomes a space; a Strip after Fuse or ByteLevel (which
 * join the tokens into one text) strips the ends of the whole text, so it leaves a middle token alone;
 * `<0xNN>` gives the byte NN and ByteLevel its raw bytes, which may end inside a UTF-8 character.
 * Text steps leave a token that is already bytes unchanged (a lone byte is not text yet); the HF chains
 * put Replace and Metaspace before the byte steps, and their Strip after a Fuse, where it skips a middle token.
 * @param json the `decoder` entry
 * @returns the byte decoder, or null when the JSON has none (decode then joins tokens with " ")
 * @example
 * ```ts
 * const bytes = buildByteDecoder({ type: "ByteLevel" })!;
 * console.assert(bytes("Ġæ").join() === "32,230"); // a space, then the first byte of "日"
 * ```
 */
export function buildByteDecoder(json: ComponentJson | null | undefined): ByteDecoder | null {
  if (!json) return null;
  const steps: ByteStep[] = [];
  let fused = false; // a Fuse or ByteLevel already joined the tokens: later steps see the whole text
  const add = (j: ComponentJson) => {
    if (j.type === "Sequence") (j.decoders as ComponentJson[]).forEach(add);
    else {
      steps.push(byteStep(j, fused));
      fused ||= j.type === "Fuse" || j.type === "ByteLevel";
    }
  };
  add(json);
  return (token) => {
    const piece = steps.reduce<Piece>((p, step) => step(p), token);
    return typeof piece === "string" ? ENCODER.encode(piece) : piece;
  };
}

/** One step of `buildByteDecoder`; `fused` says whether an earlier step joined the tokens into one text. */
function byteStep(json: ComponentJson, fused: boolean): ByteStep {
  const text = (f: (s: string) => string): ByteStep => (p) => typeof p === "string" ? f(p) : p;
  switch (json.type) {
    case "ByteLevel":
      return (p) => {
        if (typeof p !== "string") return p;
        const bytes: number[] = [];
        pushByteLevelBytes(p, bytes);
        return new Uint8Array(bytes);
      };
    case "ByteFallback":
      return (p) => {
        const b = typeof p === "string" ? byteTokenValue(p) : -1;
        return b >= 0 ? Uint8Array.of(b) : p;
      };
    case "Fuse":
      return (p) => p;
    case "Replace": {
      const regex = patternRegex(json.pattern);
      return text((s) => s.replace(regex, () => json.content as string));
    }
    case "Strip":
      // once fused, the strip applies to the ends of the whole text, which a middle token never is
      return fused
        ? (p) => p
        : text((s) => strip(s, json.content as string, json.start as number, json.stop as number));
    case "Metaspace": {
      const replacement = (json.replacement as string | undefined) ?? "▁";
      const never = json.prepend_scheme === "never" || json.add_prefix_space === false;
      // decode drops the replacement chars of token 0 only: once fused, all text is token 0
      const space = fused && !never ? "" : " ";
      return text((s) => s.split(replacement).join(space));
    }
    default:
      throw new Error(`unsupported decoder type "${json.type}"`);
  }
}

/**
 * The mid-text bytes of every id, as views into one shared buffer (one allocation for a 150k vocabulary).
 * @param tokens the token string of each id; null for an id that is never text (special or unknown)
 * @param decoder from `buildByteDecoder`; null joins tokens with " ", as decode does without a decoder
 * @returns the bytes of each id, null where `tokens` has null
 */
export function buildTokenBytesTable(
  tokens: readonly (string | null)[],
  decoder: ByteDecoder | null,
): (Uint8Array | null)[] {
  const pieces = tokens.map((t) => t === null ? null : decoder ? decoder(t) : ENCODER.encode(` ${t}`));
  const buffer = new Uint8Array(pieces.reduce((n, p) => n + (p?.length ?? 0), 0));
  let offset = 0;
  return pieces.map((p) => {
    if (p === null) return null;
    buffer.set(p, offset);
    offset += p.length;
    return buffer.subarray(offset - p.length, offset);
  });
}
