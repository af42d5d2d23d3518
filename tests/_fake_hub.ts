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
 * @param options sharedModels: the folder behind `shared/<name>` repos (default ../shared/models); token:
 *   the one that opens gated repos
 */
export function startFakeHub(
  { sharedModels = new URL("../../shared/models", import.meta.url).pathname, token = "hf_fake_token" }: {
    sharedModels?: string;
    token?: string;
  } = {},
): FakeHub {
  return new FakeHubServer(sharedModels, token);
}

class FakeHubServer implements FakeHub {
  readonly requests: FakeRequest[] = [];
  readonly endpoint: string;
  readonly token: string;
  #repos = new Map<string, FakeRepo>();
  #corrupted = new Set<string>();
  #cuts = new Map<string, number>();
  #sharedModels: string;
  #hub: Deno.HttpServer<Deno.NetAddr>;
  #cdn: Deno.HttpServer<Deno.NetAddr>;

  constructor(sharedModels: string, token: string) {
    this.#sharedModels = sharedModels;
    this.token = token;
    const quiet = { hostname: "127.0.0.1", port: 0, onListen() {} };
    this.#hub = Deno.serve(quiet, (req) => this.#handle(req, "hub"));
    this.#cdn = Deno.serve(quiet, (req) => this.#handle(req, "cdn"));
    this.endpoint = `http://127.0.0.1:${this.#hub.addr.port}`;
  }

  addRepo(repoId: string, files: Record<string, Uint8Array | string>, { gated = false } = {}): FakeRepo {
    const map = new Map<string, Uint8Array>();
    for (const [name, data] of Object.entries(files)) {
      map.set(name, typeof data === "string" ? new TextEncoder().encode(data) : data);
    }
    const listing = [...map].map(([name, data]) => `${name}:${sha256Hex(data)}`).sort().join("\n");
    const commit = createHash("sha1").update(`${repoId}\n${listing}`).digest("hex");
    const repo = { files: map, commit, gated };
    this.#repos.set(repoId, repo);
    return repo;
  }

  repo(repoId: string): FakeRepo | null {
    const known = this.#repos.get(repoId);
    if (known) return known;
    const m = /^shared\/([\w.-]+)$/.exec(repoId);
    if (!m) return null;
    const dir = join(this.#sharedModels, m[1]);
    const files: Record<string, Uint8Array> = {};
    try {
      for (const entry of Deno.readDirSync(dir)) {
        if (entry.isFile) files[entry.name] = Deno.readFileSync(join(dir, entry.name));
      }
    } catch {
      return null;
    }
    return this.addRepo(repoId, files);
  }

  corrupt(repoId: string, file: string): void {
    this.#corrupted.add(`${repoId}/${file}`);
  }

  cutNextDownload(repoId: string, file: string, bytes: number): void {
    this.#cuts.set(`${repoId}/${file}`, bytes);
  }

  async close(): Promise<void> {
    await Promise.all([this.#hub.shutdown(), this.#cdn.shutdown()]);
  }

  #handle(req: Request, origin: "hub" | "cdn"): Response {
    const path = decodeURIComponent(new URL(req.url).pathname);
    const authorization = req.headers.get("authorization");
    this.requests.push({ origin, method: req.method, path, range: req.headers.get("range"), authorization });
    if (origin === "cdn") return this.#serveCdn(req, path);
    const m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path) ??
      /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (!m) return new Response("not found", { status: 404 });
    const repo = this.repo(m[1]);
    // As the hub: without a token a missing repo and a private one look the same (401).
    if (!repo) return errorResponse(authorization ? 404 : 401, "RepoNotFound", "Repository not found");
    if (m[2] !== "main" && m[2] !== repo.commit) {
      return errorResponse(404, "RevisionNotFound", "Invalid rev id");
    }
    if (m[3] === undefined) {
      const siblings = [...repo.files.keys()].map((f) => ({ rfilename: f }));
      return Response.json({ id: m[1], sha: repo.commit, siblings });
    }
    if (repo.gated && authorization !== `Bearer ${this.token}`) {
      return errorResponse(authorization ? 403 : 401, "GatedRepo", `Access to model ${m[1]} is restricted.`);
    }
    return this.#serveResolve(req, m[1], repo, m[3]);
  }

  /** A small file answers itself; an LFS file redirects to the CDN with the linked etag and size. */
  #serveResolve(req: Request, repoId: string, repo: FakeRepo, file: string): Response {
    const data = repo.files.get(file);
    if (!data) return errorResponse(404, "EntryNotFound", `${file} does not exist`);
    const headers = new Headers({ "x-repo-commit": repo.commit });
    if (data.length < LFS_MIN_BYTES) {
      headers.set("etag", `"${gitBlobSha1(data)}"`);
      return this.#serveBytes(req, `${repoId}/${file}`, data, headers);
    }
    const sha = sha256Hex(data);
    const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${data.length}\n`;
    headers.set("etag", `"${gitBlobSha1(new TextEncoder().encode(pointer))}"`);
    headers.set("x-linked-etag", `"${sha}"`);
    headers.set("x-linked-size", String(data.length));
    headers.set("location", `http://127.0.0.1:${this.#cdn.addr.port}/cdn/${repoId}/${sha}`);
    return new Response(null, { status: 302, headers });
  }

  #serveCdn(req: Request, path: string): Response {
    const m = /^\/cdn\/(.+)\/([0-9a-f]{64})$/.exec(path);
    const repo = m && this.repo(m[1]);
    const file = repo && [...repo.files.keys()].find((f) => sha256Hex(repo.files.get(f)!) === m![2]);
    if (!repo || !file) return new Response("no such object", { status: 404 });
    return this.#serveBytes(req, `${m![1]}/${file}`, repo.files.get(file)!, new Headers());
  }

  /** 200, or 206 for `Range: bytes=N-`; corrupted files get a flipped first byte; a pending cut breaks off. */
  #serveBytes(req: Request, key: string, data: Uint8Array, headers: Headers): Response {
    if (this.#corrupted.has(key)) {
      data = data.slice();
      data[0] ^= 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
    const start = range ? Number(range[1]) : 0;
    if (start >= data.length && range) return new Response(null, { status: 416, headers });
    const body = data.subarray(start) as Uint8Array<ArrayBuffer>;
    if (range) headers.set("content-range", `bytes ${start}-${data.length - 1}/${data.length}`);
    headers.set("content-length", String(body.length));
    headers.set("accept-ranges", "bytes");
    const status = range ? 206 : 200;
    const cut = req.method === "GET" ? this.#cuts.get(key) : undefined;
    // Deno.serve drops the body of a HEAD answer and keeps its Content-Length.
    if (cut === undefined) return new Response(body, { status, headers });
    this.#cuts.delete(key);
    return new Response(cutStream(body, cut), { status, headers });
  }
}

/** Sends `cut` bytes, then breaks the connection a moment later, as a real network failure would. */
function cutStream(body: Uint8Array, cut: number): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!sent) {
        sent = true;
        return controller.enqueue(body.slice(0, cut));
      }
      await new Promise((r) => setTimeout(r, 50));
      controller.error(new Error("fake hub: connection cut"));
    },
  });
}

function errorResponse(status: number, code: string, message: string): Response {
  return Response.json({ error: message }, {
    status,
    headers: { "x-error-code": code, "x-error-message": message },
  });
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
