#!/usr/bin/env node
// The runtara CLI. Runs the TypeScript sources via tsx.
import { register } from "tsx/esm/api";
register();
await import("../src/cli/runtara.ts");
