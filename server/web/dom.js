// Small DOM and formatting helpers shared by the pages. Elements are built from text only: strings passed
// as children become text nodes, never HTML.

/**
 * Creates an element.
 * @param {string} tag Tag name.
 * @param {Record<string, unknown>} [props] `class`, `text`, `on<event>` listeners, or attributes.
 * @param {...(Node|string|null|undefined|false|Array<Node|string>)} children Appended in order.
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = String(value);
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/**
 * The element with this id; throws when the page lacks it (a broken page should fail loudly).
 * @param {string} id
 * @returns {any}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`Cannot find element #${id}`);
  return el;
}

/**
 * Offers `text` as a file download (no server round trip).
 * @param {string} filename
 * @param {string} text
 * @param {string} [type]
 */
export function download(filename, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * Bytes as a short human string ("1.5 GiB"); "—" for null or undefined.
 * @param {number|null|undefined} n
 * @returns {string}
 */
export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/**
 * Seconds as "1 h 02 min", "3 min 05 s" or "12 s"; "—" for null or undefined.
 * @param {number|null|undefined} s
 * @returns {string}
 */
export function formatDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  const t = Math.max(0, Math.round(s));
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  if (t >= 3600) return `${Math.floor(t / 3600)} h ${pad(Math.floor((t % 3600) / 60))} min`;
  if (t >= 60) return `${Math.floor(t / 60)} min ${pad(t % 60)} s`;
  return `${t} s`;
}

/**
 * A model's quantization as a label: "leanquant-nu 4-bit g128 · ppl 9.87", or "full precision".
 * @param {{method: string, bits: number, group_size?: number, ppl?: number|null}|null|undefined} q
 * @returns {string}
 */
export function formatQuantization(q) {
  if (!q || typeof q !== "object" || !q.method) return "full precision";
  const group = q.group_size ? `g${q.group_size}` : "per-row";
  const ppl = typeof q.ppl === "number" ? ` · ppl ${q.ppl.toFixed(2)}` : "";
  return `${q.method} ${q.bits}-bit ${group}${ppl}`;
}
