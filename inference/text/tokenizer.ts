/**
 * Our own reader of Hugging Face `tokenizer.json` files, BPE models only: byte-level BPE (GPT-2, SmolLM2,
 * Llama-3, Qwen2/3) and SentencePiece-style BPE with byte fallback (Llama-2, stories260K).
 * The encode pipeline follows `tokenizers`' order: added tokens → normalizer → pre-tokenizer → BPE →
 * post-processor (see https://huggingface.co/docs/tokenizers/pipeline). Decode runs the JSON's decoder
 * chain over the token strings, as `TokenizerImpl::decode` does.
 */
import { join } from "node:path";
import { BpeModel, type BpeModelJson } from "./tokenizer_bpe.ts";
import {
  buildByteDecoder,
  buildDecoder,
  buildTokenBytesTable,
  type ByteDecoder,
  type Decoder,
} from "./tokenizer_decoders.ts";
import {
  buildNormalizer,
  buildPreTokenizer,
  type ComponentJson,
  type Normalizer,
  type PreTokenizer,
} from "./tokenizer_pretokenize.ts";
import {
  type AddedTokenJson,
  AddedTokenMatcher,
  buildPostProcessor,
  type PostProcessor,
  type Segment,
} from "./tokenizer_special.ts";

export type { AddedTokenJson } from "./tokenizer_special.ts";
export type { BpeModelJson } from "./tokenizer_bpe.ts";
export type { ComponentJson } from "./tokenizer_pretokenize.ts";

/** The parts of tokenizer.json that we read. */
export interface TokenizerJson {
  model: BpeModelJson | { type: string };
  added_tokens?: AddedTokenJson[] | null;
  normalizer?: ComponentJson | null;
  pre_tokenizer?: ComponentJson | null;
  post_processor?: ComponentJson | null;
  decoder?: ComponentJson | null;
}

/** A special-token entry of tokenizer_config.json: a plain string or an AddedToken object. */
type ConfigToken = string | { content: string } | null | undefined;

/** The parts of tokenizer_config.json that we read. */
export interface TokenizerConfigJson {
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  bos_token?: ConfigToken;
  eos_token?: ConfigToken;
}

/** Options of `Tokenizer.encode`. */
export interface EncodeOptions {
  /** Run the post-processor (e.g. prepend BOS). Default true. */
  addSpecialTokens?: boolean;
  /** Turn special-token text such as "<|im_start|>" into its id; false encodes it as plain text. Default true. */
  parseSpecialTokens?: boolean;
}

/** Options of `Tokenizer.decode`. */
export interface DecodeOptions {
  /** Drop special added tokens (BOS, EOS, <|im_end|>, ...). Default false, as in transformers. */
  skipSpecialTokens?: boolean;
  /**
   * Special tokens (their content) whose text stays although `skipSpecialTokens` drops the others: the marks
   * a chat format's function calls are read by (Mistral's `[TOOL_CALLS]`, `[ARGS]`). Default none.
   */
  keepSpecialTokens?: readonly string[];
}

/** A loaded tokenizer: text ↔ token ids. */
export class Tokenizer {
  /** 1 + the highest id of the model vocabulary or the added tokens. */
  readonly vocabSize: number;
  /** Contents of the added tokens marked special. */
  readonly specialTokens: ReadonlySet<string>;
  /** Ids of the added tokens marked special. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** From tokenizer_config.json `bos_token` / `eos_token`; null when absent (a name that is no token fails the load). */
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  #model: BpeModel;
  #added: AddedTokenJson[];
  #addedById = new Map<number, AddedTokenJson>();
  #addedByContent = new Map<string, AddedTokenJson>();
  #normalizer: Normalizer | null;
  #preTokenizer: PreTokenizer | null;
  #postProcessor: PostProcessor;
  #decoder: Decoder | null;
  #byteDecoder: ByteDecoder | null;
  #tokenBytes: readonly (Uint8Array | null)[] | null = null;
  #matchers = new Map<string, AddedTokenMatcher | null>();

