import assert from "node:assert/strict";
import { engineFor, greedy } from "../../tests/_engine.ts";
import { FakeEngine } from "../../tests/_fake_engine.ts";
import { sharedPath, testGpu } from "../../tests/_gpu.ts";
import {
  compileJsonSchema,
  type Engine,
  EngineBusyError,
  type EngineHandle,
  EngineInputError,
  type GenerateRequest,
  regexGrammar,
  type TokenEvent,
} from "../engine/mod.ts";
import { JobInputError, type JobJson, type JobManager } from "../jobs/mod.ts";
import { connectEngine, fromWire, serveEngine, toWire } from "./mod.ts";

/**
 * What one request gave: its start, and per choice its text, logprobs and end event (how tokens group into
 * deltas follows the decode chunks' timing, so deltas are joined).
 */
async function events(engine: Engine, request: GenerateRequest, signal?: AbortSignal): Promise<unknown[]> {
  const out: unknown[] = [];
  const choices: { text: string; logprobs: unknown[]; tokens: number; end?: TokenEvent }[] = [];
  for await (const ev of engine.generate(request, signal)) {
    if (ev.type === "start") out.push(ev);
    const c = ev.type === "start" ? null : (choices[ev.index ?? 0] ??= { text: "", logprobs: [], tokens: 0 });
    if (c && ev.type === "delta") {
      c.text += ev.text;
      c.logprobs.push(...(ev.logprobs ?? []));
      c.tokens += ev.tokens ?? 0;
    }
    if (c && ev.type === "end") c.end = ev;
  }
  return [...out, ...choices];
}

/** A client and a host joined by a MessageChannel: postMessage's structured clone, as between threads. */
function channel(host: Parameters<typeof serveEngine>[1]) {
  const { port1, port2 } = new MessageChannel();
  port1.start();
  port2.start();
  const served = serveEngine(port2, host);
  const remote = connectEngine(port1, "remote");
  return {
    remote,
    close() {
      served.stop();
      port1.close();
      port2.close();
    },
  };
}

