// The quantization console (GET /admin): starts a job over POST /v1/quantize, follows it live, lists past
// jobs and artifacts with cancel and activate buttons, and hosts the side-by-side view (compare.js).
import { apiJson, bearerKey, initSettings } from "./api.js";
import { initCompare } from "./compare.js";
import { byId, formatQuantization, h } from "./dom.js";
import { describeMethod, followJob, renderJob, TERMINAL } from "./job_view.js";
import { startStatusStrip } from "./status.js";

/** The job being shown and the controller that stops following it. */
let watching = { id: "", controller: new AbortController() };
/** @type {any[]} */
let artifacts = [];

/**
 * An object without its undefined fields.
 * @param {Record<string, unknown>} o
 */
function prune(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/**
 * The POST /v1/quantize body from the form; empty optional fields are left out (the server fills its
 * defaults), and so are the fields the form disables (see syncForm).
 */
function quantizeBody() {
  const value = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ (byId(id)).value.trim();
  const str = (/** @type {string} */ id) => value(id) || undefined;
  const int = (/** @type {string} */ id) => (value(id) === "" ? undefined : Math.trunc(Number(value(id))));
  const checked = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ (byId(id)).checked;
  /** @type {Record<string, unknown>} */
  const body = {
    method: value("q-method"),
    bits: Number(value("q-bits")),
  };
  if (!byId("q-group-size").disabled && int("q-group-size") !== undefined) {
    body.group_size = int("q-group-size");
  }
  body.act_order = checked("q-act-order");
  if (!byId("q-calib").disabled) {
    const calibration = prune({
      text: str("q-calib-text"),
      file: str("q-calib-file"),
      nsamples: int("q-nsamples"),
      seqlen: int("q-seqlen"),
      seed: int("q-calib-seed"),
    });
    if (Object.keys(calibration).length > 0) body.calibration = calibration;
  }
  body.activate = checked("q-activate");
  if (checked("q-eval")) {
    body.eval = prune({
      text: str("q-eval-text"),
      file: str("q-eval-file"),
      ctx: int("q-eval-ctx"),
      max_windows: int("q-eval-windows"),
    });
  }
  if (str("q-name")) body.name = str("q-name");
  return body;
}

/** The perplexity fields, enabled only while "Measure perplexity" is ticked. */
const EVAL_FIELDS = ["q-eval-text", "q-eval-file", "q-eval-ctx", "q-eval-windows"];

/**
 * Keeps the form to what the API accepts: leanquant-nu has one table per row (group size 0, fixed), rtn
 * without act order reads no calibration (the API refuses calibration fields then), and the perplexity fields
 * follow their checkbox.
 */
function syncForm() {
  const method = /** @type {HTMLSelectElement} */ (byId("q-method")).value;
  const group = /** @type {HTMLInputElement} */ (byId("q-group-size"));
  const nu = method === "leanquant-nu";
  if (nu && !group.disabled) {
    group.dataset.kept = group.value;
    group.value = "0";
  } else if (!nu && group.disabled) {
    group.value = group.dataset.kept ?? "128";
  }
  group.disabled = nu;
  const noCalibration = method === "rtn" && !/** @type {HTMLInputElement} */ (byId("q-act-order")).checked;
  byId("q-calib").disabled = noCalibration;
  byId("q-calib-note").hidden = !noCalibration;
  const evaluate = /** @type {HTMLInputElement} */ (byId("q-eval")).checked;
  for (const id of EVAL_FIELDS) byId(id).disabled = !evaluate;
}

/** @param {any} err */
function describeAdminError(err) {
  if (err?.status === 404) return `The quantization API is not available on this server: ${err.message}`;
  if (err?.status === 403) return `The admin API is off or refused the key: ${err.message}`;
  return err?.message ?? String(err);
}

/** @param {string} text */
function showBanner(text) {
  const banner = byId("admin-banner");
  banner.textContent = text;
  banner.hidden = text === "";
}

/**
 * Shows and follows a job until it ends (one at a time: watching another stops following this one).
 * @param {string} id
 */
export function watchJob(id) {
  watching.controller.abort();
  watching = { id, controller: new AbortController() };
  const { signal } = watching.controller;
  const cancel = byId("job-cancel");
  return followJob(id, (job) => {
    renderJob(job);
    cancel.disabled = TERMINAL.has(job.status);
  }, { signal }).then(async (job) => {
    await Promise.all([refreshLists(), loadModel()]);
    return job;
  }).catch((err) => {
    if (!signal.aborted) showBanner(`Cannot follow job ${id}: ${describeAdminError(err)}`);
    return null;
  });
}

/** @param {string} id */
async function cancelJob(id) {
  try {
    renderJob(await apiJson(`/v1/quantize/${encodeURIComponent(id)}`, { method: "DELETE", key: "admin" }));
  } catch (err) {
    showBanner(`Cannot cancel job ${id}: ${describeAdminError(err)}`);
  }
  await refreshLists();
}

/**
 * Activates an artifact and follows the activating job.
 * @param {string} name
 */
export async function activateArtifact(name) {
  const path = `/v1/artifacts/${encodeURIComponent(name)}/activate`;
  const job = await apiJson(path, { method: "POST", key: "admin" });
  return watchJob(job.id);
}

/** @param {number|null|undefined} unixSeconds */
function when(unixSeconds) {
  return typeof unixSeconds === "number" ? new Date(unixSeconds * 1000).toLocaleString() : "—";
}

/** @param {number|null|undefined} v */
function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : "—";
}

