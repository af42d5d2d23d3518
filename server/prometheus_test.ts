import assert from "node:assert/strict";
import { parsePrometheus, sampleValue } from "../tests/_prometheus.ts";
import { Registry } from "./prometheus.ts";

Deno.test("Registry.render() writes HELP, TYPE and samples that the strict parser reads back", () => {
  const r = new Registry();
  const requests = r.counter("t_requests_total", "Requests by route.\nSecond line with a \\ backslash.", [
    "route",
    "status",
  ]);
  requests.inc({ route: "/v1/chat/completions", status: "200" });
  requests.inc({ route: "/v1/chat/completions", status: "200" }, 2);
  requests.inc({ route: 'we"ird\\path\nx', status: "404" });
  r.gauge("t_running", "Running.").set({}, 3);
  r.gauge("t_blocks", "Blocks.", {
    labelNames: ["state"],
    collect: () => [{ labels: { state: "used" }, value: 5 }, { labels: { state: "free" }, value: 0.5 }],
  });
  const h = r.histogram("t_latency_seconds", "Latency.", [0.1, 1, 10], ["route"]);
  for (const v of [0.05, 0.1, 0.5, 20, Infinity]) h.observe({ route: "/a" }, v);
  h.observe({ route: "/b" }, 2);
  r.counter("t_never_total", "A family without samples.");

  const text = r.render();
  const families = parsePrometheus(text);
  assert.deepEqual([...families.keys()], [
    "t_requests_total",
    "t_running",
    "t_blocks",
    "t_latency_seconds",
    "t_never_total",
  ]);
  const req = families.get("t_requests_total")!;
  assert.equal(req.type, "counter");
  assert.equal(req.help, "Requests by route.\nSecond line with a \\ backslash.");
  assert.equal(
    sampleValue(families, "t_requests_total", { route: "/v1/chat/completions", status: "200" }),
    3,
  );
  // the label value survives escaping byte for byte
  assert.equal(sampleValue(families, "t_requests_total", { route: 'we"ird\\path\nx' }), 1);
  assert.match(text, /route="we\\"ird\\\\path\\nx"/);
  assert.equal(sampleValue(families, "t_running"), 3);
  assert.equal(sampleValue(families, "t_blocks", { state: "free" }), 0.5);
  assert.deepEqual(
    families.get("t_latency_seconds")!.samples.filter((s) => s.labels.route === "/a").map((
      s,
    ) => [s.name, s.labels.le, s.value]),
    [
      ["t_latency_seconds_bucket", "0.1", 2], // le is inclusive: 0.1 falls in the 0.1 bucket
      ["t_latency_seconds_bucket", "1", 3],
      ["t_latency_seconds_bucket", "10", 3],
      ["t_latency_seconds_bucket", "+Inf", 5],
      ["t_latency_seconds_sum", undefined, Infinity],
      ["t_latency_seconds_count", undefined, 5],
    ],
  );
  assert.equal(sampleValue(families, "t_latency_seconds_sum", { route: "/b" }), 2);
  assert.equal(families.get("t_never_total")!.samples.length, 0);
});

Deno.test("Registry rejects invalid names, labels and uses", () => {
  const r = new Registry();
  assert.throws(() => r.counter("t_requests", "no _total"), /must end in _total/);
  assert.throws(() => r.gauge("1bad", "x"), /invalid name/);
  assert.throws(() => r.gauge("t_g", "x", { labelNames: ["__reserved"] }), /invalid label name/);
  assert.throws(() => r.histogram("t_h", "x", [1], ["le"]), /invalid label name "le"/);
  assert.throws(() => r.histogram("t_h2", "x", [1, 1]), /increasing/);
  const c = r.counter("t_c_total", "x", ["a"]);
  assert.throws(() => c.inc({ b: "1" }), /expected \{a\}/);
  assert.throws(() => c.inc({ a: "1" }, -1), /Cannot decrease/);
  assert.throws(() => r.counter("t_c_total", "again"), /twice/);
  const g = r.gauge("t_collected", "x", { labelNames: ["state"], collect: () => [{ value: 1 }] });
  assert.ok(g);
  assert.throws(() => r.render(), /on metric "t_collected"/, "a collect callback with wrong labels");
});

Deno.test("a collected counter reads a count kept elsewhere at each scrape and refuses inc()", () => {
  const r = new Registry();
  let kept = 3;
  const c = r.counter("t_kept_total", "Kept by another component.", [], { collect: () => [{ value: kept }] });
  assert.equal(sampleValue(parsePrometheus(r.render()), "t_kept_total"), 3);
  kept = 7;
  assert.equal(sampleValue(parsePrometheus(r.render()), "t_kept_total"), 7);
  assert.equal(c.get(), 7);
  assert.throws(() => c.inc(), /collected at scrape time/);
  r.counter("t_absent_total", "A provider with nothing to report.", [], { collect: () => [] });
  assert.equal(parsePrometheus(r.render()).get("t_absent_total")!.samples.length, 0);
});

Deno.test("parsePrometheus() rejects expositions a scraper could misread", () => {
  const ok = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n";
  assert.equal(parsePrometheus(ok).size, 1);
  const bad: [string, RegExp][] = [
    ["# TYPE a_total counter\na_total 1", /end with a newline/],
    ["a_total 1\n", /without a TYPE/],
    ["# TYPE a_total counter\na_total{x=unquoted} 1\n", /grammar/],
    ['# TYPE a_total counter\na_total{x="bad\\q"} 1\n', /grammar/],
    ["# TYPE a_total counter\na_total one\n", /grammar/],
    ["# TYPE a_total counter\na_total -1\n", /negative/],
    ["# TYPE a gauge\na 1\n# HELP a late\n", /HELP after samples/],
    ["# TYPE a gauge\n# TYPE a gauge\n", /TYPE repeated/],
    ['# TYPE a gauge\na{x="1",x="2"} 1\n', /repeated/],
    ['# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n', /duplicate series/],
    ["# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", /two places/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /cumulative/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /\+Inf/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /!= _count/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', /missing _sum/],
    [
      '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      /increasing/,
    ],
  ];
  for (const [text, why] of bad) assert.throws(() => parsePrometheus(text), why, JSON.stringify(text));
});
