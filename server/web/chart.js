// The quantization loss chart: per-sublayer loss (one thin line per sublayer kind, e.g. q_proj) and the
// per-layer total (thick line) against the layer, on a log scale since losses span decades. The job's losses
// carry the 0-based layer index; the axis labels them 1-based, as the job's "layer i/n" progress counts.
// Hand-written SVG; the pure parts (grouping, scales) are tested in Deno.

const SVG_NS = "http://www.w3.org/2000/svg";
const COLOURS = 8; // style.css defines .c0 … .c7

/**
 * @typedef {{layer: number, sublayer: string, loss: number}} Loss
 * @typedef {{layer: number, loss: number}} Point
 * @typedef {{name: string, points: Point[]}} Series
 */

/**
 * Groups job losses by sublayer, in order of first appearance, and sums each layer's total.
 * Non-finite entries are skipped; a later loss for the same layer and sublayer replaces the earlier one.
 * @param {Loss[]} losses
 * @returns {{sublayers: Series[], totals: Point[]}}
 */
export function lossSeries(losses) {
  /** @type {Map<string, Map<number, number>>} */
  const by = new Map();
  for (const l of losses ?? []) {
    if (!Number.isFinite(l?.layer) || !Number.isFinite(l?.loss)) continue;
    const name = String(l.sublayer);
    if (!by.has(name)) by.set(name, new Map());
    /** @type {Map<number, number>} */ (by.get(name)).set(l.layer, l.loss);
  }
  /** @type {Map<number, number>} */
  const totals = new Map();
  const sublayers = [...by].map(([name, points]) => {
    for (const [layer, loss] of points) totals.set(layer, (totals.get(layer) ?? 0) + loss);
    return {
      name,
      points: [...points].map(([layer, loss]) => ({ layer, loss })).sort((a, b) => a.layer - b.layer),
    };
  });
  const total = [...totals].map(([layer, loss]) => ({ layer, loss })).sort((a, b) => a.layer - b.layer);
  return { sublayers, totals: total };
}

/**
 * Scales of the chart: x over layers 0 … layers−1, y over whole decades around the losses.
 * @param {number[]} values Losses to fit (zero and negatives are clamped to the smallest positive one).
 * @param {{layers: number, width: number, height: number, margin?: {l: number, r: number, t: number, b: number}}} box
 * @returns {{x: (layer: number) => number, y: (loss: number) => number, yTicks: number[], xTicks: number[]}}
 */
export function chartScales(values, { layers, width, height, margin = { l: 48, r: 12, t: 10, b: 40 } }) {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  const lo = positive.length ? Math.floor(Math.log10(Math.min(...positive))) : -3;
  let hi = positive.length ? Math.ceil(Math.log10(Math.max(...positive))) : 0;
  if (hi <= lo) hi = lo + 1;
  const floor = 10 ** lo;
  const lastLayer = Math.max(1, layers - 1);
  const x = (/** @type {number} */ layer) => margin.l + (layer / lastLayer) * (width - margin.l - margin.r);
  const y = (/** @type {number} */ loss) => {
    const t = (Math.log10(Math.max(loss, floor)) - lo) / (hi - lo);
    return height - margin.b - t * (height - margin.t - margin.b);
  };
  const yTicks = [];
  for (let e = lo; e <= hi; e++) yTicks.push(10 ** e);
  const step = Math.max(1, Math.ceil((lastLayer + 1) / 8));
  const xTicks = [];
  for (let l = 0; l <= lastLayer; l += step) xTicks.push(l);
  return { x, y, yTicks, xTicks };
}

/**
 * @param {string} tag
 * @param {Record<string, string|number>} attrs
 * @returns {SVGElement}
 */
function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return /** @type {SVGElement} */ (el);
}

/**
 * Redraws the chart and its legend from a job's losses.
 * @param {SVGSVGElement} svg Has a viewBox; its contents are replaced.
 * @param {HTMLElement} legend A list element; its items are replaced.
 * @param {Loss[]} losses
 * @param {number} layers The model's layer count (fixes the x axis while the job fills it in).
 */
export function drawLossChart(svg, legend, losses, layers) {
  const [, , width, height] = (svg.getAttribute("viewBox") ?? "0 0 640 280").split(/\s+/).map(Number);
  const { sublayers, totals } = lossSeries(losses);
  const all = [...sublayers.flatMap((s) => s.points.map((p) => p.loss)), ...totals.map((p) => p.loss)];
  const s = chartScales(all, {
    layers: Math.max(layers || 0, ...totals.map((p) => p.layer + 1)),
    width,
    height,
  });
  const nodes = [];
  for (const v of s.yTicks) {
    nodes.push(svgEl("line", { class: "axis", x1: s.x(0), x2: width - 12, y1: s.y(v), y2: s.y(v) }));
    const label = svgEl("text", { x: 4, y: s.y(v) + 4 });
    label.textContent = v >= 1e-2 && v <= 1e3 ? String(v) : v.toExponential(0);
    nodes.push(label);
  }
  for (const l of s.xTicks) {
    const label = svgEl("text", { x: s.x(l), y: height - 24, "text-anchor": "middle" });
    label.textContent = String(l + 1); // the losses' 0-based index, shown 1-based like the job's "layer i/n"
    nodes.push(label);
  }
  const caption = svgEl("text", { x: (s.x(0) + width - 12) / 2, y: height - 6, "text-anchor": "middle" });
  caption.textContent = "layer";
  nodes.push(caption);
  const draw = (/** @type {Point[]} */ points, /** @type {string} */ cls) => {
    const at = points.map((p) => `${s.x(p.layer).toFixed(1)},${s.y(p.loss).toFixed(1)}`);
    if (points.length > 1) nodes.push(svgEl("polyline", { class: cls, points: at.join(" ") }));
    for (const xy of at) {
      const [cx, cy] = xy.split(",");
      nodes.push(svgEl("circle", { class: `${cls} point`, cx, cy, r: cls.includes("total") ? 3 : 2 }));
    }
  };
  sublayers.forEach((series, i) => draw(series.points, `series c${i % COLOURS}`));
  draw(totals, "total ctotal");
  svg.replaceChildren(...nodes);
  const last = totals[totals.length - 1];
  svg.setAttribute(
    "aria-label",
    last
      ? `Quantization loss by layer: ${losses.length} values so far; layer ${last.layer + 1} total ${
        last.loss.toPrecision(3)
      }`
      : "Quantization loss by layer: no values yet",
  );
  const item = (/** @type {string} */ cls, /** @type {string} */ name) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${cls}`;
    li.append(swatch, name);
    return li;
  };
  legend.replaceChildren(
    ...sublayers.map((series, i) => item(`c${i % COLOURS}`, series.name)),
    ...(totals.length ? [item("ctotal", "layer total")] : []),
  );
}
