// Following one quantization job (GET /v1/quantize/{id}/events) and showing it: status, layer i/n, ETA,
// GPU memory, perplexity before and after, and the loss chart.
import { apiFetch, apiJson } from "./api.js";
import { drawLossChart } from "./chart.js";
import { byId, formatBytes, formatDuration, h } from "./dom.js";
import { readSse } from "./sse.js";

/** Statuses after which a job never changes. */
export const TERMINAL = new Set(["done", "failed", "cancelled"]);

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

/**
 * Follows a job until it reaches a terminal status: the SSE stream first, then (if the stream ends or breaks
 * before that, e.g. a proxy timeout) polling GET /v1/quantize/{id} every second.
 * @param {string} id
 * @param {(job: any) => void} onJob Called with every job object received.
 * @param {{signal?: AbortSignal}} [opts]
 * @returns {Promise<any>} The terminal job.
 */
export async function followJob(id, onJob, { signal } = {}) {
  const path = `/v1/quantize/${encodeURIComponent(id)}`;
  try {
    const res = await apiFetch(`${path}/events`, { key: "admin", signal });
    for await (const ev of readSse(/** @type {ReadableStream<Uint8Array>} */ (res.body))) {
      if (ev.event !== "job") continue;
      const job = JSON.parse(ev.data);
      onJob(job);
      if (TERMINAL.has(job.status)) return job;
    }
  } catch (err) {
    if (signal?.aborted) throw err;
    console.warn(`[admin] event stream of job ${id} broke, polling instead:`, err);
  }
  for (;;) {
    const job = await apiJson(path, { key: "admin", signal });
    onJob(job);
    if (TERMINAL.has(job.status)) return job;
    await sleep(1000, signal);
  }
}

/**
 * "layer 3/8 · mlp.down_proj" from a job's progress; the layer index is 0-based like the losses'.
 * @param {any} job
 * @returns {string}
 */
export function describeProgress(job) {
  const p = job?.progress;
  if (!p || !Number.isFinite(p.layers) || p.layers <= 0) return "—";
  const shown = job.status === "done" ? p.layers : Math.min(p.layers, (p.layer ?? 0) + 1);
  return `layer ${shown}/${p.layers}${p.sublayer && job.status !== "done" ? ` · ${p.sublayer}` : ""}`;
}

/**
 * @param {number|null|undefined} v
 * @returns {string}
 */
function ppl(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : "—";
}

/**
 * Shows a job in the console's job panel (elements with ids job-*, loss-chart, loss-legend, loss-rows).
 * @param {any} job A job object of the /v1/quantize contract.
 */
export function renderJob(job) {
  const set = (/** @type {string} */ id, /** @type {string} */ text) => {
    const el = byId(id);
    if (el.textContent !== text) el.textContent = text;
  };
  const o = job.options ?? {};
  byId("job-panel").dataset.status = job.status;
  set(
    "job-title",
    `${job.name ?? job.id} (${[o.method, o.bits && `${o.bits}-bit`].filter(Boolean).join(" ")})`,
  );
  set("job-status", job.status);
  const bar = /** @type {HTMLProgressElement} */ (byId("job-progress"));
  const fraction = job.status === "done" ? 1 : Number(job.progress?.fraction ?? 0);
  bar.value = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  bar.textContent = `${Math.round(bar.value * 100)}%`;
  set("job-percent", `${Math.round(bar.value * 100)}%`);
  set("job-layer", describeProgress(job));
  set("job-eta", TERMINAL.has(job.status) ? "—" : formatDuration(job.progress?.eta_seconds));
  set("job-elapsed", formatDuration(job.timings?.elapsed_seconds));
  set("job-gpu", `${formatBytes(job.gpu_bytes)} now · ${formatBytes(job.peak_gpu_bytes)} peak`);
  set("job-ppl-before", ppl(job.eval?.ppl_before));
  set("job-ppl-after", ppl(job.eval?.ppl_after));
  set("job-artifact", job.artifact ? `${job.artifact.name} (${job.artifact.path})` : "—");
  const error = byId("job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `Job failed: ${job.error}` : "";
  const losses = Array.isArray(job.losses) ? job.losses : [];
  drawLossChart(byId("loss-chart"), byId("loss-legend"), losses, Number(job.progress?.layers) || 0);
  const rows = byId("loss-rows");
  if (rows.childElementCount !== losses.length) {
    rows.replaceChildren(...losses.map((/** @type {any} */ l) =>
      h(
        "tr",
        {},
        h("td", { class: "num", text: String(l.layer) }),
        h("td", { text: String(l.sublayer) }),
        h("td", { class: "num", text: Number(l.loss).toPrecision(4) }),
      )
    ));
  }
}
