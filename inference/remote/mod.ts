/**
 * The engine in a Worker: the HTTP thread holds a client (an Engine and a JobManager whose calls and streams
 * cross to the Worker), the Worker a host that runs them on the real engine and job manager. server/ sees
 * only the Engine and JobManager interfaces, so it cannot tell the two apart.
 */
export { connectEngine, type Remote, type RemoteEngine } from "./client.ts";
export { type Host, type HostOptions, serveEngine } from "./host.ts";
export { Inbox } from "./inbox.ts";
export { fromWire, type Port, toWire, type WireError } from "./protocol.ts";
