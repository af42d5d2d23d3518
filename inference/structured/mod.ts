/**
 * Structured output: JSON Schema (or a regex, a choice, a GBNF grammar) → a byte automaton → per-step token
 * masks (grammar-constrained decoding: OpenAI's `response_format`, vLLM's `structured_outputs`, forced
 * function calls). The engine keeps one {@link TokenVocab} per tokenizer and one {@link GrammarMatcher} per
 * constrained sequence; a {@link MaskThread} computes the masks beside the engine's loop; the GPU applies them
 * (kernels/ops/logits_process.ts). The whole path: docs/structured_output.md.
 */
export {
  afterReasoning,
  choiceGrammar,
  grammarOf,
  type JsonGrammar,
  type JsonNode,
  type ReasoningMarks,
  regexGrammar,
  type ToolCallMarks,
  toolCallsGrammar,
  type ToolSpec,
} from "./grammar.ts";
export { GbnfError, gbnfGrammar } from "./gbnf.ts";
export { LarkError, larkGrammar } from "./lark.ts";
export { compileJsonSchema, compileSchemaNode, jsonObjectGrammar } from "./json_schema.ts";
export { SchemaError } from "./json_schema_context.ts";
export { RegexError } from "./regex_nfa.ts";
export { GrammarMatcher, TokenVocab } from "./token_mask.ts";
export { MaskHandle, MaskPool, MaskThread } from "./mask_thread.ts";
export { GrammarCache, type PackedGrammar, packGrammar, unpackGrammar } from "./grammar_transfer.ts";
