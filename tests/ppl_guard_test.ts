/**
 * The quality regression guard (issue 12): quantizes stories260K with the reduced protocol of
 * bench/ppl_protocol.ts `guardProtocol` (leanquant-nu and leanquant-aff row-wise at 2 and 3 bits, 8 × 128
 * calibration tokens, seed 0; 32 × 128 evaluation tokens) and fails when a perplexity moves from the
 * committed seed-0 figure by more than that run's measured seed spread (max − min over seeds 0, 1, 2) plus
 * 1 %. The committed figures come from the same protocol on lavapipe:
 *   deno task bench:ppl --guard --json tests/fixtures/ppl_guard.json
 * Rerun that command (and say why in the commit) when a change is meant to move the figures.
 * About 70 s on lavapipe with two busy cores.
 */
import assert from "node:assert/strict";
import { sharedPath, testGpu } from "./_gpu.ts";
import {
  GUARD_SEEDS,
  guardProtocol,
  type PplRow,
  type PplSummary,
  runPplProtocol,
} from "../bench/ppl_protocol.ts";

interface Fixture {
  adapter: string;
  date: string;
  args: string[];
  rows: PplRow[];
  summaries: PplSummary[];
}

/** Relative slack on top of the seed spread (and the whole tolerance of the full-precision row). */
const MARGIN = 0.01;

Deno.test("quality guard: stories260K perplexities stay within their seed spread of the committed figures", async () => {
  const shared = sharedPath("");
  if (!shared) return;
  const gpu = await testGpu();
  if (!gpu) return;
  const fixture: Fixture = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/ppl_guard.json", import.meta.url)),
  );
  assert.ok(fixture.args.includes("--guard"), "the fixture must come from `deno task bench:ppl --guard`");
  const { protocol, runs } = guardProtocol(shared);
  try {
    const rows = await runPplProtocol(gpu, protocol, { runs, seeds: [0] });
    assert.equal(rows.length, runs.length + 1);
    const report: string[] = [];
    const failures: string[] = [];
    for (const row of rows) {
      const want = fixture.rows.find((r) => r.run === row.run && r.seed === row.seed);
      assert.ok(want, `no committed figure for "${row.run}" seed ${row.seed}`);
      for (const [text, got] of Object.entries(row.ppl)) {
        const s = fixture.summaries.find((x) => x.run === row.run && x.text === text);
        assert.ok(s, `no committed summary for "${row.run}" on ${text}`);
        if (row.seed >= 0) assert.deepEqual(s.seeds, GUARD_SEEDS);
        const ref = want.ppl[text];
        const tol = (s.max - s.min) + MARGIN * ref;
        const line = `${row.run}: ${got.toFixed(3)} vs committed ${ref.toFixed(3)} (± ${tol.toFixed(3)})`;
        report.push(line);
        if (!(Math.abs(got - ref) <= tol)) failures.push(line);
      }
    }
    console.log(`[ppl guard] ${report.join("; ")}`);
    assert.deepEqual(failures, [], `perplexity moved beyond the seed spread:\n${failures.join("\n")}`);
  } finally {
    gpu.device.destroy();
  }
});
