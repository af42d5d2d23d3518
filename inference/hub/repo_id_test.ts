import assert from "node:assert/strict";
import { isSafeRelativePath, parseRepoSpec, repoFolderName } from "./repo_id.ts";

Deno.test("parseRepoSpec() reads org/name with an optional @revision", () => {
  assert.deepEqual(parseRepoSpec("HuggingFaceTB/SmolLM2-360M-Instruct"), {
    repoId: "HuggingFaceTB/SmolLM2-360M-Instruct",
    revision: "main",
  });
  assert.deepEqual(parseRepoSpec("org/name@v1.0"), { repoId: "org/name", revision: "v1.0" });
  assert.deepEqual(parseRepoSpec("org/name@refs/pr/1"), { repoId: "org/name", revision: "refs/pr/1" });
  const sha = "0123456789abcdef0123456789abcdef01234567";
  assert.deepEqual(parseRepoSpec(`org/name@${sha}`), { repoId: "org/name", revision: sha });
});

Deno.test("parseRepoSpec() rejects what is not a repo id", () => {
  for (
    const spec of [
      "gpt2",
      "a/b/c",
      "org/name@",
      "org/name@../x",
      "-org/name",
      "org/name.",
      "o--x/name",
      "or..g/n",
      "",
    ]
  ) {
    assert.equal(parseRepoSpec(spec), null, spec);
  }
});

Deno.test("repoFolderName() is huggingface_hub's models--org--name", () => {
  assert.equal(
    repoFolderName("HuggingFaceTB/SmolLM2-360M-Instruct"),
    "models--HuggingFaceTB--SmolLM2-360M-Instruct",
  );
});

Deno.test("isSafeRelativePath() keeps hub file names inside the snapshot", () => {
  assert.equal(isSafeRelativePath("model-00001-of-00002.safetensors"), true);
  assert.equal(isSafeRelativePath("sub/dir/file.json"), true);
  for (const bad of ["/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "./a", ""]) {
    assert.equal(isSafeRelativePath(bad), false, bad);
  }
});
