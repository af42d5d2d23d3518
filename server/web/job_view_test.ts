/**
 * The console's reading of the job JSON, checked against snapshots made by the real producer
 * (inference/jobs/job.ts), so a change of the wire's layer numbering or field names shows here.
 */
import assert from "node:assert/strict";
import { Job } from "../../inference/jobs/job.ts";
import { describeJob, describeMethod, describeProgress } from "./job_view.js";

const progress = (layer: number, step: string, fraction: number) => ({
  layer,
  nLayers: 5,
  step,
  fraction,
  gpuBytes: 1000,
  peakGpuBytes: 2000,
});

Deno.test("describeProgress() shows the wire's 1-based layer as it comes (the pipeline's layer 0 is 1/5)", () => {
  const job = new Job("quantize", { method: "gptq", bits: 4, group_size: 32 });
  const events = job.events();
  assert.equal(describeProgress(job.toJSON()), "—"); // queued: no layer yet
  events.phase!("evaluating");
  events.evalProgress!("before", 1, 4);
  assert.equal(describeProgress(job.toJSON()), "perplexity before 1/4");
  events.phase!("quantizing");
  events.progress!(progress(0, "quantize self_attn.q_proj", 0.1));
  assert.equal(job.toJSON().progress.layer, 1, "the wire's layer is 1-based");
  assert.equal(describeProgress(job.toJSON()), "layer 1/5 · quantize self_attn.q_proj");
  events.progress!(progress(4, "quantize mlp.down_proj", 0.9));
  assert.equal(describeProgress(job.toJSON()), "layer 5/5 · quantize mlp.down_proj");
  events.linear!({
    layer: 4,
    field: "wDown",
    name: "mlp.down_proj",
    rows: 64,
    cols: 172,
    loss: 0.5,
    dampUsed: 0.01,
    seconds: 0.1,
  });
  assert.equal(job.toJSON().losses[0].layer, 4, "the losses keep the 0-based layer index");
  events.evalProgress!("after", 2, 4);
  assert.equal(describeProgress(job.toJSON()), "layer 5/5 · perplexity after 2/4");
  job.end("done", null);
  assert.equal(describeProgress(job.toJSON()), "layer 5/5");
});

Deno.test("describeJob() names a quantization by its options and an activation by its kind", () => {
  const q = new Job("quantize", { method: "leanquant-nu", bits: 3, group_size: 0 });
  q.name = "m-nu3";
  assert.equal(describeJob(q.toJSON()), "m-nu3 (leanquant-nu 3-bit per-row)");
  const a = new Job("activate", null);
  a.name = "m-nu3";
  assert.equal(describeMethod(a.toJSON()), "activate");
  assert.equal(describeJob(a.toJSON()), "m-nu3 (activate)");
  assert.equal(describeProgress(a.toJSON()), "—");
  q.end("cancelled", null);
  a.end("done", null);
});
