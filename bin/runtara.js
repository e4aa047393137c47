#!/usr/bin/env node
// The runtara CLI, from the build in dist/ (`npm run build`; npm ci in a checkout runs it).
await import("../dist/src/cli/runtara.js");