/** @param {any} job */
function jobRow(job) {
  const live = !TERMINAL.has(job.status);
  return h(
    "tr",
    { "data-job": job.id },
    h("td", { text: job.name ?? job.id }),
    h("td", { text: describeMethod(job) || "—" }),
    h("td", { text: job.status }),
    h("td", { text: when(job.created_at) }),
    h("td", { class: "num", text: `${num(job.eval?.ppl_before)} → ${num(job.eval?.ppl_after)}` }),
    h(
      "td",
      {},
      h(
        "button",
        { type: "button", onclick: () => watchJob(job.id), "aria-label": `Show job ${job.id}` },
        "Show",
      ),
      " ",
      live
        ? h("button", {
          type: "button",
          onclick: () => cancelJob(job.id),
          "aria-label": `Cancel job ${job.id}`,
        }, "Cancel")
        : null,
    ),
  );
}

/** @param {any} a */
function artifactRow(a) {
  const activate = () =>
    activateArtifact(a.name).catch((err) =>
      showBanner(`Cannot activate ${a.name}: ${describeAdminError(err)}`)
    );
  return h(
    "tr",
    { "data-artifact": a.name },
    h("td", { text: a.name }),
    h("td", { text: formatQuantization(a) }),
    h("td", { class: "num", text: num(a.ppl) }),
    h("td", { text: when(a.created_at) }),
    h("td", { text: a.active ? "yes" : "no" }),
    h(
      "td",
      {},
      h("button", {
        type: "button",
        onclick: activate,
        disabled: a.active,
        "aria-label": `Activate ${a.name}`,
      }, "Activate"),
    ),
  );
}

/** Reloads the jobs and artifacts tables; returns the jobs. */
async function refreshLists() {
  try {
    const [jobs, arts] = await Promise.all([
      apiJson("/v1/quantize", { key: "admin" }),
      apiJson("/v1/artifacts", { key: "admin" }),
    ]);
    const sorted = [...(jobs.data ?? [])].sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
    byId("jobs-rows").replaceChildren(...sorted.map(jobRow));
    artifacts = arts.data ?? [];
    byId("artifacts-rows").replaceChildren(...artifacts.map(artifactRow));
    for (const id of ["c-artifact-a", "c-artifact-b"]) {
      const select = /** @type {HTMLSelectElement} */ (byId(id));
      const keep = select.value;
      select.replaceChildren(...artifacts.map((a) => h("option", { value: a.name, text: a.name })));
      if (artifacts.some((a) => a.name === keep)) select.value = keep;
    }
    if (artifacts.length > 1 && byId("c-artifact-a").value === byId("c-artifact-b").value) {
      byId("c-artifact-b").value = artifacts[1].name;
    }
    return sorted;
  } catch (err) {
    showBanner(describeAdminError(err));
    return [];
  }
}

/** The served model's name and quantization label, also shown in the header. */
async function loadModel() {
  let model = { name: "—", quant: "—" };
  try {
    const card = (await apiJson("/v1/models")).data?.[0];
    model = { name: String(card?.id ?? "—"), quant: formatQuantization(card?.quantization) };
  } catch (err) {
    showBanner(`Cannot read the model list: ${/** @type {Error} */ (err).message}`);
  }
  byId("model-name").textContent = model.name;
  byId("model-quant").textContent = model.quant;
  return model;
}

async function startQuantization(/** @type {Event} */ e) {
  e.preventDefault();
  const message = byId("q-message");
  message.textContent = "Starting…";
  try {
    const job = await apiJson("/v1/quantize", { method: "POST", body: quantizeBody(), key: "admin" });
    message.textContent = `Started job ${job.id}.`;
    showBanner("");
    watchJob(job.id);
    refreshLists();
  } catch (err) {
    const e2 = /** @type {any} */ (err);
    if (e2?.status === 409) {
      message.textContent = `A job is already running: ${e2.message}. It is shown on the right.`;
      const live = (await refreshLists()).find((j) => !TERMINAL.has(j.status));
      if (live) watchJob(live.id);
    } else {
      message.textContent = `Cannot start: ${describeAdminError(err)}`;
    }
  }
}

async function init() {
  initSettings(() => {
    refreshLists();
    loadModel();
  });
  byId("quantize-form").addEventListener("submit", startQuantization);
  for (const id of ["q-method", "q-act-order", "q-eval"]) byId(id).addEventListener("change", syncForm);
  syncForm();
  byId("refresh").addEventListener("click", () => refreshLists());
  byId("job-cancel").addEventListener("click", () => watching.id && cancelJob(watching.id));
  initCompare({ loadModel, activate: activateArtifact });
  startStatusStrip({ key: () => bearerKey("admin") });
  loadModel();
  const jobs = await refreshLists();
  // Pick up a running job after a reload, else show the latest one.
  const shown = jobs.find((j) => !TERMINAL.has(j.status)) ?? jobs[0];
  if (shown) watchJob(shown.id);
}

init();
