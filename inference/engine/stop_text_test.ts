import assert from "node:assert/strict";
import { createStopMatcher } from "./stop_text.ts";

function runAll(stops: string[], pieces: string[], includeStop = false): { text: string; stopped: boolean } {
  const m = createStopMatcher(stops, includeStop);
  let text = "";
  for (const p of pieces) {
    const r = m.push(p);
    text += r.emit;
    if (r.stopped) return { text, stopped: true };
  }
  return { text: text + m.flush(), stopped: false };
}

Deno.test("createStopMatcher() passes text through without stops", () => {
  assert.deepEqual(runAll([], ["Hel", "lo"]), { text: "Hello", stopped: false });
});

Deno.test("createStopMatcher() cuts before a stop string split across pieces", () => {
  assert.deepEqual(runAll(["\n\nUser:"], ["Hi there.", "\n", "\nUs", "er: next"]), {
    text: "Hi there.",
    stopped: true,
  });
});

Deno.test("createStopMatcher() releases a held prefix that did not become a stop", () => {
  const m = createStopMatcher(["END"]);
  assert.deepEqual(m.push("abcE"), { emit: "abc", stopped: false });
  assert.deepEqual(m.push("Nx"), { emit: "ENx", stopped: false });
  assert.equal(m.flush(), "");
});

Deno.test("createStopMatcher() picks the earliest of several stops", () => {
  assert.deepEqual(runAll(["b", "a"], ["xxab"]), { text: "xx", stopped: true });
  // and names it (vLLM's stop_reason): among stops starting there, the first listed
  assert.equal(createStopMatcher(["b", "a"]).push("xxab").stop, "a");
  assert.equal(createStopMatcher(["ab", "abc"], true).push("xxabcd").stop, "ab");
});

Deno.test("createStopMatcher() flushes a held tail at the end", () => {
  assert.deepEqual(runAll(["STOP"], ["the ST"]), { text: "the ST", stopped: false });
});

Deno.test("createStopMatcher() with includeStop keeps the stop that matched, split across pieces or not", () => {
  const all = (stops: string[], pieces: string[]) => runAll(stops, pieces, true);
  assert.deepEqual(all(["\n\nUser:"], ["Hi there.", "\n", "\nUs", "er: next"]), {
    text: "Hi there.\n\nUser:",
    stopped: true,
  });
  // The earliest match; among stops starting there, the first listed.
  assert.deepEqual(all(["b", "a"], ["xxab"]), { text: "xxa", stopped: true });
  assert.deepEqual(all(["ab", "abc"], ["xxabcd"]), { text: "xxab", stopped: true });
  assert.deepEqual(all(["STOP"], ["the ST"]), { text: "the ST", stopped: false });
});
