/**
 * Normalizers and pre-tokenizers of a Hugging Face `tokenizer.json`, as plain string functions.
 * Offsets are never needed for inference, so unlike `tokenizers` we track none.
 * Split patterns are Oniguruma regexes; `toJsRegex` rewrites the two constructs whose meaning differs
 * in JavaScript: the `(?i:...)` group (Llama-3, Qwen2) and `\s`.
 */

/** A `normalizer`, `pre_tokenizer` or `decoder` entry: a `type` plus its own fields. */
export interface ComponentJson {
  type: string;
  [field: string]: unknown;
}

/** Rewrites the text before pre-tokenization. */
export type Normalizer = (text: string) => string;

/**
 * Splits the pieces of one text segment further.
 * `atStart` is true when the segment begins the input (Metaspace's "first" scheme needs it).
 */
export type PreTokenizer = (pieces: string[], atStart: boolean) => string[];

/** GPT-2's table: printable bytes map to themselves, the rest to U+0100 onwards, so every byte is a visible char. */
export const BYTE_TO_CHAR: readonly string[] = buildByteTable();
/** Inverse of BYTE_TO_CHAR, indexed by code point (−1 when the char is not a byte char). */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => table[ch.codePointAt(0)!] = b);
  return table;
})();

function buildByteTable(): string[] {
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    chars.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return chars;
}

const ENCODER = new TextEncoder();

