export { Metrics, type PoolState } from "./metrics.js";
