/**
 * Chat templates: the Jinja program a Hugging Face model ships to turn messages into its prompt text.
 * Rendered with @huggingface/jinja (the engine transformers.js uses); the template is compiled once at load.
 * Sources, in the order transformers reads them: `chat_template.jinja`, then `tokenizer_config.json`'s
 * `chat_template` (a string, or a list of `{name, template}` from which "default" is used).
 */
import { join } from "node:path";
import { Template } from "@huggingface/jinja";

/** One message of a conversation, as chat templates read it (their snake_case names). */
export interface ChatMessage {
  role: string;
  content: string;
  /** An assistant turn's function calls. */
  tool_calls?: ChatToolCall[];
  /** A tool turn: the call it answers. */
  tool_call_id?: string;
}

/**
 * A function call in an assistant turn. `arguments` is an object where the client's JSON text parses to
 * one (templates write it with `tojson`, as vLLM hands it to them), else the text.
 */
export interface ChatToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: unknown };
}

/**
 * How a template's model writes a function call, so the server can read it back: "hermes" is
 * `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Qwen2.5, Qwen3, Hermes and others whose
 * template shows that form); "llama3_json" an answer that is `{"name": …, "parameters": {…}}` (Meta's Llama
 * 3.1 to 3.3 templates, vLLM's llama3_json parser); "mistral" an answer that is `[TOOL_CALLS] [{"name": …,
 * "arguments": {…}}, …]` (Mistral's templates from 7B v0.3 to Small 3.1, vLLM's mistral parser before
 * tokenizer v11); "mistral_args" content, then `[TOOL_CALLS]name[ARGS]{…}` per call (Mistral's tokenizer v11
 * and later: Small 3.2, Magistral, Devstral, Ministral 3; vLLM's mistral parser from v11); null: the
 * template renders no tools, or in a form not read here.
 */
export type ToolCallFormat = "hermes" | "llama3_json" | "mistral" | "mistral_args";

/** Options of one render. */
export interface RenderOptions {
  /** Append the assistant header so the model answers (transformers' `add_generation_prompt`). */
  addGenerationPrompt?: boolean;
  /**
   * End the text right after the final message's content, so the model continues that message
   * (transformers' `continue_final_message`: an answer's prefix given by the client); no generation prompt.
   */
  continueFinalMessage?: boolean;
  /** Overrides the BOS text read from tokenizer_config.json. */
  bosToken?: string;
  /** Overrides the EOS text read from tokenizer_config.json. */
  eosToken?: string;
  /** Extra template variables (e.g. `enable_thinking` for Qwen3). */
  extra?: Record<string, unknown>;
  /** Function definitions (`{type: "function", function: {name, description, parameters}}`), as `tools`. */
  tools?: readonly unknown[];
}

/** A compiled chat template. */
export interface ChatTemplate {
  /** The Jinja source. */
  readonly source: string;
  /** How the model writes function calls, when the template renders `tools` in a form read back here. */
  readonly toolCallFormat: ToolCallFormat | null;
  /**
   * The template knows `<think>` blocks (Qwen3, DeepSeek-R1): answers may reason before they answer;
   * `opensInPrompt` when its generation prompt already opens the block. Null: no reasoning to split off.
   */
  readonly thinking: { opensInPrompt: boolean } | null;
  /**
   * Renders a conversation to prompt text.
   * @param messages The conversation.
   * @param options Generation prompt, special tokens and extra variables.
   * @returns The prompt text, special tokens included as text; throws an Error with the template's message
   * when it rejects the conversation (`raise_exception`).
   */
  render(messages: ChatMessage[], options?: RenderOptions): string;
}

/** Special-token texts the template may use (`bos_token`, `eos_token`). */
export interface SpecialTokens {
  bosToken?: string;
  eosToken?: string;
}

/**
 * Compiles a chat template once; each render reuses the parsed program.
 * @param source The Jinja source.
 * @param tokens Default special-token texts.
 * @returns The compiled template; throws an Error naming the cause when the source does not parse.
 * @example
 * ```ts
 * import { compileChatTemplate } from "./chat_template.ts";
 * const t = compileChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
 * console.assert(t.render([{ role: "user", content: "Hi" }]) === "user: Hi\n");
 * ```
 */
export function compileChatTemplate(source: string, tokens: SpecialTokens = {}): ChatTemplate {
  let template: Template;
  try {
    template = new Template(source);
  } catch (err) {
    throw new Error(`Cannot compile the chat template: ${(err as Error).message}`);
  }
  const out: ChatTemplate = {
    source,
    toolCallFormat: toolCallFormatOf(source),
    thinking: null,
    render(messages, options = {}) {
      const { addGenerationPrompt = false, bosToken, eosToken, extra = {}, tools, continueFinalMessage } =
        options;
      let text: string;
      try {
        text = template.render({
          ...extra,
          ...(tools && tools.length > 0 ? { tools } : {}),
          messages,
          add_generation_prompt: addGenerationPrompt && !continueFinalMessage,
          bos_token: bosToken ?? tokens.bosToken ?? "",
          eos_token: eosToken ?? tokens.eosToken ?? "",
        });
      } catch (err) {
        // Usually the conversation's fault (templates raise_exception on e.g. non-alternating roles).
        throw new Error(`Cannot render the chat template: ${(err as Error).message}`);
      }
      return continueFinalMessage ? endAfterFinal(text, messages.at(-1)?.content ?? "") : text;
    },
  };
  return source.includes("</think>") ? { ...out, thinking: { opensInPrompt: opensThink(out) } } : out;
}

