// The console's side-by-side view: one prompt, answers labelled by the model and quantization that served
// them. Earlier answers stay (up to MAX_ANSWERS) so the answer from before a swap sits next to the one after;
// "compare" activates artifact A, asks, activates B, asks, one after another.
import { describeResult, streamChat, streamCompletion } from "./chat_stream.js";
import { byId, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const MAX_ANSWERS = 6;

/**
 * @typedef {{
 *   loadModel: () => Promise<{name: string, quant: string}>,
 *   activate: (name: string) => Promise<any>,
 * }} CompareDeps `activate` resolves with the terminal activation job (or null when it could not be followed).
 */

/**
 * Asks the served model once and adds a labelled answer card. Uses chat, or a plain completion of the
 * prompt when the model has no chat template (base models).
 * @param {CompareDeps} deps
 * @param {string} tag A prefix for the label ("A", "B" or "").
 * @param {AbortSignal} signal
 */
async function askOnce(deps, tag, signal) {
  const model = await deps.loadModel();
  const prompt = /** @type {HTMLTextAreaElement} */ (byId("c-prompt")).value;
  /** @type {Record<string, number>} */
  const params = {};
  const maxTokens = Number(/** @type {HTMLInputElement} */ (byId("c-max-tokens")).value);
  const temperature = /** @type {HTMLInputElement} */ (byId("c-temperature")).value;
  if (Number.isFinite(maxTokens) && maxTokens > 0) params.max_tokens = Math.trunc(maxTokens);
  if (temperature !== "" && Number.isFinite(Number(temperature))) params.temperature = Number(temperature);
  const label = `${tag ? `${tag}: ` : ""}${model.name} · ${model.quant}`;
  const body = h("div", { class: "body" });
  const meta = h("p", { class: "meta", text: "waiting…" });
  const card = h(
    "li",
    { class: "msg assistant", "data-state": "streaming" },
    h("p", { class: "who", text: label }),
    body,
    meta,
  );
  const list = byId("answers");
  list.append(card);
  while (list.childElementCount > MAX_ANSWERS) list.firstElementChild?.remove();
  const onText = (/** @type {string} */ t) => body.replaceChildren(renderMarkdown(t));
  let mode = "chat";
  let r;
  try {
    r = await streamChat([{ role: "user", content: prompt }], { params, signal, onText });
  } catch (err) {
    if (/** @type {any} */ (err)?.code !== "no_chat_template") {
      card.remove();
      throw err;
    }
    mode = "completion";
    r = await streamCompletion(prompt, { params, signal, onText });
  }
  body.replaceChildren(renderMarkdown(r.text));
  meta.textContent = `${describeResult(r)} · ${mode}`;
  card.dataset.state = r.stopped ? "stopped" : "done";
}

/**
 * Wires the side-by-side form.
 * @param {CompareDeps} deps
 */
export function initCompare(deps) {
  const message = byId("c-message");
  const buttons = ["c-ask", "c-compare"].map(byId);
  const stop = byId("c-stop");
  /** @type {AbortController|null} */
  let controller = null;
  const run = async (/** @type {(signal: AbortSignal) => Promise<void>} */ task) => {
    if (controller) return;
    controller = new AbortController();
    for (const b of buttons) b.disabled = true;
    stop.disabled = false;
    message.textContent = "";
    try {
      await task(controller.signal);
    } catch (err) {
      if (!controller.signal.aborted) {
        message.textContent = `Cannot compare: ${/** @type {Error} */ (err).message}`;
      }
    } finally {
      controller = null;
      for (const b of buttons) b.disabled = false;
      stop.disabled = true;
    }
  };
  byId("compare-form").addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    run((signal) => askOnce(deps, "", signal));
  });
  byId("c-compare").addEventListener("click", () =>
    run(async (signal) => {
      const pair = [["A", byId("c-artifact-a").value], ["B", byId("c-artifact-b").value]];
      if (!pair[0][1] || !pair[1][1]) throw new Error("choose two artifacts first");
      for (const [tag, name] of pair) {
        message.textContent = `Activating ${tag} (${name})…`;
        const job = await deps.activate(name);
        if (signal.aborted) return;
        if (job?.status !== "done") throw new Error(`activating ${name} ended ${job?.status ?? "unknown"}`);
        message.textContent = `Asking ${tag} (${name})…`;
        await askOnce(deps, `${tag} ${name}`, signal);
      }
      message.textContent = "Done: A and B answered.";
    }));
  stop.addEventListener("click", () => controller?.abort());
  byId("c-clear").addEventListener("click", () => byId("answers").replaceChildren());
}
