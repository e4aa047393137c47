import { Environment } from "../environment.js";
import { runCommand } from "./command.js";

await runCommand("runtara-environment", (options) => new Environment(options));
