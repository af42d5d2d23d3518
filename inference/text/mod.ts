/**
 * Text: tokenizers (byte-level and SentencePiece-style BPE) and chat templates.
 */
export {
  type ChatMessage,
  type ChatTemplate,
  type ChatToolCall,
  loadChatTemplate,
  type ToolCallFormat,
} from "./chat_template.ts";
export { createStreamDecoder, createTokenizer, loadTokenizer, type Tokenizer } from "./tokenizer.ts";
