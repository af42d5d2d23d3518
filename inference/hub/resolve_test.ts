/**
 * resolveModel() against the loopback fake hub (tests/_fake_hub.ts): the cache layout huggingface_hub
 * writes, no second download, resume, checksums, offline mode and the error lines. Never reaches the internet.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { resolveModel, type ResolveOptions } from "./resolve.ts";
import { HubError } from "./errors.ts";
import type { DownloadProgress } from "./progress.ts";
import {
  type FakeHub,
  hubEtag,
  sha256Hex,
  startFakeHub,
  writePythonStyleCache,
} from "../../tests/_fake_hub.ts";
import { sharedPath } from "../../tests/_gpu.ts";
import { parseModelConfig } from "../model/mod.ts";

const REPO = "shared/stories260K";
const ROOT = "models--shared--stories260K";
/** What the server needs of stories260K; the folder also holds golden files that must not be fetched. */
const NEEDED = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
];

/** A fake hub, a fresh cache, and resolve options pointing at both. */
async function setup() {
  const hub = startFakeHub();
  const cacheDir = await Deno.makeTempDir({ prefix: "leanserve-hub-cache-" });
  const options = (extra: Partial<ResolveOptions> = {}): ResolveOptions => ({
    cacheDir,
    endpoint: hub.endpoint,
    token: null,
    ...extra,
  });
  return {
    hub,
    cacheDir,
    options,
    async [Symbol.asyncDispose]() {
      await hub.close();
      await Deno.remove(cacheDir, { recursive: true });
    },
  };
}

function downloads(hub: FakeHub, from = 0) {
  return hub.requests.slice(from).filter((r) => r.origin === "cdn" || r.path.includes("/resolve/"));
}

async function rejectsWith(p: Promise<unknown>, kind: string, message: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof HubError, String(err));
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("resolveModel() downloads a repo into the Hugging Face cache layout", async (t) => {
  const models = sharedPath("models/stories260K");
  if (!models) return;
  await using s = await setup();
  const progress: DownloadProgress[] = [];
  const resolved = await resolveModel(
    REPO,
    s.options({ token: s.hub.token, onProgress: (p) => progress.push(p) }),
  );
  const commit = s.hub.repo(REPO)!.commit;
  const root = join(s.cacheDir, ROOT);

  await t.step("the snapshot folder of the commit is returned and refs/main names it", async () => {
    assert.deepEqual(resolved, {
      dir: join(root, "snapshots", commit),
      repoId: REPO,
      revision: "main",
      commit,
    });
    assert.equal(await Deno.readTextFile(join(root, "refs", "main")), commit);
  });
  await t.step("each needed file is a relative symlink to blobs/<etag> with the original bytes", async () => {
    const listed = [...Deno.readDirSync(resolved.dir)].map((e) => e.name).sort();
    assert.deepEqual(listed, NEEDED, "only the needed files (no golden_hf.json)");
    for (const file of NEEDED) {
      const original = await Deno.readFile(join(models, file));
      const link = join(resolved.dir, file);
      assert.ok((await Deno.lstat(link)).isSymlink, file);
      assert.equal(await Deno.readLink(link), `../../blobs/${hubEtag(original)}`, file);
      assert.deepEqual(await Deno.readFile(link), original, file);
    }
  });
  await t.step(
    "blobs are named by etag (sha256 for the LFS weights) and no .incomplete is left",
    async () => {
      const blobs = [...Deno.readDirSync(join(root, "blobs"))].map((e) => e.name).sort();
      const expected = await Promise.all(
        NEEDED.map(async (f) => hubEtag(await Deno.readFile(join(models, f)))),
      );
      assert.deepEqual(blobs, expected.sort());
      const weights = await Deno.readFile(join(models, "model.safetensors"));
      assert.ok(blobs.includes(sha256Hex(weights)));
    },
  );
  await t.step("the token goes to the hub and never to the CDN the weights are redirected to", () => {
    const cdn = s.hub.requests.filter((r) => r.origin === "cdn");
    assert.ok(cdn.length > 0, "model.safetensors came through the CDN redirect");
    assert.ok(cdn.every((r) => r.authorization === null));
    assert.ok(
      s.hub.requests.filter((r) => r.origin === "hub").every((r) =>
        r.authorization === `Bearer ${s.hub.token}`
      ),
    );
  });
  await t.step("progress ends with every byte of the step's files", () => {
    const last = progress.at(-1)!;
    assert.equal(last.file, "model.safetensors");
    assert.equal(last.bytes, last.total);
    assert.equal(last.total, Deno.statSync(join(models, "model.safetensors")).size);
    assert.ok(last.rate > 0 && last.etaSeconds === 0);
  });
  await t.step("a second resolve asks for the commit only and downloads nothing", async () => {
    const before = s.hub.requests.length;
    assert.deepEqual(await resolveModel(REPO, s.options()), resolved);
    assert.equal(downloads(s.hub, before).length, 0);
    assert.equal(s.hub.requests.length - before, 1, "one revision request");
  });
  await t.step("offline mode resolves from refs/main without any request", async () => {
    const before = s.hub.requests.length;
    assert.deepEqual(await resolveModel(REPO, s.options({ offline: true })), resolved);
    assert.deepEqual(await resolveModel(`${REPO}@${commit}`, s.options({ offline: true })), {
      ...resolved,
      revision: commit,
    });
    assert.equal(s.hub.requests.length, before);
  });
  await t.step("an unreachable hub falls back to the cached snapshot with a warning", async () => {
    const warnings: string[] = [];
    const dead = await closedEndpoint();
    const again = await resolveModel(REPO, s.options({ endpoint: dead, onWarning: (m) => warnings.push(m) }));
    assert.equal(again.dir, resolved.dir);
    assert.match(warnings.join("\n"), new RegExp(`Cannot reach ${dead}.*from the cache`));
  });
});

