import assert from "node:assert/strict";
import { chartScales, lossSeries } from "./chart.js";

Deno.test("lossSeries() groups losses by sublayer and sums each layer", () => {
  const s = lossSeries([
    { layer: 0, sublayer: "q_proj", loss: 1 },
    { layer: 0, sublayer: "down_proj", loss: 2 },
    { layer: 1, sublayer: "q_proj", loss: 4 },
    { layer: 1, sublayer: "q_proj", loss: 3 }, // a repeat replaces the earlier value
    { layer: 2, sublayer: "q_proj", loss: Number.NaN }, // skipped
  ]);
  assert.deepEqual(s.sublayers, [
    { name: "q_proj", points: [{ layer: 0, loss: 1 }, { layer: 1, loss: 3 }] },
    { name: "down_proj", points: [{ layer: 0, loss: 2 }] },
  ]);
  assert.deepEqual(s.totals, [{ layer: 0, loss: 3 }, { layer: 1, loss: 3 }]);
  assert.deepEqual(lossSeries([]), { sublayers: [], totals: [] });
});

Deno.test("chartScales() maps layers linearly and losses by decade, higher loss higher up", () => {
  const box = { layers: 5, width: 400, height: 200, margin: { l: 40, r: 10, t: 10, b: 30 } };
  const s = chartScales([0.02, 3], box);
  assert.equal(s.x(0), 40);
  assert.equal(s.x(4), 390);
  assert.deepEqual(s.yTicks, [0.01, 0.1, 1, 10]);
  assert.equal(s.y(0.01), 170);
  assert.equal(s.y(10), 10);
  assert.ok(Math.abs(s.y(1) - (170 - (2 / 3) * 160)) < 1e-9);
  assert.equal(s.y(0), 170, "zero is clamped to the bottom decade");
  assert.deepEqual(s.xTicks, [0, 1, 2, 3, 4]);
  assert.deepEqual(chartScales([5, 5], box).yTicks, [1, 10], "one value still spans a decade");
  assert.deepEqual(chartScales([], { ...box, layers: 0 }).xTicks, [0, 1]);
});