  /** Use `loadTokenizer` or `createTokenizer`, which turn build errors into one clear message. */
  constructor(json: TokenizerJson, config: TokenizerConfigJson | null) {
    const type = json.model.type ?? ("merges" in json.model ? "BPE" : "unknown");
    if (type !== "BPE") throw new Error(`unsupported model type "${type}"`);
    this.#model = new BpeModel(json.model as BpeModelJson);
    this.#added = json.added_tokens ?? [];
    let size = this.#model.idToToken.length;
    for (const t of this.#added) {
      this.#addedById.set(t.id, t);
      this.#addedByContent.set(t.content, t);
      size = Math.max(size, t.id + 1);
    }
    this.vocabSize = size;
    const special = this.#added.filter((t) => t.special);
    this.specialTokens = new Set(special.map((t) => t.content));
    this.specialTokenIds = new Set(special.map((t) => t.id));
    this.#normalizer = buildNormalizer(json.normalizer);
    this.#preTokenizer = buildPreTokenizer(json.pre_tokenizer);
    this.#decoder = buildDecoder(json.decoder);
    this.#byteDecoder = buildByteDecoder(json.decoder);
    this.bosTokenId = this.#configTokenId(config?.bos_token, "bos_token");
    this.eosTokenId = this.#configTokenId(config?.eos_token, "eos_token");
    this.#postProcessor = buildPostProcessor(json.post_processor, {
      addBos: config?.add_bos_token ?? false,
      addEos: config?.add_eos_token ?? false,
      bosId: this.bosTokenId,
      eosId: this.eosTokenId,
    });
  }

  #configTokenId(token: ConfigToken, name: string): number | null {
    if (token === null || token === undefined) return null;
    const content = typeof token === "string" ? token : token.content;
    const id = this.tokenToId(content);
    if (id === null) throw new Error(`tokenizer_config.json ${name} "${content}" is not a token`);
    return id;
  }

  /**
   * Encodes text to token ids.
   * @param text the input
   * @param options see EncodeOptions
   * @returns the ids, post-processed when `addSpecialTokens`
   */
  encode(text: string, { addSpecialTokens = true, parseSpecialTokens = true }: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    for (const seg of this.#splitAdded(text, false, parseSpecialTokens)) {
      if ("id" in seg) {
        ids.push(seg.id);
        continue;
      }
      const normalized = this.#normalizer ? this.#normalizer(seg.text) : seg.text;
      for (const sub of this.#splitAdded(normalized, true, parseSpecialTokens)) {
        if ("id" in sub) ids.push(sub.id);
        else this.#encodePlain(sub.text, seg.start === 0 && sub.start === 0, ids);
      }
    }
    return addSpecialTokens ? this.#postProcessor(ids) : ids;
  }

  #encodePlain(text: string, atStart: boolean, out: number[]): void {
    const pieces = this.#preTokenizer ? this.#preTokenizer([text], atStart) : [text];
    for (const piece of pieces) {
      for (const id of this.#model.tokenize(piece)) out.push(id);
    }
  }

  /** Splits on the added tokens matched before (`normalized` false) or after normalization. */
  #splitAdded(text: string, normalizedStage: boolean, parseSpecial: boolean): Segment[] {
    const key = `${normalizedStage}/${parseSpecial}`;
    let matcher = this.#matchers.get(key);
    if (matcher === undefined) {
      const tokens = this.#added.filter((t) =>
        (t.normalized ?? !t.special) === normalizedStage && (parseSpecial || !t.special)
      );
      // normalized tokens are looked for in normalized text, so their content is normalized too
      const norm = normalizedStage ? this.#normalizer : null;
      matcher = tokens.length === 0
        ? null
        : new AddedTokenMatcher(tokens, (t) => norm ? norm(t.content) : t.content);
      this.#matchers.set(key, matcher);
    }
    if (matcher) return matcher.split(text);
    return text.length > 0 ? [{ text, start: 0 }] : [];
  }

  /**
   * Decodes token ids to text. Unknown ids are skipped, as in `tokenizers`.
   * @param ids the token ids
   * @param options see DecodeOptions
   * @returns the text; invalid UTF-8 becomes U+FFFD
   */
  decode(
    ids: Iterable<number>,
    { skipSpecialTokens = false, keepSpecialTokens = [] }: DecodeOptions = {},
  ): string {
    const tokens: string[] = [];
    for (const id of ids) {
      const added = this.#addedById.get(id);
      if (skipSpecialTokens && added?.special && !keepSpecialTokens.includes(added.content)) continue;
      const token = added?.content ?? this.#model.idToToken[id];
      if (token !== undefined) tokens.push(token);
    }
    return this.#decoder ? this.#decoder(tokens).join("") : tokens.join(" ");
  }

  /**
   * The bytes an id adds to text when it is decoded in the middle of a sequence (not first): what grammar-
   * constrained decoding walks. They may end inside a UTF-8 character (byte-level and `<0xNN>` tokens).
   * @param id the token id
   * @returns the bytes (a view into the shared table: do not modify); null for special added tokens (they
   *   are never text) and unknown ids
   */
  tokenBytes(id: number): Uint8Array | null {
    return this.tokenBytesTable()[id] ?? null;
  }

  /**
   * `tokenBytes` of every id, built on the first call and cached.
   * @returns the table, of length `vocabSize`
   */
  tokenBytesTable(): readonly (Uint8Array | null)[] {
    if (this.#tokenBytes === null) {
      const tokens = Array.from(
        { length: this.vocabSize },
        (_, id) => this.specialTokenIds.has(id) ? null : this.idToToken(id),
      );
      this.#tokenBytes = Object.freeze(buildTokenBytesTable(tokens, this.#byteDecoder));
    }
    return this.#tokenBytes;
  }

  /** The id of a token string (added tokens first, then the vocabulary), or null. */
  tokenToId(token: string): number | null {
    return this.#addedByContent.get(token)?.id ?? this.#model.vocab.get(token) ?? null;
  }

  /** The token string of an id (added tokens first, then the vocabulary), or null. */
  idToToken(id: number): string | null {
    return this.#addedById.get(id)?.content ?? this.#model.idToToken[id] ?? null;
  }
}

