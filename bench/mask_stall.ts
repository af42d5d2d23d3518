/**
 * `deno task bench:mask-stall [--model <dir>] [--streams N] [--schemas K] [--tokens N]`: what structured output's
 * token masks cost the other streams of a batch. N unconstrained greedy streams decode; once each has its
 * first ids, K structured requests arrive one after another, each with a schema no request used before (new
 * property names: no mask of it is cached, the case where masks are slow, BENCHMARKS.md "Structured output").
 * Reports the unconstrained streams' gaps between deliveries of ids (a chunk's ids come together) while the structured requests run, beside their gaps
 * before and after, and the structured requests' own time per id. The engine runs in process, as in its
 * Worker.
 */
import { parseArgs } from "node:util";
import { describeGpu, requestGpu } from "../kernels/core/mod.ts";
import { compileJsonSchema, createEngine, type GenerateRequest, loadModel } from "../inference/engine/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: new URL("../../shared/models/lq-49m", import.meta.url).pathname },
    streams: { type: "string", default: "4" },
    schemas: { type: "string", default: "3" },
    tokens: { type: "string", default: "48" },
  },
});
const streams = Number(values.streams);
const schemas = Number(values.schemas);
const tokens = Number(values.tokens);

const gpu = await requestGpu();
const model = await loadModel(gpu, values.model, { weightType: "auto" });
const engine = createEngine("bench", { log: () => {}, batch: { maxNumSeqs: streams + 1 } });
await engine.setModel(model);
console.log(`adapter: ${describeGpu(gpu)}; model ${model.modelId}, vocabulary ${model.config.vocabSize}`);

const request = (
  prompt: string,
  maxTokens: number,
  extra: Partial<GenerateRequest> = {},
): GenerateRequest => ({
  input: { kind: "text", prompt },
  maxTokens,
  stop: [],
  sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
  ignoreEos: true,
  ...extra,
});

/** Runs a request; returns the times its ids arrived, one per delivery (ids come a chunk at a time). */
async function run(r: GenerateRequest, onId?: () => void): Promise<number[]> {
  const times: number[] = [];
  for await (const ev of engine.generate(r)) {
    if (ev.type !== "delta" || (ev.tokens ?? 0) === 0) continue;
    const now = performance.now();
    if (times.length === 0 || now - times.at(-1)! > 0.5) times.push(now);
    onId?.();
  }
  return times;
}

/** A schema of four properties whose names no earlier schema used. */
function freshSchema(k: number) {
  return {
    type: "object",
    properties: {
      [`name_${k}`]: { type: "string", maxLength: 24 },
      [`city_${k}`]: { type: "string", maxLength: 24 },
      [`age_${k}`]: { type: "integer" },
      [`tags_${k}`]: { type: "array", items: { type: "string", maxLength: 12 }, maxItems: 3 },
    },
    required: [`name_${k}`, `city_${k}`, `age_${k}`, `tags_${k}`],
  };
}

// Warm up (pipelines, the vocabulary's first use) with a schema of its own.
await Promise.all([
  run(request("Once upon a time", 8)),
  run(request("A JSON record:", 24, { grammar: compileJsonSchema(freshSchema(-1), "schema") })),
]);

const pace = Math.max(8, tokens >> 3);
let started = 0;
let ready!: () => void;
const allStarted = new Promise<void>((r) => (ready = r));
const plain = Array.from({ length: streams }, (_, i) => {
  let seen = 0;
  return run(request(`Story ${i}: Once upon a time`, tokens * 4), () => {
    if (++seen === pace && ++started === streams) ready();
  });
});
await allStarted;
const structured: { start: number; end: number; ids: number }[] = [];
for (let k = 0; k < schemas; k++) {
  const start = performance.now();
  const grammar = compileJsonSchema(freshSchema(k), "schema");
  let ids = 0;
  await run(request(`Record ${k} as JSON:`, tokens, { grammar }), () => ids++);
  structured.push({ start, end: performance.now(), ids });
}
const spans = await Promise.all(plain);

const during = (t: number) => structured.some((s) => t > s.start && t <= s.end);
const gapsIn: number[] = [];
const gapsOut: number[] = [];
const first = structured[0].start;
for (const times of spans) {
  for (let i = 1; i < times.length; i++) {
    if (times[i - 1] < first) continue; // before the structured requests
    (during(times[i]) ? gapsIn : gapsOut).push(times[i] - times[i - 1]);
  }
}
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const line = (label: string, xs: number[]) =>
  console.log(
    `${label}: ${xs.length} gaps, p50 ${pct(xs, 0.5).toFixed(1)} ms, p99 ${
      pct(xs, 0.99).toFixed(1)
    } ms, max ${Math.max(...xs).toFixed(1)} ms`,
  );
line("unconstrained streams, while structured requests run", gapsIn);
if (gapsOut.length > 0) line("unconstrained streams, after them", gapsOut);
for (const [k, s] of structured.entries()) {
  console.log(`structured request ${k}: ${s.ids} ids in ${(s.end - s.start).toFixed(0)} ms`);
}
Deno.exit(0); // the engine (and its mask thread) would keep the process alive