Deno.test("resolveModel() resumes a cut download with a Range request", async () => {
  const models = sharedPath("models/stories260K");
  if (!models) return;
  await using s = await setup();
  const weights = await Deno.readFile(join(models, "model.safetensors"));
  const cut = 300_000;
  s.hub.cutNextDownload(REPO, "model.safetensors", cut);
  await rejectsWith(resolveModel(REPO, s.options()), "network", /model\.safetensors.*run again to resume/);
  const incomplete = join(s.cacheDir, ROOT, "blobs", `${sha256Hex(weights)}.incomplete`);
  assert.equal((await Deno.stat(incomplete)).size, cut, "the partial file is kept");
  assert.equal(await Deno.readTextFile(join(s.cacheDir, ROOT, "refs", "main")).catch(() => null), null);

  const before = s.hub.requests.length;
  const progress: DownloadProgress[] = [];
  const { dir } = await resolveModel(REPO, s.options({ onProgress: (p) => progress.push(p) }));
  const ranged = s.hub.requests.slice(before).filter((r) => r.range !== null);
  assert.deepEqual(ranged.map((r) => [r.origin, r.range]), [["hub", `bytes=${cut}-`], [
    "cdn",
    `bytes=${cut}-`,
  ]]);
  assert.deepEqual(await Deno.readFile(join(dir, "model.safetensors")), weights);
  assert.equal(await Deno.stat(incomplete).catch(() => null), null);
  assert.equal(progress.at(-1)!.bytes, weights.length, "resumed bytes count towards progress");
});

Deno.test("resolveModel() rejects a checksum mismatch and links nothing", async (t) => {
  if (!sharedPath("models/stories260K")) return;
  for (const file of ["model.safetensors", "tokenizer.json"]) {
    await t.step(`${file} (${file.endsWith("safetensors") ? "LFS sha256" : "git blob sha1"})`, async () => {
      await using s = await setup();
      s.hub.corrupt(REPO, file);
      await rejectsWith(resolveModel(REPO, s.options()), "checksum", new RegExp(`"${file}".*expected`));
      const root = join(s.cacheDir, ROOT);
      const commit = s.hub.repo(REPO)!.commit;
      assert.equal(await Deno.lstat(join(root, "snapshots", commit, file)).catch(() => null), null);
      const blobs = [...Deno.readDirSync(join(root, "blobs"))].map((e) => e.name);
      assert.ok(!blobs.some((b) => b.endsWith(".incomplete")), "the bad partial file is removed");
      assert.equal(await Deno.stat(join(root, "refs", "main")).catch(() => null), null);
    });
  }
});

