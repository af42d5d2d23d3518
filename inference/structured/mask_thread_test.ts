/**
 * The mask thread (mask_thread.ts) gives the masks an in-thread GrammarMatcher gives, for handles of one schema
 * compiled twice and walked interleaved, across postMessage's structured clone (a MessageChannel, and a real
 * Worker); a refused id and a closed thread reject instead of hanging; released handles are forgotten.
 */
import assert from "node:assert/strict";
import { compileJsonSchema } from "./json_schema.ts";
import { MaskPool, MaskThread, serveMasks } from "./mask_thread.ts";
import { GrammarMatcher, TokenVocab } from "./token_mask.ts";

const enc = new TextEncoder();

/** A small vocabulary with multi-byte words, a duplicate and ids that are never text (null). */
const WORDS = [
  "{",
  "}",
  '"',
  '{"',
  '":',
  '","',
  "name",
  "na",
  "me",
  "code",
  "A",
  "B",
  "AB",
  "7",
  "12",
  " ",
  ",",
  ":",
  "x",
  "A",
  null,
  '"}',
  "}\n",
  "\n",
];
const EOS = WORDS.length; // an id past the words: allowed where the value may end
const vocab = () => new TokenVocab(WORDS.map((w) => (w === null ? null : enc.encode(w))), WORDS.length + 1);

/** A pattern (a RegexDfa rebuilt on the thread, its states numbered anew) and a bounded string. */
const SCHEMA = {
  type: "object",
  properties: { name: { type: "string", maxLength: 5 }, code: { type: "string", pattern: "^[AB][0-9]+$" } },
  required: ["name", "code"],
};

/** The ids of `text`, longest word first. */
function ids(v: TokenVocab, text: string): number[] {
  const bytes = enc.encode(text);
  const out: number[] = [];
  for (let at = 0; at < bytes.length;) {
    let best = -1;
    v.bytes.forEach((b, id) => {
      if (b && b.length > (v.bytes[best]?.length ?? 0) && b.every((x, k) => bytes[at + k] === x)) best = id;
    });
    assert.ok(best >= 0, `no word for byte ${at} of ${text}`);
    out.push(best);
    at += v.bytes[best]!.length;
  }
  return out;
}

/** A thread served over a MessageChannel (structured clone, as between threads) in this thread. */
function channelThread(v: TokenVocab): MaskThread {
  const { port1, port2 } = new MessageChannel();
  port1.start();
  port2.start();
  serveMasks(port2);
  return new MaskThread(port1, () => {
    port1.close();
    port2.close();
  }, v);
}

/** Walks two handles of SCHEMA (compiled apart) along two texts, each mask checked against a local matcher. */
async function walkTwo(thread: MaskThread, v: TokenVocab): Promise<void> {
  const texts = ['{"name":"AB","code":"A12"}', '{"name":"x", "code":"B7"}'];
  const walks = texts.map((text) => {
    const grammar = compileJsonSchema(SCHEMA, "schema");
    return { all: ids(v, text), local: new GrammarMatcher(grammar, v), handle: thread.open(grammar, [EOS]) };
  });
  assert.equal(thread.openHandles, 2);
  const longest = Math.max(...walks.map((w) => w.all.length));
  for (let i = 0; i <= longest; i++) {
    for (const w of walks) {
      if (i > w.all.length) continue;
      if (i > 0) assert.ok(w.local.accept(w.all[i - 1]));
      const got = await w.handle.mask(w.all.slice(0, i));
      assert.deepEqual([...got], [...w.local.mask([EOS])], `mask before id ${i}`);
    }
  }
  for (const w of walks) {
    assert.ok(w.local.canEnd);
    w.handle.release();
    w.handle.release(); // once is enough: a second release sends nothing
  }
  assert.equal(thread.openHandles, 0);
}

Deno.test("mask thread over a MessageChannel: the masks of an in-thread matcher, handles interleaved", async () => {
  const v = vocab();
  const thread = channelThread(v);
  try {
    await walkTwo(thread, v);
  } finally {
    thread.close();
  }
});

