/** Embedding API: run the environment (and embedded core) inside another Node program. */
export { Environment, type EnvironmentRuntimeOptions } from "./environment.js";
export { StandaloneCore } from "./core/standalone.js";
export { compileOptions, readEnvironmentOptions, ConfigError, type EnvironmentOptions, type CompiledOptions } from "./config.js";
