import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { environmentClient, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

describe("smoke", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  it("answers HealthCheck with the database reachable", async () => {
    const res = await environmentClient(t.baseUrl).healthCheck({});
    assert.equal(res.databaseReachable, true);
    assert.equal(res.version, "0.1.0");
  });
});
