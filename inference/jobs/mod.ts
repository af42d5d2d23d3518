/**
 * Quantization jobs: the one implementation behind `deno task quantize`, the server's `--quantize` and the
 * `/v1/quantize` API (runQuantization), the one-at-a-time job manager with hot swap, and the artifact
 * directory. server/ imports only this face (and re-reads the request validator through it).
 */
export {
  type ArtifactJson,
  artifactName,
  listArtifacts,
  modelRevision,
  modelShortName,
  sourceOfModel,
} from "./artifacts.ts";
export { type JobJson, type JobStatus } from "./job.ts";
export { createJobManager, type JobManager, type JobManagerOptions, type SubmitOptions } from "./manager.ts";
export {
  type QuantizeRunInput,
  type QuantizeRunResult,
  type RunControl,
  type RunEvents,
  runQuantization,
} from "./pipeline.ts";
export { JobInputError, listDatasets, type ResolvedText, resolveTextSource } from "./sources.ts";
export { parseQuantizeRequest, QuantizeOptionsError, type QuantizeRequest } from "../quantize/mod.ts";
