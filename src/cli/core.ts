import { StandaloneCore } from "../core/standalone.js";
import { runCommand } from "./command.js";

await runCommand("runtara-core", (options) => new StandaloneCore(options));
