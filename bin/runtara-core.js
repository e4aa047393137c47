#!/usr/bin/env node
// Starts core alone on RUNTARA_CORE_ADDR against the shared database.
import { register } from "tsx/esm/api";
register();
await import("../src/cli/core.ts");
