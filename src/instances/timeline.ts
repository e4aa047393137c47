import type { DatabasePool } from "slonik";
import { NotFound } from "../errors.js";
import * as repo from "./repository.js";
import type { Transition } from "./repository.js";

/** Transitions one timeline answer holds at most: an instance paused and resumed all day has many. */
export const TIMELINE_LIMIT = 1000;

/**
 * An instance's timeline: every status it took, when and why, as the database recorded it
 * with each change (instance_transitions). WatchInstance follows it from now on; this reads
 * what came before.
 */
export class InstanceTimeline {
  constructor(private readonly db: DatabasePool) {}

  /** The last TIMELINE_LIMIT transitions, oldest first; NotFound for an instance the tenant does not have. */
  async read(tenantId: string, instanceId: string): Promise<{ transitions: readonly Transition[]; truncated: boolean }> {
    const history = await repo.transitionHistory(this.db, tenantId, instanceId, TIMELINE_LIMIT);
    if (history === null) throw new NotFound(`instance ${instanceId} not found`);
    return history;
  }
}