/** Polls the pushed-or-fetched counters until `ok` holds (the host frees a cancelled sequence at its next step). */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("across a thread boundary the engine streams the same events, refuses with the same errors and cancels", async (t) => {
  const model = sharedPath("models/stories260K");
  const gpu = await testGpu();
  if (!model || !gpu) return;
  // No prefix caching: a repeated prompt would report cached ids, and the events must match exactly.
  const { engine } = await engineFor(gpu, model, { maxNumSeqs: 4, maxQueued: 2, prefixCaching: false });
  const link = channel({ engine, jobs: null as unknown as JobManager });
  const remote = link.remote.engine;
  try {
    await remote.refresh();
    assert.deepEqual(remote.status(), engine.status());

    await t.step(
      "greedy with logprobs, n = 2 sampled, and grammars with regexes and a recursive $ref",
      async () => {
        const schema = {
          type: "object",
          properties: { name: { type: "string", pattern: "^[a-z]{1,6}$" }, child: { $ref: "#" } },
          required: ["name"],
        };
        const requests: GenerateRequest[] = [
          greedy("Once upon a time", 24),
          {
            ...greedy("The little dog", 16),
            n: 2,
            sampling: { temperature: 0.8, topP: 0.95, topK: 0, minP: 0, seed: 7 },
          },
          { ...greedy("Lily said", 12), grammar: regexGrammar("(yes|no|maybe)[!.]") },
          { ...greedy("Tom ran", 40), grammar: compileJsonSchema(schema, "response_format") },
        ];
        const texts: string[] = [];
        for (const request of requests) {
          const here = await events(engine, request);
          texts.push((here[1] as { text: string }).text);
          assert.notEqual(texts.at(-1), "", "the request generates text");
          assert.deepEqual(await events(remote, request), here);
        }
        assert.match(texts[2], /^(yes|no|maybe)[!.]$/, "the regex held");
        assert.match(texts[3], /^\{\s*"name"\s*:\s*"[a-z]/, "the schema held");
      },
    );

    await t.step("refusals keep their class, field and code", async () => {
      const tooLong = { ...greedy("Once", 100_000), maxTokensStrict: true };
      const local = await events(engine, tooLong).catch((e) => e);
      const far = await events(remote, tooLong).catch((e) => e);
      assert.ok(local instanceof EngineInputError && far instanceof EngineInputError);
      assert.deepEqual([far.message, far.param, far.code], [local.message, local.param, local.code]);
      for (
        const err of [
          new EngineInputError("bad n", "n", "too_many"),
          new EngineBusyError("full", 3),
          new JobInputError("finished", "id", 409, "job_finished"),
        ]
      ) {
        const back = fromWire(structuredClone(toWire(err)));
        assert.equal(back.constructor, err.constructor);
        assert.deepEqual({ ...back, message: back.message }, { ...err, message: err.message });
      }
    });

    await t.step(
      "a reader that leaves, or an aborted signal, frees the sequence and its KV blocks",
      async () => {
        const long = greedy("Once upon a time", 400, { ignoreEos: true });
        let seen = 0;
        for await (const ev of remote.generate(long)) {
          if (ev.type === "delta" && ++seen === 2) break;
        }
        const abort = new AbortController();
        for await (const ev of remote.generate(long, abort.signal)) {
          if (ev.type === "delta") abort.abort();
        }
        await until(async () => {
          await remote.refresh();
          const c = remote.counters();
          return c.running === 0 && c.waiting === 0 && c.kvBlocksUsed === 0;
        }, "the host to free the cancelled sequences");
        assert.ok(remote.counters().generatedTokensTotal < 400, "the sequences stopped early");
      },
    );

    await t.step(
      "a dead Worker fails the stream in flight and every later call; /health would say why",
      async () => {
        const stream = remote.generate(greedy("Once upon a time", 60, { ignoreEos: true }))
          [Symbol.asyncIterator]();
        assert.equal((await stream.next()).value?.type, "start");
        link.remote.fail("device lost");
        await assert.rejects(async () => {
          for (;;) if ((await stream.next()).done) break;
        }, /The engine stopped: device lost/);
        assert.equal(remote.status().state, "error");
        assert.match(remote.status().detail, /device lost/);
        await assert.rejects(remote.tokenize({ kind: "text", prompt: "x" }), /device lost/);
        await until(
          () => Promise.resolve(engine.counters().running === 0),
          "the host to free the last stream",
        );
      },
    );
  } finally {
    link.close();
    gpu.device.destroy();
  }
});

/** A job manager double: one job whose snapshots the test drives. */
function fakeJobs(): JobManager & { emit(status: JobJson["status"]): void } {
  let job = {
    id: "qjob-1",
    object: "quantize.job",
    kind: "quantize",
    status: "queued",
  } as unknown as JobJson;
  const listeners = new Set<(j: JobJson) => void>();
  let ended: (j: JobJson) => void = () => {};
  const done = new Promise<JobJson>((resolve) => (ended = resolve));
  const need = (id: string) => {
    if (id !== job.id) throw new JobInputError(`Cannot find job "${id}"`, "id", 404, "job_not_found");
    return job;
  };
  return {
    submit: () => Promise.resolve(job),
    activate: () => Promise.reject(new JobInputError("no such artifact", "name", 404, "artifact_not_found")),
    get: (id) => Promise.resolve(id === job.id ? job : null),
    list: () => Promise.resolve([job]),
    cancel: (id) =>
      Promise.reject(
        new JobInputError(`Cannot cancel job "${need(id).id}": it is done`, "id", 409, "job_finished"),
      ),
    wait: () => done,
    artifacts: () => Promise.resolve([]),
    subscribe(id, listener) {
      need(id);
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    emit(status) {
      job = { ...job, status };
      for (const l of listeners) l(job);
      if (status === "done") ended(job);
    },
  };
}

Deno.test("across a thread boundary the job manager answers, refuses and streams a job's snapshots to its end", async () => {
  const jobs = fakeJobs();
  const idle = new FakeEngine();
  const engine = { status: () => idle.status(), counters: () => ({}) } as unknown as EngineHandle;
  const link = channel({ engine, jobs });
  try {
    const remote = link.remote.jobs;
    assert.equal((await remote.submit({} as never)).id, "qjob-1");
    assert.equal((await remote.get("qjob-1"))?.status, "queued");
    assert.equal(await remote.get("qjob-9"), null);
    assert.equal((await remote.list()).length, 1);
    const refused = await remote.cancel("qjob-1").catch((e) => e);
    assert.ok(refused instanceof JobInputError);
    assert.deepEqual([refused.status, refused.field, refused.code], [409, "id", "job_finished"]);
    const missing = await remote.activate("nope").catch((e) => e);
    assert.ok(missing instanceof JobInputError && missing.status === 404);

    const seen: string[] = [];
    const finished = new Promise<void>((resolve) => {
      remote.subscribe("qjob-1", (j) => {
        seen.push(j.status);
        if (j.status === "done") resolve();
      });
    });
    // The subscription is open once a call made after it is answered (messages keep their order).
    await remote.get("qjob-1");
    for (const s of ["calibrating", "quantizing", "done"] as const) jobs.emit(s);
    await finished;
    assert.deepEqual(seen, ["calibrating", "quantizing", "done"]);
    assert.equal((await remote.wait("qjob-1")).status, "done");
  } finally {
    link.close();
  }
});
