import assert from "node:assert/strict";
import { createProgressBar, formatBytes, formatSeconds } from "./progress.ts";

function fakeStream(tty: boolean) {
  const chunks: string[] = [];
  const dec = new TextDecoder();
  return {
    chunks,
    writeSync: (p: Uint8Array) => (chunks.push(dec.decode(p)), p.length),
    isTerminal: () => tty,
  };
}

Deno.test("createProgressBar() prints one line per label off a terminal, with an ETA", () => {
  let t = 0;
  const s = fakeStream(false);
  const bar = createProgressBar(s, { now: () => t });
  t = 10_000;
  bar.update(0.25, "layer 1/4 capture");
  bar.update(0.3, "layer 1/4 capture"); // same label: no new line
  bar.update(0.5, "layer 2/4 capture");
  bar.done();
  assert.equal(s.chunks.length, 2);
  assert.match(s.chunks[0], /25% layer 1\/4 capture · 10\.0 s elapsed · ETA 30\.0 s\n$/);
  assert.match(s.chunks[1], /50% layer 2\/4 capture/);
});

Deno.test("createProgressBar() redraws in place on a terminal and ends the line", () => {
  let t = 0;
  const s = fakeStream(true);
  const bar = createProgressBar(s, { now: () => t });
  bar.update(0.1, "a");
  t = 50;
  bar.update(0.2, "a"); // throttled
  t = 200;
  bar.update(0.3, "b");
  bar.log("note");
  bar.done();
  assert.equal(s.chunks.length, 4);
  assert.ok(s.chunks[0].startsWith("\r\x1b[K[") && s.chunks[1].includes("30% b"));
  assert.equal(s.chunks[2], "\r\x1b[Knote\n");
  assert.equal(s.chunks[3], "\n");
});

Deno.test("formatSeconds() and formatBytes() pick readable units", () => {
  assert.equal(formatSeconds(0.4213), "0.42 s");
  assert.equal(formatSeconds(187), "3m07s");
  assert.equal(formatSeconds(7500), "2h05m");
  assert.equal(formatBytes(812), "812 B");
  assert.equal(formatBytes(3.5 * 1024 ** 3), "3.50 GiB");
});
