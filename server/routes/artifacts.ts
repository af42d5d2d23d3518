/**
 * GET /v1/artifacts lists the published quantized models (inference/jobs/artifacts.ts);
 * POST /v1/artifacts/{name}/activate starts a job that swaps the served model for one of them (202).
 */
import type { Handler } from "hono";
import type { JobManager } from "../../inference/jobs/mod.ts";
import { accepted, jobError } from "./quantize.ts";

/** Handlers of /v1/artifacts*, bound to one job manager. */
export function artifactHandlers(jobs: JobManager): Record<"list" | "activate", Handler> {
  return {
    list: async (c) => c.json({ object: "list", data: await jobs.artifacts() }),
    activate: async (c) => {
      try {
        return accepted(c, await jobs.activate(c.req.param("name") ?? ""));
      } catch (err) {
        throw jobError(err);
      }
    },
  };
}
