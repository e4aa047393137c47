#!/usr/bin/env node
// Starts core alone on RUNTARA_CORE_ADDR against the shared database, from the build in dist/.
await import("../dist/src/cli/core.js");
