// Talking to this server: keys kept in localStorage and sent as `Authorization: Bearer`, OpenAI-shaped
// error bodies turned into HttpError, and the settings dialog that asks for a key when the server answers 401.

/**
 * localStorage names of the two keys. Each falls back to the other when empty: an admin key is also valid
 * wherever an API key is, and a server may use one key for both.
 */
const STORAGE = { api: "leanserve.apiKey", admin: "leanserve.adminKey" };

/** An error response: its HTTP status and the OpenAI error body's message, code and param. */
export class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   * @param {string|null} [code]
   * @param {string|null} [param]
   */
  constructor(status, message, code = null, param = null) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

/**
 * The stored key of one kind ("" when none).
 * @param {"api"|"admin"} kind
 * @returns {string}
 */
export function getKey(kind) {
  return localStorage.getItem(STORAGE[kind]) ?? "";
}

/**
 * Stores a key ("" removes it).
 * @param {"api"|"admin"} kind
 * @param {string} value
 */
export function setKey(kind, value) {
  if (value) localStorage.setItem(STORAGE[kind], value);
  else localStorage.removeItem(STORAGE[kind]);
}

/**
 * The key to send for a request of one kind: that kind's key, else the other one ("" when neither is set).
 * @param {"api"|"admin"} kind
 * @returns {string}
 */
export function bearerKey(kind) {
  return kind === "admin" ? getKey("admin") || getKey("api") : getKey("api") || getKey("admin");
}

/**
 * Reads an error response into an HttpError, whatever its body.
 * @param {Response} res
 * @returns {Promise<HttpError>}
 */
export async function errorFromResponse(res) {
  const text = await res.text().catch(() => "");
  try {
    const e = JSON.parse(text).error;
    if (e && typeof e.message === "string") return new HttpError(res.status, e.message, e.code, e.param);
  } catch { /* not JSON: use the text */ }
  return new HttpError(res.status, text.trim().slice(0, 300) || `HTTP ${res.status} ${res.statusText}`);
}

/**
 * fetch() against this server with the stored key. A 401 opens the settings dialog once and retries with the
 * key entered there.
 * @param {string} path
 * @param {{method?: string, body?: unknown, signal?: AbortSignal, key?: "api"|"admin", askKey?: boolean}} [opts]
 * @returns {Promise<Response>} An ok response; anything else throws HttpError.
 */
export async function apiFetch(path, { method = "GET", body, signal, key = "api", askKey = true } = {}) {
  for (let attempt = 0;; attempt++) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const k = bearerKey(key);
    if (k) headers.authorization = `Bearer ${k}`;
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal };
    const res = await fetch(path, init);
    if (res.ok) return res;
    const err = await errorFromResponse(res);
    if (res.status === 401 && askKey && attempt === 0 && await askForKey(key, err.message)) continue;
    throw err;
  }
}

/**
 * apiFetch() returning the parsed JSON body.
 * @param {string} path
 * @param {Parameters<typeof apiFetch>[1]} [opts]
 * @returns {Promise<any>}
 */
export async function apiJson(path, opts) {
  return (await apiFetch(path, opts)).json();
}

/** @type {Promise<boolean>|null} */
let pendingAsk = null;

/**
 * Opens the settings dialog to ask for a key, explaining why.
 * @param {"api"|"admin"} kind Which field to focus.
 * @param {string} reason Shown above the fields.
 * @returns {Promise<boolean>} True when the user saved a non-empty key of that kind.
 */
export function askForKey(kind, reason) {
  pendingAsk ??= new Promise((resolve) => {
    const dialog = /** @type {HTMLDialogElement|null} */ (document.getElementById("settings-dialog"));
    if (!dialog) return resolve(false);
    openSettings(`The server asks for a key: ${reason}`, kind);
    dialog.addEventListener("close", () => {
      pendingAsk = null;
      resolve(dialog.returnValue === "save" && getKey(kind) !== "");
    }, { once: true });
  });
  return pendingAsk;
}

/**
 * Opens the settings dialog with the stored keys filled in.
 * @param {string} [reason] A line shown at the top (empty hides it).
 * @param {"api"|"admin"} [focus]
 */
export function openSettings(reason = "", focus = "api") {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById("settings-dialog"));
  const note = document.getElementById("settings-reason");
  if (note) {
    note.textContent = reason;
    note.hidden = reason === "";
  }
  for (const kind of /** @type {const} */ (["api", "admin"])) {
    const input = /** @type {HTMLInputElement|null} */ (document.getElementById(`${kind}-key`));
    if (input) input.value = getKey(kind);
  }
  if (!dialog.open) {
    dialog.returnValue = ""; // Escape keeps the last value otherwise, and would read as a save
    dialog.showModal();
  }
  document.getElementById(`${focus}-key`)?.focus();
}

/**
 * Wires the settings button and dialog of a page: Save stores the keys, Cancel keeps the old ones.
 * @param {() => void} [onSave] Runs after the keys were saved (e.g. to reload the model list).
 */
export function initSettings(onSave = () => {}) {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById("settings-dialog"));
  document.getElementById("settings-open")?.addEventListener("click", () => openSettings());
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    for (const kind of /** @type {const} */ (["api", "admin"])) {
      const input = /** @type {HTMLInputElement|null} */ (document.getElementById(`${kind}-key`));
      if (input) setKey(kind, input.value.trim());
    }
    onSave();
  });
}