/** The UTF-8 bytes of `text`, each written as its byte char. */
export function toByteChars(text: string): string {
  let out = "";
  for (const b of ENCODER.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** HF's Whitespace pre-tokenizer `\w+|[^\w\s]+`, with Rust's Unicode `\w`. */
const WORD_OR_SYMBOLS = /[\p{L}\p{N}\p{M}\p{Pc}]+|[^\p{L}\p{N}\p{M}\p{Pc}\s]+/gu;
/** GPT-2's split regex, used by ByteLevel when `use_regex` is true. */
const GPT2_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
/** Oniguruma's Unicode `\s`: JavaScript's adds U+FEFF and lacks U+0085. */
const WS = String.raw`\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`;

/**
 * Translates a tokenizer.json Split regex to a global Unicode JS RegExp.
 * `(?i:...)` becomes a plain group whose ASCII letters list both cases, e.g. `(?i:'s)` → `(?:'[sS])`.
 * @param pattern the regex source from the JSON
 * @returns the equivalent RegExp with flags `gu`
 */
export function toJsRegex(pattern: string): RegExp {
  let out = "";
  let inClass = false;
  const groups: boolean[] = []; // per open group: is it case-insensitive
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    const fold = groups.includes(true);
    if (c === "\\") {
      const e = pattern[i + 1];
      if (e === "s") out += inClass ? WS : `[${WS}]`;
      else if (e === "S" && !inClass) out += `[^${WS}]`;
      else if ((e === "p" || e === "P") && pattern[i + 2] === "{") {
        const end = pattern.indexOf("}", i);
        out += pattern.slice(i, end + 1);
        i = end - 1;
      } else out += c + e;
      i++;
    } else if (inClass) {
      if (c === "]") inClass = false;
      out += fold && /[a-zA-Z]/.test(c) ? c.toLowerCase() + c.toUpperCase() : c;
    } else if (c === "[") {
      inClass = true;
      out += c;
      if (pattern[i + 1] === "^") out += pattern[++i];
    } else if (c === "(") {
      const insensitive = pattern.startsWith("(?i:", i);
      groups.push(insensitive);
      out += insensitive ? "(?:" : c;
      if (insensitive) i += 3;
    } else if (c === ")") {
      groups.pop();
      out += c;
    } else {
      out += fold && /[a-zA-Z]/.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c;
    }
  }
  return new RegExp(out, "gu");
}

/** HF's SplitDelimiterBehavior. */
type Behavior = "Removed" | "Isolated" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";

/**
 * Splits `text` into matches and gaps, then groups them as `behavior` says (HF `NormalizedString::split`).
 * @param text the piece to split
 * @param regex a global RegExp
 * @param behavior what to do with the matched delimiters
 * @param invert treat the gaps as the delimiters instead
 * @returns the non-empty pieces in order
 */
export function splitBy(text: string, regex: RegExp, behavior: Behavior, invert = false): string[] {
  const parts: { s: string; match: boolean }[] = [];
  let last = 0;
  regex.lastIndex = 0;
  for (let m = regex.exec(text); m !== null; m = regex.exec(text)) {
    if (m[0].length === 0) {
      regex.lastIndex++;
      continue;
    }
    if (m.index > last) parts.push({ s: text.slice(last, m.index), match: invert });
    parts.push({ s: m[0], match: !invert });
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push({ s: text.slice(last), match: invert });
  if (behavior === "Isolated") return parts.map((p) => p.s);
  if (behavior === "Removed") return parts.filter((p) => !p.match).map((p) => p.s);
  const out: string[] = [];
  let previousMatch = false;
  if (behavior === "MergedWithNext") {
    for (let i = parts.length - 1; i >= 0; i--) {
      const p = parts[i];
      if (p.match && !previousMatch && out.length > 0) out[out.length - 1] = p.s + out[out.length - 1];
      else out.push(p.s);
      previousMatch = p.match;
    }
    return out.reverse();
  }
  for (const p of parts) {
    const glue = behavior === "Contiguous" ? p.match === previousMatch : p.match && !previousMatch;
    if (glue && out.length > 0) out[out.length - 1] += p.s;
    else out.push(p.s);
    previousMatch = p.match;
  }
  return out;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** A `{ String }` or `{ Regex }` pattern object as a global RegExp. */
export function patternRegex(pattern: unknown): RegExp {
  const p = pattern as { String?: string; Regex?: string };
  if (typeof p?.String === "string") return new RegExp(escapeRegex(p.String), "gu");
  if (typeof p?.Regex === "string") return toJsRegex(p.Regex);
  throw new Error(`unsupported pattern ${JSON.stringify(pattern)}`);
}

/**
 * Builds the normalizer function, or null when the JSON has none.
 * @param json the `normalizer` entry
 * @returns a string → string function
 */
export function buildNormalizer(json: ComponentJson | null | undefined): Normalizer | null {
  if (!json) return null;
  switch (json.type) {
    case "Sequence": {
      const steps = (json.normalizers as ComponentJson[]).map(buildNormalizer).filter((n) => n !== null);
      return (text) => steps.reduce((t, step) => step(t), text);
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
      return (text) => text.normalize(json.type);
    case "Lowercase":
      return (text) => text.toLowerCase();
    case "Prepend":
      return (text) => text.length > 0 ? (json.prepend as string) + text : text;
    case "Replace": {
      const regex = patternRegex(json.pattern);
      return (text) => text.replace(regex, () => json.content as string);
    }
    case "Strip": {
      const left = json.strip_left !== false, right = json.strip_right !== false;
      return (text) => right ? (left ? text.trim() : text.trimEnd()) : left ? text.trimStart() : text;
    }
    default:
      throw new Error(`unsupported normalizer type "${json.type}"`);
  }
}

/**
 * Builds the pre-tokenizer function, or null when the JSON has none.
 * @param json the `pre_tokenizer` entry
 * @returns a function from pieces to finer pieces
 */
export function buildPreTokenizer(json: ComponentJson | null | undefined): PreTokenizer | null {
  if (!json) return null;
  const each = (split: (piece: string, atStart: boolean) => string[]): PreTokenizer => (pieces, atStart) =>
    pieces.flatMap((piece, i) => split(piece, atStart && i === 0));
  switch (json.type) {
    case "Sequence": {
      const steps = (json.pretokenizers as ComponentJson[]).map(buildPreTokenizer).filter((p) => p !== null);
      return (pieces, atStart) => steps.reduce((ps, step) => step(ps, atStart), pieces);
    }
    case "ByteLevel": {
      const regex = json.use_regex === false ? null : toJsRegex(GPT2_PATTERN);
      const prefix = json.add_prefix_space === true;
      return each((piece) => {
        const text = prefix && !piece.startsWith(" ") ? " " + piece : piece;
        return (regex ? splitBy(text, regex, "Isolated") : [text]).map(toByteChars);
      });
    }
    case "Split": {
      const regex = patternRegex(json.pattern);
      const behavior = json.behavior as Behavior;
      return each((piece) => splitBy(piece, regex, behavior, json.invert === true));
    }
    case "Digits": {
      const regex = json.individual_digits ? /\p{N}/gu : /\p{N}+/gu;
      return each((piece) => splitBy(piece, regex, "Isolated"));
    }
    case "Metaspace":
      return buildMetaspace(json);
    case "WhitespaceSplit":
      return each((piece) => splitBy(piece, new RegExp(`[${WS}]+`, "gu"), "Removed"));
    case "Whitespace":
      return each((piece) => splitBy(piece, WORD_OR_SYMBOLS, "Isolated").filter((s) => /\S/u.test(s)));
    case "Punctuation":
      return each((piece) =>
        splitBy(piece, /[\p{P}!-/:-@[-`{-~]/gu, (json.behavior as Behavior) ?? "Isolated")
      );
    default:
      throw new Error(`unsupported pre_tokenizer type "${json.type}"`);
  }
}

/** SentencePiece's space handling: spaces become ▁, a ▁ is prepended, pieces start at each ▁. */
function buildMetaspace(json: ComponentJson): PreTokenizer {
  const replacement = (json.replacement as string | undefined) ?? "▁";
  // older files carry add_prefix_space instead of prepend_scheme
  const scheme = (json.prepend_scheme as string | undefined) ??
    (json.add_prefix_space === false ? "never" : "always");
  const split = json.split !== false;
  const sep = new RegExp(escapeRegex(replacement), "gu");
  return (pieces, atStart) =>
    pieces.flatMap((piece, i) => {
      let text = piece.replaceAll(" ", replacement);
      const prepend = scheme === "always" || (scheme === "first" && atStart && i === 0);
      if (prepend && !text.startsWith(replacement)) text = replacement + text;
      return split ? splitBy(text, sep, "MergedWithNext") : [text];
    });
}
