/**
 * Structured output: JSON Schema → a byte automaton → per-step token masks (grammar-constrained decoding,
 * OpenAI's `response_format`). The engine keeps one {@link TokenVocab} per tokenizer and one
 * {@link GrammarMatcher} per constrained sequence; the GPU applies the masks (kernels/ops/logits_process.ts).
 */
export { compileJsonSchema, type JsonGrammar, jsonObjectGrammar, SchemaError } from "./json_schema.ts";
export { GrammarMatcher, maskWordCount, TokenVocab } from "./token_mask.ts";
