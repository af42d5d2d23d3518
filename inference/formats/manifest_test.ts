import assert from "node:assert/strict";
import { join } from "node:path";
import { MANIFEST_FILE, readManifest, sha256File, verifyManifest, writeManifest } from "./manifest.ts";

async function folder(): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "config.json"), '{"a": 1}\n');
  await Deno.writeFile(join(dir, "model.safetensors"), new Uint8Array([1, 2, 3, 4]));
  return dir;
}

Deno.test("writeManifest() records the sha256 of every file and verifyManifest() accepts the folder", async () => {
  const dir = await folder();
  try {
    const m = await writeManifest(dir, { name: "x", created_at: 5 });
    assert.deepEqual(Object.keys(m.files), ["config.json", "model.safetensors"]);
    // sha256 of bytes 01 02 03 04, as `sha256sum` prints it
    assert.equal(
      m.files["model.safetensors"],
      "9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a",
    );
    assert.equal(m.files["config.json"], await sha256File(join(dir, "config.json")));
    assert.equal((await verifyManifest(dir))?.name, "x");
    assert.equal((await readManifest(dir))?.created_at, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verifyManifest() refuses a changed, missing or added file, naming it", async () => {
  const dir = await folder();
  try {
    await writeManifest(dir, {});
    await Deno.writeFile(join(dir, "model.safetensors"), new Uint8Array([1, 2, 3, 5]));
    await assert.rejects(() => verifyManifest(dir), /"model.safetensors" does not match its checksum/);
    await Deno.remove(join(dir, "model.safetensors"));
    await assert.rejects(() => verifyManifest(dir), /"model.safetensors" is missing/);
    await writeManifest(dir, {});
    await Deno.writeTextFile(join(dir, "extra.json"), "{}");
    await assert.rejects(() => verifyManifest(dir), /"extra.json" is not listed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readManifest() is null without a manifest and refuses a foreign one", async () => {
  const dir = await folder();
  try {
    assert.equal(await readManifest(dir), null);
    assert.equal(await verifyManifest(dir), null);
    await Deno.writeTextFile(join(dir, MANIFEST_FILE), '{"format": "other"}');
    await assert.rejects(() => readManifest(dir), /not a leanserve-artifact v1 manifest/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
