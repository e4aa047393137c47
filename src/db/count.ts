import { sql, type FragmentSqlToken } from "slonik";

/**
 * Counts stop here: a list's total_count over a million rows would hold a connection for a
 * full scan on every page. Up to the cap the count is exact; a larger set reports the cap.
 */
export const COUNT_CAP = 100_000;

/** `SELECT count(*) AS count` of the rows `from` selects, at most COUNT_CAP. */
export const cappedCount = (from: FragmentSqlToken) =>
  sql.fragment`SELECT count(*) AS count FROM (SELECT 1 FROM ${from} LIMIT ${COUNT_CAP}) AS counted`;