Deno.test("resolveModel() serves a cache laid out by Python tools, offline", async (t) => {
  const models = sharedPath("models/stories260K");
  if (!models) return;
  await using s = await setup();
  const files = Object.fromEntries(
    await Promise.all(NEEDED.map(async (f) => [f, await Deno.readFile(join(models, f))])),
  );
  const commit = "a".repeat(40);
  const snapshot = await writePythonStyleCache(s.cacheDir, "org/tiny", commit, files);
  await t.step("from refs/main", async () => {
    const r = await resolveModel("org/tiny", s.options({ offline: true }));
    assert.deepEqual(r, { dir: snapshot, repoId: "org/tiny", revision: "main", commit });
    assert.equal(s.hub.requests.length, 0);
  });
  await t.step("a revision never resolved fails naming the cache and HF_HUB_OFFLINE", async () => {
    await rejectsWith(
      resolveModel("org/tiny@v2", s.options({ offline: true })),
      "not_cached",
      new RegExp(`"org/tiny@v2" in the Hugging Face cache "${s.cacheDir}" \\(HF_HUB_OFFLINE is set\\)`),
    );
    await rejectsWith(
      resolveModel("org/other", s.options({ offline: true })),
      "not_cached",
      /org\/other@main/,
    );
  });
  await t.step("a snapshot without its weights is not complete", async () => {
    await Deno.remove(join(s.cacheDir, "models--org--tiny", "blobs", hubEtag(files["model.safetensors"])));
    await rejectsWith(
      resolveModel("org/tiny", s.options({ offline: true })),
      "not_cached",
      /lacks model\.safetensors/,
    );
  });
});

Deno.test("resolveModel() errors are one line naming the repo and what to do", async (t) => {
  await using s = await setup();
  const weights = new Uint8Array(100_000);
  const files = { "config.json": "{}", "tokenizer.json": "{}", "model.safetensors": weights };
  s.hub.addRepo("org/gated", files, { gated: true });

  await t.step("an unknown repo without a token: not found or gated, set HF_TOKEN", async () => {
    await rejectsWith(
      resolveModel("org/missing", s.options()),
      "not_found",
      /"org\/missing".*not found or gated: set HF_TOKEN/,
    );
  });
  await t.step("an unknown repo with a token: not found", async () => {
    await rejectsWith(
      resolveModel("org/missing", s.options({ token: "hf_x" })),
      "not_found",
      /not found, or HF_TOKEN has no access/,
    );
  });
  await t.step("an unknown revision", async () => {
    await rejectsWith(
      resolveModel("org/gated@v9", s.options()),
      "not_found",
      /revision "v9" of "org\/gated"/,
    );
  });
  await t.step("a gated repo without a token", async () => {
    await rejectsWith(
      resolveModel("org/gated", s.options()),
      "gated",
      /gated repo "org\/gated".*accept its terms.*set HF_TOKEN/,
    );
  });
  await t.step("a gated repo with a token that has no access", async () => {
    await rejectsWith(
      resolveModel("org/gated", s.options({ token: "hf_wrong" })),
      "gated",
      /HF_TOKEN has no access/,
    );
  });
  await t.step("a gated repo with the right token (read from the token file) downloads", async () => {
    const tokenFile = join(s.cacheDir, "token");
    await Deno.writeTextFile(tokenFile, `${s.hub.token}\n`);
    const r = await resolveModel("org/gated", s.options({ tokenFile }));
    assert.deepEqual(await Deno.readFile(join(r.dir, "model.safetensors")), weights);
  });
  await t.step("an unreachable endpoint is named", async () => {
    const dead = await closedEndpoint();
    await rejectsWith(
      resolveModel("org/gated2", s.options({ endpoint: dead })),
      "network",
      new RegExp(`Cannot reach ${dead}`),
    );
  });
  await t.step("a path that is no folder and no repo id", async () => {
    await rejectsWith(
      resolveModel("./no/such/dir", s.options()),
      "invalid",
      /Cannot find model folder "\.\/no\/such\/dir"/,
    );
    await rejectsWith(resolveModel("just-a-name", s.options()), "invalid", /not a Hugging Face repo id/);
  });
  await t.step("a local folder is returned as it is, without requests", async () => {
    const before = s.hub.requests.length;
    assert.deepEqual(await resolveModel(s.cacheDir, s.options()), {
      dir: s.cacheDir,
      repoId: null,
      revision: null,
      commit: null,
    });
    assert.equal(s.hub.requests.length, before);
  });
});

