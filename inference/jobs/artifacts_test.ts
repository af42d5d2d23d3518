import assert from "node:assert/strict";
import { join } from "node:path";
import { writeManifest } from "../formats/mod.ts";
import { artifactName, listArtifacts, modelRevision, modelShortName } from "./artifacts.ts";

Deno.test("artifactName() is deterministic in the options, whatever their order", () => {
  const a = {
    method: "leanquant-aff",
    bits: 4,
    group_size: 128,
    calibration: { seed: 0, source: "builtin:v1" },
  };
  const b = {
    calibration: { source: "builtin:v1", seed: 0 },
    group_size: 128,
    bits: 4,
    method: "leanquant-aff",
  };
  const name = artifactName("SmolLM2-360M-Instruct", "0123456789abcdef0123", a);
  assert.match(name, /^SmolLM2-360M-Instruct-0123456789ab-leanquant-aff-4b-g128-[0-9a-f]{8}$/);
  assert.equal(artifactName("SmolLM2-360M-Instruct", "0123456789abcdef0123", b), name);
  const c = { ...a, calibration: { seed: 1, source: "builtin:v1" } };
  assert.notEqual(artifactName("SmolLM2-360M-Instruct", "0123456789abcdef0123", c), name);
});

Deno.test("modelShortName() and modelRevision() read a hub snapshot's repo and commit", async () => {
  const tmp = await Deno.realPath(await Deno.makeTempDir());
  try {
    const sha = "a".repeat(40);
    const snap = join(tmp, "models--HuggingFaceTB--SmolLM2-360M-Instruct", "snapshots", sha);
    await Deno.mkdir(snap, { recursive: true });
    await Deno.writeTextFile(join(snap, "config.json"), "{}");
    assert.equal(modelShortName(snap + "/"), "SmolLM2-360M-Instruct");
    assert.equal(await modelRevision(snap), sha);
    const plain = join(tmp, "plain");
    await Deno.mkdir(plain);
    await Deno.writeTextFile(join(plain, "config.json"), "{}");
    const rev = await modelRevision(plain);
    assert.match(rev, /^[0-9a-f]{64}$/);
    assert.equal(await modelRevision(plain), rev);
    await Deno.writeTextFile(join(plain, "config.json"), '{"changed": true}');
    assert.notEqual(await modelRevision(plain), rev);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("listArtifacts() lists published folders only: no hidden temp folder, none without a manifest", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir());
  try {
    const make = async (name: string, manifest: boolean) => {
      await Deno.mkdir(join(dir, name));
      await Deno.writeTextFile(join(dir, name, "config.json"), "{}");
      if (manifest) {
        await writeManifest(join(dir, name), {
          created_at: name === "new" ? 20 : 10,
          quantization: { method: "gptq", bits: 3, group_size: 64 },
          eval: { ppl_after: 7.5 },
        });
      }
    };
    await make("old", true);
    await make("new", true);
    await make("no-manifest", false);
    await make(".half.partial-abc", true);
    const list = await listArtifacts(dir, join(dir, "old"));
    assert.deepEqual(list.map((a) => [a.name, a.active]), [["new", false], ["old", true]]);
    assert.deepEqual(list[0], {
      name: "new",
      path: join(dir, "new"),
      method: "gptq",
      bits: 3,
      group_size: 64,
      created_at: 20,
      ppl: 7.5,
      active: false,
    });
    assert.deepEqual(await listArtifacts(join(dir, "absent"), null), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
