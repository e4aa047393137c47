import {
  createPool,
  SchemaValidationError,
  type DatabasePool,
  type Interceptor,
  type QueryResultRow,
} from "slonik";
import type { Logger } from "pino";

export type Database = DatabasePool;

/**
 * slonik only attaches `sql.type(schema)` to the query context; this interceptor is what
 * actually validates (and transforms) each row with the zod schema.
 */
const resultParser: Interceptor = {
  name: "runtara-result-parser",
  transformRow(ctx, query, row) {
    if (!ctx.resultParser) return row;
    const parsed = ctx.resultParser.safeParse(row);
    if (!parsed.success) throw new SchemaValidationError(query, row, parsed.error.issues);
    return parsed.data as QueryResultRow;
  },
};

function queryLogger(logger: Logger): Interceptor {
  return {
    name: "runtara-query-logger",
    afterQueryExecution(ctx, query, result) {
      if (logger.isLevelEnabled("trace")) {
        const ms = Number(process.hrtime.bigint() - BigInt(ctx.queryInputTime)) / 1e6;
        logger.trace({ queryId: ctx.queryId, sql: query.sql, rows: result.rowCount, ms }, "query");
      }
      return null;
    },
    queryExecutionError(ctx, query, error) {
      logger.debug({ queryId: ctx.queryId, sql: query.sql, err: error.message }, "query failed");
      return null;
    },
  };
}

export interface DatabaseOptions {
  url: string;
  poolSize: number;
  logger: Logger;
}

/**
 * `url` with READ COMMITTED as its connections' default isolation, whatever the database's own
 * default: the quota and cap functions (migrations 10-12) count after taking a lock, in a
 * snapshot taken then, which only READ COMMITTED gives (on a database defaulting to REPEATABLE
 * READ, starts racing at a quota of 3 started up to 5). Options already in the URL are kept.
 */
export function readCommittedUrl(url: string): string {
  const u = new URL(url);
  const options = u.searchParams.get("options");
  u.searchParams.set("options", `${options === null ? "" : `${options} `}-c default_transaction_isolation=read\\ committed`);
  return u.toString();
}

export async function createDatabase({ url, poolSize, logger }: DatabaseOptions): Promise<Database> {
  return createPool(readCommittedUrl(url), {
    maximumPoolSize: poolSize,
    connectionTimeout: 5_000,
    idleTimeout: 10_000,
    // A dead database must surface as UNAVAILABLE quickly, not hang an RPC.
    statementTimeout: 60_000,
    captureStackTrace: false,
    // slonik runs DISCARD ALL after every pooled query by default: a second round trip on
    // every call and half of all idle queries. Nothing here sets session state (no SET, no
    // named prepared statements; LISTEN has its own client), so there is nothing to reset.
    resetConnection: async () => {},
    interceptors: [resultParser, queryLogger(logger.child({ component: "db" }))],
  });
}
