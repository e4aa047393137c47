import { sql } from "slonik";
import type { Status } from "./states.js";

/** `'running'` as an SQL literal, type-checked against the status vocabulary. */
export const statusLiteral = (s: Status) => sql.literalValue(s);

/**
 * `('pending', 'running')` for `status IN …`. Literals rather than a bound array so the
 * planner can match the partial indexes whose predicates name the same statuses.
 */
export const statusList = (set: readonly Status[]) => sql.fragment`(${sql.join(set.map(statusLiteral), sql.fragment`, `)})`;

/** Bytes as a bytea parameter, without copying them. */
export const binary = (b: Uint8Array) => sql.binary(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