Deno.test("resolveModel() checks the architecture before downloading weights", async () => {
  await using s = await setup();
  const config = { architectures: ["FalconForCausalLM"], model_type: "falcon", hidden_size: 64 };
  s.hub.addRepo("org/falcon", {
    "config.json": JSON.stringify(config),
    "tokenizer.json": "{}",
    "model.safetensors": new Uint8Array(100_000),
  });
  const checkConfig = (raw: Record<string, unknown>, source: string) =>
    void parseModelConfig(raw, null, source);
  // The checker's own error comes through as it is (the model folder's list of architectures).
  await assert.rejects(
    resolveModel("org/falcon", s.options({ checkConfig })),
    /Cannot load model: unsupported architecture "FalconForCausalLM" \(supported: .*LlamaForCausalLM/,
  );
  // Errors past the architecture name the file by the source resolveModel passes: repo, revision, file.
  s.hub.addRepo("org/no-hidden", {
    "config.json": JSON.stringify({ architectures: ["LlamaForCausalLM"], model_type: "llama" }),
    "tokenizer.json": "{}",
    "model.safetensors": new Uint8Array(100_000),
  });
  await assert.rejects(
    resolveModel("org/no-hidden", s.options({ checkConfig })),
    /Cannot load model config "org\/no-hidden@main: config.json": hidden_size is missing/,
  );
  assert.ok(!s.hub.requests.some((r) => r.path.endsWith("model.safetensors")), "no weights requested");
});

Deno.test("resolveModel() fetches the shards an index lists, and refuses repos it cannot serve", async (t) => {
  await using s = await setup();
  const shard = (n: number) => new Uint8Array(70_000).fill(n);
  const index = {
    weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" },
  };
  s.hub.addRepo("org/sharded", {
    "config.json": "{}",
    "tokenizer.json": "{}",
    "model.safetensors.index.json": JSON.stringify(index),
    "model-00001-of-00002.safetensors": shard(1),
    "model-00002-of-00002.safetensors": shard(2),
    "pytorch_model.bin": shard(3),
  });
  await t.step("both shards and the index, not the .bin", async () => {
    const { dir } = await resolveModel("org/sharded", s.options());
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer.json",
    ]);
    assert.deepEqual(await Deno.readFile(join(dir, "model-00002-of-00002.safetensors")), shard(2));
    assert.ok(!s.hub.requests.some((r) => r.path.endsWith(".bin")));
  });
  await t.step("a repo without tokenizer.json (tiny-qwen2) is refused before any download", async () => {
    if (!sharedPath("models/tiny-qwen2")) return;
    await rejectsWith(
      resolveModel("shared/tiny-qwen2", s.options()),
      "missing_file",
      /"shared\/tiny-qwen2".*no tokenizer\.json/,
    );
  });
  await t.step("an index naming a file outside the snapshot is refused", async () => {
    s.hub.addRepo("org/evil", {
      "config.json": "{}",
      "tokenizer.json": "{}",
      "model.safetensors.index.json": JSON.stringify({ weight_map: { a: "../../../x.safetensors" } }),
    });
    await rejectsWith(
      resolveModel("org/evil", s.options()),
      "invalid",
      /"\.\.\/\.\.\/\.\.\/x\.safetensors".*not a plain relative path/,
    );
  });
});

/** A loopback URL nothing listens on. */
async function closedEndpoint(): Promise<string> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await Promise.resolve();
  return `http://127.0.0.1:${port}`;
}
