#!/usr/bin/env node
// Starts the environment (management API + embedded core). Runs the TypeScript sources via tsx.
import { register } from "tsx/esm/api";
register();
await import("../src/cli/environment.ts");
