export { createDatabase, type Database } from "./pool.js";
export { migrate } from "./migrate.js";
export { startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded.js";
export { sql } from "slonik";
export { Listener } from "./listener.js";
export { ChannelHub } from "./channel-hub.js";
export { isDatabaseUnavailable } from "./errors.js";
export { COUNT_CAP, cappedCount } from "./count.js";
