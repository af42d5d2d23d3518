/**
 * Added tokens and post-processing of a Hugging Face `tokenizer.json`.
 * Added tokens are cut out of the text before the normalizer and BPE run (HF `AddedVocabulary`):
 * leftmost match first, the longest token winning at one position, then lstrip/rstrip widen the cut over
 * whitespace and single_word rejects matches glued to word characters.
 */
import type { ComponentJson } from "./tokenizer_pretokenize.ts";

/** One entry of `added_tokens`. */
export interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  single_word?: boolean;
  normalized?: boolean;
}

/** A piece of input: an added token's id, or text starting at `start` in the string that was split. */
export type Segment = { id: number } | { text: string; start: number };

const WHITESPACE = /\s/u;
const WORD_CHAR = /[\p{L}\p{N}_]/u;

/** Finds added tokens in text; built once per (token subset, content form). */
export class AddedTokenMatcher {
  #regex: RegExp;
  #byContent = new Map<string, AddedTokenJson>();

  /**
   * @param tokens the tokens to look for
   * @param contentOf the string to match for a token (its content, or its normalized content)
   */
  constructor(tokens: AddedTokenJson[], contentOf: (token: AddedTokenJson) => string) {
    for (const t of tokens) {
      const content = contentOf(t);
      if (content.length > 0 && !this.#byContent.has(content)) this.#byContent.set(content, t);
    }
    // longest first, so that the alternation prefers the longest token at a position
    const alternatives = [...this.#byContent.keys()].sort((a, b) => b.length - a.length)
      .map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"));
    this.#regex = new RegExp(alternatives.join("|"), "gu");
  }

  /**
   * Splits `text` into added tokens and the text between them.
   * @param text the string to search
   * @returns segments in order; text segments are non-empty
   */
  split(text: string): Segment[] {
    if (this.#byContent.size === 0) return text.length > 0 ? [{ text, start: 0 }] : [];
    const out: Segment[] = [];
    const regex = this.#regex;
    let offset = 0;
    regex.lastIndex = 0;
    for (let m = regex.exec(text); m !== null; m = regex.exec(text)) {
      const token = this.#byContent.get(m[0])!;
      let start = m.index;
      let stop = start + m[0].length;
      if (token.single_word && (WORD_CHAR.test(text[start - 1] ?? "") || WORD_CHAR.test(text[stop] ?? ""))) {
        continue;
      }
      if (token.lstrip) { while (start > offset && WHITESPACE.test(text[start - 1])) start--; }
      if (token.rstrip) { while (stop < text.length && WHITESPACE.test(text[stop])) stop++; }
      if (start > offset) out.push({ text: text.slice(offset, start), start: offset });
      out.push({ id: token.id });
      offset = stop;
      regex.lastIndex = stop;
    }
    if (offset < text.length) out.push({ text: text.slice(offset), start: offset });
    return out;
  }
}

/** Adds special tokens around the ids of one sequence. */
export type PostProcessor = (ids: number[]) => number[];

/** What the post-processor needs from the rest of the tokenizer. */
export interface PostProcessorContext {
  /** `add_bos_token` / `add_eos_token` from tokenizer_config.json, used only when the JSON adds nothing. */
  addBos: boolean;
  addEos: boolean;
  bosId: number | null;
  eosId: number | null;
}

/**
 * Builds the post-processor for single sequences.
 * When tokenizer.json has none (or only ByteLevel, which adds nothing), tokenizer_config.json's
 * `add_bos_token` / `add_eos_token` decide, as transformers does for such files.
 * @param json the `post_processor` entry
 * @param ctx config flags and special ids
 * @returns the processor (identity when nothing is added)
 */
export function buildPostProcessor(
  json: ComponentJson | null | undefined,
  ctx: PostProcessorContext,
): PostProcessor {
  const fromJson = json ? processorFromJson(json) : null;
  if (fromJson) return fromJson;
  const before = ctx.addBos && ctx.bosId !== null ? [ctx.bosId] : [];
  const after = ctx.addEos && ctx.eosId !== null ? [ctx.eosId] : [];
  return (ids) => before.length + after.length === 0 ? ids : [...before, ...ids, ...after];
}

/** The processor, or null when this JSON adds no tokens. */
function processorFromJson(json: ComponentJson): PostProcessor | null {
  switch (json.type) {
    case "ByteLevel":
      return null;
    case "Sequence": {
      const steps = (json.processors as ComponentJson[]).map(processorFromJson).filter((p) => p !== null);
      return steps.length === 0 ? null : (ids) => steps.reduce((acc, step) => step(acc), ids);
    }
    case "TemplateProcessing":
      return templateProcessor(json);
    case "BertProcessing":
    case "RobertaProcessing": {
      const cls = (json.cls as [string, number])[1];
      const sep = (json.sep as [string, number])[1];
      return (ids) => [cls, ...ids, sep];
    }
    default:
      throw new Error(`unsupported post_processor type "${json.type}"`);
  }
}

type TemplateItem = { SpecialToken: { id: string } } | { Sequence: { id: string } };

function templateProcessor(json: ComponentJson): PostProcessor {
  const specials = json.special_tokens as Record<string, { ids: number[] }>;
  const parts = (json.single as TemplateItem[]).map((item) => {
    if ("Sequence" in item) return null;
    const special = specials[item.SpecialToken.id];
    if (!special) throw new Error(`TemplateProcessing names unknown special token "${item.SpecialToken.id}"`);
    return special.ids;
  });
  return (ids) => {
    const out: number[] = [];
    for (const part of parts) {
      for (const id of part ?? ids) out.push(id);
    }
    return out;
  };
}