Deno.test("mask thread: a refused id rejects its mask naming the id; closing rejects what is pending", async () => {
  const v = vocab();
  const thread = channelThread(v);
  const grammar = compileJsonSchema(SCHEMA, "schema");
  const bad = thread.open(grammar, [EOS]);
  await assert.rejects(bad.mask(ids(v, "}")), /does not allow id 1\b/);
  const good = thread.open(grammar, [EOS]);
  const first = await good.mask([]);
  assert.deepEqual([...first], [...new GrammarMatcher(grammar, v).mask([EOS])]);
  const pending = good.mask(ids(v, '{"'));
  thread.close();
  await assert.rejects(pending, /closed/);
  await assert.rejects(good.mask(ids(v, '{"name')), /closed/);
});

Deno.test("mask thread in a Worker: the same masks; close() ends it", async () => {
  const v = vocab();
  const thread = MaskThread.start(v);
  try {
    await walkTwo(thread, v);
  } finally {
    thread.close();
  }
});

Deno.test("mask thread in a Worker: a grammar it cannot rebuild fails that handle's masks alone", async () => {
  const v = vocab();
  const thread = MaskThread.start(v);
  try {
    const broken = null as unknown as Parameters<MaskThread["open"]>[0];
    await assert.rejects(thread.open(broken, [EOS]).mask([]), /Cannot rebuild the grammar/);
    const grammar = compileJsonSchema(SCHEMA, "schema");
    const got = await thread.open(grammar, [EOS]).mask([]);
    assert.deepEqual([...got], [...new GrammarMatcher(grammar, v).mask([EOS])]);
  } finally {
    thread.close();
  }
});

Deno.test("mask pool: a grammar goes back to its thread, a new one to an idle thread, at most size threads", async () => {
  const v = vocab();
  const started: MaskThread[] = [];
  const pool = new MaskPool(() => {
    started.push(channelThread(v));
    return started.at(-1)!;
  }, 2);
  const other = {
    type: "object",
    properties: { code: { type: "string", pattern: "^[AB][0-9]+$" } },
    required: ["code"],
  };
  try {
    const check = async (handle: ReturnType<MaskPool["open"]>, schema: object, text: string) => {
      const local = new GrammarMatcher(compileJsonSchema(schema, "schema"), v);
      const all = ids(v, text);
      for (let i = 0; i <= all.length; i++) {
        if (i > 0) assert.ok(local.accept(all[i - 1]));
        assert.deepEqual(
          [...await handle.mask(all.slice(0, i))],
          [...local.mask([EOS])],
          `mask before id ${i}`,
        );
      }
    };
    const a1 = pool.open(compileJsonSchema(SCHEMA, "schema"), [EOS]);
    const b = pool.open(compileJsonSchema(other, "schema"), [EOS]); // thread 0 is busy: a second starts
    const a2 = pool.open(compileJsonSchema(SCHEMA, "schema"), [EOS]); // compiled apart, same content: home
    assert.equal(pool.threads, 2);
    assert.deepEqual(started.map((t) => t.openHandles), [2, 1]);
    await Promise.all([
      check(a1, SCHEMA, '{"name":"AB","code":"A12"}'),
      check(b, other, '{"code":"B7"}'),
      check(a2, SCHEMA, '{"name":"x", "code":"B7"}'),
    ]);
    // Both threads busy and the pool full: a third grammar goes to the one with fewer handles.
    const third = { type: "string", maxLength: 3 };
    const c = pool.open(compileJsonSchema(third, "schema"), [EOS]);
    assert.equal(pool.threads, 2);
    assert.deepEqual(started.map((t) => t.openHandles), [2, 2]);
    await check(c, third, '"AB"');
    [a1, a2, b, c].forEach((h) => h.release());
    assert.equal(pool.openHandles, 0);
  } finally {
    pool.close();
  }
});
