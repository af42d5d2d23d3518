/**
 * A loopback imitation of the Hugging Face hub for tests that must never reach the internet. It answers as
 * huggingface.co does (as huggingface_hub expects it):
 * - `GET /api/models/{org}/{name}/revision/{rev}` → `{ id, sha, siblings: [{ rfilename }] }`;
 * - `HEAD|GET /{org}/{name}/resolve/{rev}/{file}` with `X-Repo-Commit` and `ETag` (the git blob sha1); large
 *   (LFS) files get a 302 to a second listener (the "CDN", another origin) with `X-Linked-Etag` (sha256)
 *   and `X-Linked-Size`; `Range:` gets a 206;
 * - unknown repos: 401 without a token, 404 with one (`X-Error-Code: RepoNotFound`); gated repos: 401
 *   without a token, 403 with a wrong one (`X-Error-Code: GatedRepo`); model info stays public.
 * Repos `shared/<name>` serve the files of `../shared/models/<name>` under a fake commit sha.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";

/** One request the fake saw. */
export interface FakeRequest {
  /** "hub" (the endpoint) or "cdn" (where LFS downloads are redirected). */
  origin: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

/** A repo held by the fake. */
export interface FakeRepo {
  files: Map<string, Uint8Array>;
  commit: string;
  gated: boolean;
}

/** A running fake hub. */
export interface FakeHub {
  /** The HF_ENDPOINT to use, e.g. "http://127.0.0.1:43210". */
  endpoint: string;
  /** Every request, in order. */
  requests: FakeRequest[];
  /** The token that opens gated repos. */
  token: string;
  /** Adds a repo (or replaces one). */
  addRepo(
    repoId: string,
    files: Record<string, Uint8Array | string>,
    options?: { gated?: boolean },
  ): FakeRepo;
  /** The repo, loading `shared/<name>` from ../shared/models on first use. */
  repo(repoId: string): FakeRepo | null;
  /** Serves `file` with its first byte flipped (same size, wrong checksum). */
  corrupt(repoId: string, file: string): void;
  /** The next GET of `file` sends `bytes` bytes, then breaks the connection. */
  cutNextDownload(repoId: string, file: string, bytes: number): void;
  close(): Promise<void>;
}

/** Files at least this large are served as LFS files (hub redirect to the CDN, sha256 etag). */
export const LFS_MIN_BYTES = 64 * 1024;

/** The git blob id of `content`: sha1("blob <size>\0" + content), the hub's ETag of a non-LFS file. */
export function gitBlobSha1(content: Uint8Array): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

/** sha256 hex of `content`: the hub's X-Linked-Etag of an LFS file. */
export function sha256Hex(content: Uint8Array): string {
  return createHash("sha256").update(content).digest("hex");
}

/** The blob name the hub gives `content` (what huggingface_hub names it in `blobs/`). */
export function hubEtag(content: Uint8Array): string {
  return content.length >= LFS_MIN_BYTES ? sha256Hex(content) : gitBlobSha1(content);
}

/**
 * Starts the fake on two loopback ports (hub and CDN).
 * @param options sharedModels: the folder behind `shared/<name>` repos (default ../shared/models)
 */
export function startFakeHub(
  { sharedModels = new URL("../../shared/models", import.meta.url).pathname, token = "hf_fake_token" }: {
    sharedModels?: string;
    token?: string;
  } = {},
): FakeHub {
  const repos = new Map<string, FakeRepo>();
  const corrupted = new Set<string>();
  const cuts = new Map<string, number>();
  const requests: FakeRequest[] = [];
  const quiet = { hostname: "127.0.0.1", port: 0, onListen() {} };
  let cdnOrigin = "";

  function repo(repoId: string): FakeRepo | null {
    const known = repos.get(repoId);
    if (known) return known;
    const m = /^shared\/([\w.-]+)$/.exec(repoId);
    if (!m) return null;
    const dir = join(sharedModels, m[1]);
    const files: Record<string, Uint8Array> = {};
    try {
      for (const entry of Deno.readDirSync(dir)) {
        if (entry.isFile) files[entry.name] = Deno.readFileSync(join(dir, entry.name));
      }
    } catch {
      return null;
    }
    return hub.addRepo(repoId, files);
  }

  function content(repoId: string, file: string, data: Uint8Array): Uint8Array {
    if (!corrupted.has(`${repoId}/${file}`)) return data;
    const bad = data.slice();
    bad[0] ^= 0xff;
    return bad;
  }

  /** 200 or 206 with the bytes asked for; a pending cut truncates the stream. */
  function serveBytes(req: Request, key: string, data: Uint8Array, headers: Headers): Response {
    const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
    let body = data;
    let status = 200;
    if (range) {
      const start = Number(range[1]);
      if (start >= data.length) return new Response(null, { status: 416, headers });
      body = data.subarray(start);
      status = 206;
      headers.set("content-range", `bytes ${start}-${data.length - 1}/${data.length}`);
    }
    headers.set("content-length", String(body.length));
    headers.set("accept-ranges", "bytes");
    const cut = req.method === "GET" ? cuts.get(key) : undefined;
    // Deno.serve drops the body of a HEAD answer and keeps its Content-Length.
    if (cut === undefined) return new Response(body as Uint8Array<ArrayBuffer>, { status, headers });
    cuts.delete(key);
    // The bytes before the cut go out first; the connection breaks a moment later, as a real one would.
    let sent = false;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (!sent) {
          sent = true;
          return controller.enqueue(body.slice(0, cut));
        }
        await new Promise((r) => setTimeout(r, 50));
        controller.error(new Error("fake hub: connection cut"));
      },
    });
    return new Response(stream, { status, headers });
  }

  function errorResponse(status: number, code: string, message: string): Response {
    return Response.json({ error: message }, {
      status,
      headers: { "x-error-code": code, "x-error-message": message },
    });
  }

  function handle(req: Request, origin: "hub" | "cdn"): Response {
    const url = new URL(req.url);
    const path = decodeURIComponent(url.pathname);
    const auth = req.headers.get("authorization");
    requests.push({ origin, method: req.method, path, range: req.headers.get("range"), authorization: auth });
    if (origin === "cdn") {
      const m = /^\/cdn\/(.+)\/([0-9a-f]{64})$/.exec(path);
      const r = m && repo(m[1]);
      const file = r && [...r.files.keys()].find((f) => sha256Hex(r.files.get(f)!) === m![2]);
      if (!r || !file) return new Response("no such object", { status: 404 });
      return serveBytes(req, `${m![1]}/${file}`, content(m![1], file, r.files.get(file)!), new Headers());
    }
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const repoId = api?.[1] ?? resolve?.[1];
    const r = repoId ? repo(repoId) : null;
    if (!repoId) return new Response("not found", { status: 404 });
    if (!r) {
      // As the hub: without a token a missing repo and a private one look the same (401).
      return errorResponse(auth ? 404 : 401, "RepoNotFound", "Repository not found");
    }
    const rev = (api ?? resolve)![2];
    if (rev !== "main" && rev !== r.commit) return errorResponse(404, "RevisionNotFound", "Invalid rev id");
    if (api) {
      return Response.json({
        id: repoId,
        sha: r.commit,
        siblings: [...r.files.keys()].map((f) => ({ rfilename: f })),
      });
    }
    if (r.gated && auth !== `Bearer ${token}`) {
      const msg = `Access to model ${repoId} is restricted.`;
      return errorResponse(auth ? 403 : 401, "GatedRepo", msg);
    }
    const file = resolve![3];
    const data = r.files.get(file);
    if (!data) return errorResponse(404, "EntryNotFound", `${file} does not exist`);
    const headers = new Headers({ "x-repo-commit": r.commit });
    if (data.length < LFS_MIN_BYTES) {
      headers.set("etag", `"${gitBlobSha1(data)}"`);
      return serveBytes(req, `${repoId}/${file}`, content(repoId, file, data), headers);
    }
    // An LFS file: the hub answers with its pointer's etag and a redirect carrying the real one.
    const sha = sha256Hex(data);
    const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${data.length}\n`;
    headers.set("etag", `"${gitBlobSha1(new TextEncoder().encode(pointer))}"`);
    headers.set("x-linked-etag", `"${sha}"`);
    headers.set("x-linked-size", String(data.length));
    headers.set("location", `${cdnOrigin}/cdn/${repoId}/${sha}`);
    return new Response(null, { status: 302, headers });
  }

  const hubServer = Deno.serve(quiet, (req) => handle(req, "hub"));
  const cdnServer = Deno.serve(quiet, (req) => handle(req, "cdn"));
  cdnOrigin = `http://127.0.0.1:${cdnServer.addr.port}`;
  const hub: FakeHub = {
    endpoint: `http://127.0.0.1:${hubServer.addr.port}`,
    requests,
    token,
    addRepo(repoId, files, { gated = false } = {}) {
      const map = new Map<string, Uint8Array>();
      for (const [name, data] of Object.entries(files)) {
        map.set(name, typeof data === "string" ? new TextEncoder().encode(data) : data);
      }
      const listing = [...map].map(([name, data]) => `${name}:${sha256Hex(data)}`).sort().join("\n");
      const commit = createHash("sha1").update(`${repoId}\n${listing}`).digest("hex");
      const r = { files: map, commit, gated };
      repos.set(repoId, r);
      return r;
    },
    repo,
    corrupt: (repoId, file) => void corrupted.add(`${repoId}/${file}`),
    cutNextDownload: (repoId, file, bytes) => void cuts.set(`${repoId}/${file}`, bytes),
    async close() {
      await Promise.all([hubServer.shutdown(), cdnServer.shutdown()]);
    },
  };
  return hub;
}

/**
 * Writes a repo into `cacheDir` the way huggingface_hub's `snapshot_download` lays it out, independently of
 * inference/hub: blobs named by the hub's etag, relative symlinks from the snapshot, `refs/main`.
 * @returns the snapshot folder
 */
export async function writePythonStyleCache(
  cacheDir: string,
  repoId: string,
  commit: string,
  files: Record<string, Uint8Array>,
): Promise<string> {
  const root = join(cacheDir, `models--${repoId.replace("/", "--")}`);
  const snapshot = join(root, "snapshots", commit);
  await Deno.mkdir(join(root, "blobs"), { recursive: true });
  await Deno.mkdir(join(root, "refs"), { recursive: true });
  await Deno.mkdir(snapshot, { recursive: true });
  for (const [name, data] of Object.entries(files)) {
    const etag = hubEtag(data);
    await Deno.writeFile(join(root, "blobs", etag), data);
    await Deno.symlink(`../../blobs/${etag}`, join(snapshot, name));
  }
  await Deno.writeTextFile(join(root, "refs", "main"), commit);
  return snapshot;
}
