// The chat page (GET /): a conversation with the served model over /v1/chat/completions, kept in
// localStorage, with sampling controls, a Stop button, per-answer speed and JSON export.
import { apiJson, bearerKey, initSettings } from "./api.js";
import { describeResult, streamChat } from "./chat_stream.js";
import { byId, download, formatQuantization, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { startStatusStrip } from "./status.js";

const CHAT_KEY = "leanserve.chat";
const SAMPLING_KEY = "leanserve.sampling";
const NUMBER_FIELDS = ["temperature", "top_p", "top_k", "min_p", "max_tokens", "seed"];
const INTEGER_FIELDS = new Set(["top_k", "max_tokens", "seed"]);

/**
 * @typedef {{role: "user"|"assistant", content: string, reasoning?: string, label?: string, meta?: string}} Entry
 *   `reasoning`: a thinking model's reasoning, shown folded above its answer and never sent back.
 */

/** @type {Entry[]} */
let conversation = loadConversation();
let model = { name: "—", quant: "—" };
/** @type {AbortController|null} */
let controller = null;

const list = byId("messages");
const prompt = /** @type {HTMLTextAreaElement} */ (byId("prompt"));

/** @returns {Entry[]} */
function loadConversation() {
  try {
    const saved = JSON.parse(localStorage.getItem(CHAT_KEY) ?? "null");
    const ok = (/** @type {any} */ m) =>
      (m?.role === "user" || m?.role === "assistant") && typeof m.content === "string";
    return Array.isArray(saved?.messages) ? saved.messages.filter(ok) : [];
  } catch {
    return [];
  }
}

function saveConversation() {
  localStorage.setItem(CHAT_KEY, JSON.stringify({ messages: conversation }));
}

/**
 * @param {HTMLElement} body
 * @param {Entry} m
 */
function fillBody(body, m) {
  if (m.role !== "assistant") {
    body.textContent = m.content;
    return;
  }
  // Open while the model is still thinking (no answer yet), folded once the answer starts.
  const reasoning = m.reasoning
    ? h(
      "details",
      { class: "reasoning", open: m.content === "" },
      h("summary", { text: "Reasoning" }),
      h("p", {
        text: m.reasoning.trim(),
      }),
    )
    : null;
  body.replaceChildren(...(reasoning ? [reasoning] : []), renderMarkdown(m.content));
}

/**
 * @param {Entry} m
 * @param {string} state "done", "streaming" or "stopped" (tests and styles read it).
 */
function messageView(m, state = "done") {
  const body = h("div", { class: "body" });
  fillBody(body, m);
  return h(
    "li",
    { class: `msg ${m.role}`, "data-state": state },
    h("p", { class: "who", text: m.role === "user" ? "You" : m.label ?? "Assistant" }),
    body,
    m.role === "assistant" ? h("p", { class: "meta", text: m.meta ?? "" }) : null,
  );
}

function renderConversation() {
  list.replaceChildren(...conversation.map((m) => messageView(m)));
}

/** @param {string} text */
function showBanner(text) {
  const banner = byId("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  byId("banner").hidden = true;
}

/** @param {any} err */
function describeError(err) {
  if (err?.code === "no_chat_template") {
    return "This model has no chat template: it is a base (completions-only) model, so it cannot chat. " +
      `Use POST /v1/completions with a plain prompt instead. (Server: ${err.message})`;
  }
  if (err?.status === 401) return `The server refused the API key: ${err.message}. Set it under Settings.`;
  return `Cannot get an answer: ${err?.message ?? err}`;
}

/** Sampling fields from the side panel; empty or invalid fields are left out (the server's defaults apply). */
function samplingParams() {
  /** @type {Record<string, number>} */
  const params = {};
  for (const id of NUMBER_FIELDS) {
    const input = /** @type {HTMLInputElement} */ (byId(id));
    const v = input.value.trim() === "" ? NaN : Number(input.value);
    if (Number.isFinite(v)) params[id] = INTEGER_FIELDS.has(id) ? Math.trunc(v) : v;
  }
  return params;
}

function requestMessages() {
  const system = /** @type {HTMLTextAreaElement} */ (byId("system")).value.trim();
  const history = conversation.map(({ role, content }) => ({ role, content }));
  return system ? [{ role: "system", content: system }, ...history] : history;
}

/** @param {boolean} busy */
function setBusy(busy) {
  byId("send").disabled = busy;
  byId("stop").disabled = !busy;
  byId("clear").disabled = busy;
}

/** @param {string} text */
async function send(text) {
  const messages = [...requestMessages(), { role: "user", content: text }];
  /** @type {Entry} */
  const user = { role: "user", content: text };
  conversation.push(user);
  saveConversation();
  list.append(messageView(user));
  /** @type {Entry} */
  const answer = {
    role: "assistant",
    content: "",
    label: `${model.name} · ${model.quant}`,
    meta: "waiting…",
  };
  const view = messageView(answer, "streaming");
  const body = /** @type {HTMLElement} */ (view.querySelector(".body"));
  const meta = /** @type {HTMLElement} */ (view.querySelector(".meta"));
  list.append(view);
  view.scrollIntoView({ block: "end" });
  hideBanner();
  controller = new AbortController();
  setBusy(true);
  let frame = 0;
  const onText = (/** @type {string} */ t, /** @type {string} */ reasoning) => {
    answer.content = t;
    if (reasoning) answer.reasoning = reasoning;
    meta.textContent = "generating…";
    // Re-render at most once per frame: a fast model sends many deltas between paints.
    frame ||= requestAnimationFrame(() => {
      frame = 0;
      fillBody(body, answer);
      view.scrollIntoView({ block: "end" });
    });
  };
  try {
    const r = await streamChat(messages, { params: samplingParams(), signal: controller.signal, onText });
    cancelAnimationFrame(frame);
    answer.content = r.text;
    if (r.reasoning) answer.reasoning = r.reasoning;
    answer.meta = describeResult(r);
    // The state first: the whole answer is rendered as a finished one, never as a stream's last frame.
    view.dataset.state = r.stopped ? "stopped" : "done";
    fillBody(body, answer);
    meta.textContent = answer.meta;
    if (r.text === "") {
      throw new Error(
        r.reasoning
          ? "The answer was stopped while the model was still reasoning"
          : "The answer was stopped before its first token",
      );
    }
    conversation.push(answer);
  } catch (err) {
    // Nothing usable came back: take the question out of the history and give it back to edit or resend.
    view.remove();
    list.lastElementChild?.remove();
    conversation.pop();
    if (!prompt.value) prompt.value = text;
    showBanner(describeError(err));
  } finally {
    saveConversation();
    controller = null;
    setBusy(false);
  }
}

async function loadModel() {
  try {
    const card = (await apiJson("/v1/models")).data?.[0];
    model = { name: String(card?.id ?? "—"), quant: formatQuantization(card?.quantization) };
  } catch (err) {
    showBanner(`Cannot read the model list: ${/** @type {Error} */ (err).message}`);
  }
  byId("model-name").textContent = model.name;
  byId("model-quant").textContent = model.quant;
}

function restoreSampling() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SAMPLING_KEY) ?? "{}") ?? {};
  } catch { /* start empty */ }
  for (const id of ["system", ...NUMBER_FIELDS]) {
    const v = /** @type {Record<string, unknown>} */ (saved)[id];
    if (typeof v === "string") /** @type {HTMLInputElement} */ (byId(id)).value = v;
  }
  byId("sampling").addEventListener("input", () => {
    /** @type {Record<string, string>} */
    const values = {};
    for (const id of ["system", ...NUMBER_FIELDS]) {
      values[id] = /** @type {HTMLInputElement} */ (byId(id)).value;
    }
    localStorage.setItem(SAMPLING_KEY, JSON.stringify(values));
  });
}

function wireComposer() {
  byId("composer").addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = "";
    send(text);
  });
  prompt.addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      /** @type {HTMLFormElement} */ (byId("composer")).requestSubmit();
    }
  });
  byId("stop").addEventListener("click", () => controller?.abort());
  byId("clear").addEventListener("click", () => {
    conversation = [];
    saveConversation();
    renderConversation();
    hideBanner();
    prompt.focus();
  });
  byId("export").addEventListener("click", () => {
    const doc = {
      exported_at: new Date().toISOString(),
      model: model.name,
      quantization: model.quant,
      system: /** @type {HTMLTextAreaElement} */ (byId("system")).value,
      sampling: samplingParams(),
      messages: conversation,
    };
    download(`leanserve-chat-${doc.exported_at.replace(/[:.]/g, "-")}.json`, JSON.stringify(doc, null, 2));
  });
}

initSettings(loadModel);
restoreSampling();
wireComposer();
renderConversation();
loadModel();
startStatusStrip({ key: () => bearerKey("api") });
