/**
 * GET /metrics: the Prometheus text exposition (format 0.0.4) of server/metrics.ts. Public unless the
 * server runs with --metrics-require-key (server/middleware/auth.ts).
 */
import type { Handler } from "hono";
import type { ServerMetrics } from "../metrics.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../prometheus.ts";

/**
 * Builds the GET /metrics handler.
 * @param metrics The server's metrics.
 * @returns A handler answering `text/plain; version=0.0.4`.
 */
export function metricsHandler(metrics: ServerMetrics): Handler {
  return (c) => c.body(metrics.render(), 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
}