/**
 * The rendered text up to the end of the final message's content (what transformers'
 * `continue_final_message` does, spacing rules included): its last occurrence, with the content's trailing
 * spaces where the template kept them.
 * @throws Error when the template does not show the content (it may rewrite or drop it)
 */
function endAfterFinal(text: string, final: string): string {
  const core = final.trim();
  const at = core === "" ? -1 : text.lastIndexOf(core);
  if (at < 0) {
    throw new Error(
      "Cannot continue the final message: its content does not appear in the rendered chat (an empty " +
        "message, or a template that rewrites it)",
    );
  }
  const kept = final.trimStart();
  return text.slice(0, at + (text.startsWith(kept, at) ? kept.length : core.length));
}

/** Whether a one-message conversation's generation prompt ends inside an opened `<think>` block. */
function opensThink(t: ChatTemplate): boolean {
  try {
    return t.render([{ role: "user", content: "x" }], { addGenerationPrompt: true }).trimEnd().endsWith(
      "<think>",
    );
  } catch {
    return false; // a template that refuses the probe conversation: answers open their own block, if any
  }
}

/**
 * Loads and compiles a model folder's chat template, or the one the server was given instead.
 * @param dir The model folder (Hugging Face layout).
 * @param override vLLM's --chat-template: a template file, or the template itself (text with `{{` or `{%`);
 *   it replaces the folder's, with the folder's BOS and EOS tokens
 * @returns The template, or null when the model has none (a base model) and none was given.
 */
export async function loadChatTemplate(dir: string, override?: string): Promise<ChatTemplate | null> {
  const config = await readJsonIfExists(join(dir, "tokenizer_config.json"));
  const tokens = config ? specialTokens(config) : {};
  if (override !== undefined) {
    try {
      return compileChatTemplate(await templateSource(override), tokens);
    } catch (err) {
      throw new Error(`Cannot use --chat-template: ${(err as Error).message}`);
    }
  }
  const jinja = await readTextIfExists(join(dir, "chat_template.jinja"));
  if (jinja !== null) return compileChatTemplate(jinja, tokens);
  const source = config ? pickTemplate(config.chat_template) : null;
  return source === null ? null : compileChatTemplate(source, tokens);
}

/** --chat-template's text: the file it names, else the value itself when it reads as a Jinja template. */
async function templateSource(value: string): Promise<string> {
  const file = await readTextIfExists(value).catch(() => null); // a long inline template is no file name
  if (file !== null) return file;
  if (/\{[{%]/.test(value)) return value;
  throw new Error(`no file "${value}", and it is not a template (no {{ or {%)`);
}

/** The form of calls a template that renders `tools` shows its model (see {@link ToolCallFormat}). */
function toolCallFormatOf(source: string): ToolCallFormat | null {
  if (!/\btools\b/.test(source)) return null;
  if (source.includes("<tool_call>")) return "hermes";
  // Meta's Llama 3.1–3.3 templates: tools under "Environment: ipython", calls as {"name", "parameters"}.
  if (source.includes("Environment: ipython") && source.includes('"parameters": ')) return "llama3_json";
  // Mistral's: calls after a [TOOL_CALLS] token, as one JSON list or (tokenizer v11 on) each `name[ARGS]{…}`.
  if (source.includes("[TOOL_CALLS]")) return source.includes("[ARGS]") ? "mistral_args" : "mistral";
  return null;
}

function pickTemplate(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t?.name === "default");
    if (named && typeof named.template === "string") return named.template;
    const names = value.map((t) => JSON.stringify(t?.name)).join(", ");
    throw new Error(`Cannot pick a chat template from tokenizer_config.json: no "default" among ${names}`);
  }
  throw new Error(
    `Cannot read chat_template in tokenizer_config.json: expected a string or a list, got ${typeof value}`,
  );
}

/** bos_token / eos_token are either the text or an AddedToken object `{content, ...}`. */
function specialTokens(config: Record<string, unknown>): SpecialTokens {
  const text = (v: unknown): string | undefined => {
    if (typeof v === "string") return v;
    if (typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string") {
      return (v as { content: string }).content;
    }
    return undefined;
  };
  const out: SpecialTokens = {};
  const bos = text(config.bos_token);
  const eos = text(config.eos_token);
  if (bos !== undefined) out.bosToken = bos;
  if (eos !== undefined) out.eosToken = eos;
  return out;
}

async function readTextIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

async function readJsonIfExists(path: string): Promise<Record<string, unknown> | null> {
  const text = await readTextIfExists(path);
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot parse "${path}": ${(err as Error).message}`);
  }
}
