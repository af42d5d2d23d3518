import assert from "node:assert/strict";
import { join } from "node:path";
import { JobInputError, resolveTextSource } from "./sources.ts";

async function refused(p: Promise<unknown>, field: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof JobInputError, String(err));
    assert.equal(err.field, field);
    assert.equal(err.status, 400);
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("resolveTextSource() confines files and datasets to the calibration directories", async () => {
  const tmp = await Deno.realPath(await Deno.makeTempDir());
  try {
    const dir = join(tmp, "calib");
    await Deno.mkdir(dir);
    await Deno.mkdir(join(tmp, "private"));
    await Deno.writeTextFile(join(dir, "stories.txt"), "Once upon a time");
    await Deno.writeTextFile(join(tmp, "private", "secret.txt"), "secret");
    await Deno.symlink(join(tmp, "private", "secret.txt"), join(dir, "link.txt"));
    await Deno.symlink(join(tmp, "private"), join(dir, "sub"));
    const rules = { calibDirs: [dir], confine: true };
    const file = (path: string) => resolveTextSource({ kind: "file", path }, "calibration", rules);

    assert.deepEqual(await file("stories.txt"), {
      kind: "file",
      path: join(dir, "stories.txt"),
      label: join(dir, "stories.txt"),
    });
    assert.equal((await file(join(dir, "stories.txt"))).kind, "file"); // absolute, inside
    const ds = await resolveTextSource({ kind: "dataset", name: "stories" }, "eval", rules);
    assert.deepEqual(ds, { kind: "file", path: join(dir, "stories.txt"), label: join(dir, "stories.txt") });
    assert.equal(
      (await resolveTextSource({ kind: "dataset", name: "builtin" }, "calibration", rules)).kind,
      "builtin",
    );

    await refused(
      file("../private/secret.txt"),
      "calibration.file",
      /resolves outside the calibration directories/,
    );
    await refused(file(join(tmp, "private", "secret.txt")), "calibration.file", /resolves outside/);
    await refused(file("link.txt"), "calibration.file", /resolves outside/); // symlink out
    await refused(file("sub/secret.txt"), "calibration.file", /resolves outside/); // symlinked folder out
    await refused(
      file("missing.txt"),
      "calibration.file",
      /Cannot find calibration.file "missing.txt".*stories/,
    );
    await refused(
      resolveTextSource({ kind: "dataset", name: "builtin" }, "eval", rules),
      "eval.dataset",
      /perplexity needs real text/,
    );
    await refused(
      resolveTextSource({ kind: "file", path: "stories.txt" }, "eval", { calibDirs: [], confine: true }),
      "eval.file",
      /no --calib-dir/,
    );
    // The operator's own command line is not confined.
    const own = await resolveTextSource(
      { kind: "file", path: join(tmp, "private", "secret.txt") },
      "calibration",
      {
        calibDirs: [],
        confine: false,
      },
    );
    assert.equal(own.kind, "file");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
