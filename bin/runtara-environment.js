#!/usr/bin/env node
// Starts the environment (management API + embedded core), from the build in dist/.
await import("../dist/src/cli/environment.js");
