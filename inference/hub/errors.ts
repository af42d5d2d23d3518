/**
 * The one error type of the hub client: a one-line message for the operator plus a `kind` for code and tests.
 */

/** What went wrong while resolving a model from the hub or its cache. */
export type HubErrorKind =
  /** The spec is neither an existing folder nor a repo id, or a file name in the repo is unsafe. */
  | "invalid"
  /** The repo or revision does not exist, or is private and no token was given. */
  | "not_found"
  /** The repo is gated and the request had no token, or a token without access. */
  | "gated"
  /** The repo lacks a file the server needs (config.json, tokenizer.json, safetensors weights). */
  | "missing_file"
  /** Offline mode (or an unreachable hub) and the cache has no complete snapshot. */
  | "not_cached"
  /** The endpoint could not be reached. */
  | "network"
  /** A downloaded file does not match the hub's size or checksum. */
  | "checksum"
  /** Any other HTTP answer the client does not expect. */
  | "http";

/** A failure to resolve a model; `message` is one line naming the repo, the file or the endpoint. */
export class HubError extends Error {
  /** What went wrong, for callers that react differently per case. */
  readonly kind: HubErrorKind;

  /**
   * @param kind what went wrong
   * @param message one line, action first ("Cannot download ...: reason")
   */
  constructor(kind: HubErrorKind, message: string) {
    super(message);
    this.name = "HubError";
    this.kind = kind;
  }
}