/**
 * Builds a tokenizer from parsed tokenizer.json (and optionally tokenizer_config.json) contents.
 * @param json the tokenizer.json object
 * @param options `config`: tokenizer_config.json object; `source`: the name used in error messages
 * @returns the tokenizer
 * @example
 * ```ts
 * const tok = createTokenizer({
 *   model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] },
 * });
 * console.assert(tok.encode("ab").join() === "2");
 * ```
 */
export function createTokenizer(
  json: TokenizerJson,
  { config = null, source = "tokenizer.json" }: { config?: TokenizerConfigJson | null; source?: string } = {},
): Tokenizer {
  try {
    return new Tokenizer(json, config);
  } catch (err) {
    throw new Error(`Cannot load tokenizer "${source}": ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Loads `<dir>/tokenizer.json`, plus `<dir>/tokenizer_config.json` when present.
 * @param dir the model folder
 * @returns the tokenizer
 * @example
 * ```ts ignore
 * const tok = await loadTokenizer("../shared/models/stories260K");
 * tok.encode("Once upon a time"); // [1, 403, 407, 261, 378]
 * ```
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const path = join(dir, "tokenizer.json");
  const json = await readJson(path) as TokenizerJson | null;
  if (json === null) throw new Error(`Cannot load tokenizer "${path}": file not found`);
  const config = await readJson(join(dir, "tokenizer_config.json")) as TokenizerConfigJson | null;
  return createTokenizer(json, { config, source: path });
}

/** Parsed JSON, or null when the file does not exist. */
async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot load tokenizer "${path}": ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot load tokenizer "${path}": invalid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Prompt ids kept as decoding context by a stream decoder (enough for any merge of spaces and bytes). */
const STREAM_CONTEXT = 6;

/** Turns a stream of generated ids into text pieces that never end inside a UTF-8 character. */
export interface StreamDecoder {
  /** Adds one id; returns the newly completed text ("" while a character is still incomplete). */
  push(id: number): string;
  /** Returns whatever is held back (incomplete bytes become U+FFFD) and resets the decoder. */
  flush(): string;
}

/**
 * Creates an incremental decoder (the scheme of HF `DecodeStream`): it decodes a short window of ids
 * that starts with already-emitted tokens, so decoders that look at the first token (SentencePiece's
 * leading-space strip) behave as in a full decode, and emits only the new suffix. Text ending in
 * U+FFFD is held back because the next token may complete the character; a genuine U+FFFD is thus
 * delayed by one token.
 * A completion continues a prompt, so pass the prompt's last ids as `context`: they start the window
 * without being emitted, and the first generated token keeps the space a full decode gives it.
 * @param tokenizer the tokenizer
 * @param options `skipSpecialTokens` (default true: streamed text is for people) and `keepSpecialTokens`, as
 *   in `decode`; `context` ids
 * @returns the decoder
 */
export function createStreamDecoder(
  tokenizer: Tokenizer,
  { skipSpecialTokens = true, keepSpecialTokens = [], context = [] }: DecodeOptions & {
    context?: readonly number[];
  } = {},
): StreamDecoder {
  const options = { skipSpecialTokens, keepSpecialTokens };
  let window: number[] = context.slice(-STREAM_CONTEXT);
  let prefix = tokenizer.decode(window, options);
  let prefixCount = window.length; // ids at the start of `window` already emitted and kept only as context
  return {
    push(id: number): string {
      window.push(id);
      const text = tokenizer.decode(window, options);
      if (text.length <= prefix.length || text.endsWith("\uFFFD")) return "";
      const piece = text.slice(prefix.length);
      window = window.slice(prefixCount);
      prefixCount = window.length;
      prefix = tokenizer.decode(window, options);
      return piece;
    },
    flush(): string {
      const text = tokenizer.decode(window, options);
      const piece = text.length > prefix.length ? text.slice(prefix.length) : "";
      window = [];
      prefix = "";
      prefixCount = 0;
      return piece;
    },
  };
}
