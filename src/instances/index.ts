/**
 * The environment's side of instances: launching (Launcher), watching (Supervisor), the
 * lifecycle RPCs (InstanceManager), signals and read views forwarded to core (SignalService),
 * run logs (RunLogReader).
 */
export { CoreGateway, networkCoreChannel, type CoreChannel, type CheckpointQuery, type EventQuery } from "./core-gateway.js";
export { Launcher, type LauncherOptions } from "./launcher.js";
export { InstanceManager, type ListRequest, type StartRequest } from "./manager.js";
export type { InstanceOrder, Transition } from "./repository.js";
export { RunLogReader, type LogChunk, type LogRequest } from "./run-logs.js";
export { SignalService } from "./signals.js";
export { InstanceTimeline } from "./timeline.js";
export { Supervisor } from "./supervisor.js";
export { TransitionFeeds } from "./transition-feed.js";
export type { Instance } from "./types.js";
