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
  for (const token of tokens) {
    const start = bytes.length;
    let mapped = true;
    for (let i = 0; i < token.length; i++) {
      const cp = token.charCodeAt(i);
      const b = cp < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[cp] : -1;
      if (b < 0) {
        mapped = false;
        break;
      }
      bytes.push(b);
    }
    if (!mapped) {
      bytes.length = start;
      for (const b of ENCODER.encode(token)) bytes.push(b);
    }
  }
  return UTF8.decode(new Uint8Array(bytes));
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
