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
 * "layer 3/8 · quantize mlp.down_proj" from a job's progress. `progress.layer` is 1-based on the wire (the
 * layer being worked on; 0 before the pipeline starts, inference/jobs/job.ts), so it is shown as it comes;
 * the losses carry the 0-based layer index, which the loss table and chart show plus one. Before the first layer only the step is shown (e.g. "perplexity
 * before 2/4"); a finished job shows no step.
 * @param {any} job
 * @returns {string}
 */
export function describeProgress(job) {
  const p = job?.progress;
  if (!p) return "—";
  const step = typeof p.sublayer === "string" && p.sublayer && !TERMINAL.has(job.status) ? p.sublayer : "";
  const layers = Number(p.layers);
  const layer = Number(p.layer);
  if (!Number.isFinite(layers) || layers <= 0 || !Number.isFinite(layer) || layer < 1) return step || "—";
  const shown = job.status === "done" ? layers : Math.min(layers, Math.trunc(layer));
  return `layer ${shown}/${layers}${step ? ` · ${step}` : ""}`;
}

/**
 * What a job does: "gptq 4-bit g128" (or "per-row") for a quantization, "activate" for an activation.
 * @param {any} job
 * @returns {string}
 */
export function describeMethod(job) {
  if (job?.kind === "activate") return "activate";
  const o = job?.options ?? {};
  const group = typeof o.group_size === "number" ? (o.group_size > 0 ? `g${o.group_size}` : "per-row") : "";
  return [o.method, typeof o.bits === "number" && `${o.bits}-bit`, group].filter(Boolean).join(" ");
}

/**
 * The job panel's title: "lq-49m-… (gptq 4-bit g128)", or "lq-49m-… (activate)".
 * @param {any} job
 * @returns {string}
 */
export function describeJob(job) {
  const name = String(job?.name ?? job?.id ?? "?");
  const what = describeMethod(job);
  return what ? `${name} (${what})` : name;
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
  byId("job-panel").dataset.status = job.status;
  set("job-title", describeJob(job));
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
        h("td", { class: "num", text: String(Number(l.layer) + 1) }), // 1-based, like "layer i/n"
        h("td", { text: String(l.sublayer) }),
        h("td", { class: "num", text: Number(l.loss).toPrecision(4) }),
      )
    ));
  }
}
