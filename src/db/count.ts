import { sql, type FragmentSqlToken } from "slonik";

/**
 * Counts stop here: a list's total_count over a million rows would hold a connection for a
 * long scan on every first page (100,000 index entries took 35-50 ms on two busy cores; 10,000
 * take a few). Up to the cap the count is exact; a larger set reports the cap.
 */
export const COUNT_CAP = 10_000;

/** `SELECT count(*) AS count` of the rows `from` selects, at most COUNT_CAP. */
export const cappedCount = (from: FragmentSqlToken) =>
  sql.fragment`SELECT count(*) AS count FROM (SELECT 1 FROM ${from} LIMIT ${COUNT_CAP}) AS counted`;
