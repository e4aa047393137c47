/**
 * Where the SDK reports what it does in the background (heartbeat failures, reconnects,
 * acknowledgements). The default writes one line per message to stderr, which the runner
 * captures into the instance's stderr tail; debug lines are dropped.
 */
export interface SdkLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export function stderrLogger(): SdkLogger {
  const write = (level: string, message: string, fields?: Record<string, unknown>) => {
    const extra = fields && Object.keys(fields).length > 0 ? ` ${render(fields)}` : "";
    process.stderr.write(`runtara-sdk ${level}: ${message}${extra}\n`);
  };
  return {
    debug: () => {},
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
  };
}

function render(fields: Record<string, unknown>): string {
  try {
    return JSON.stringify(fields, (_k, v: unknown) =>
      v instanceof Error ? { name: v.name, message: v.message } : typeof v === "bigint" ? v.toString() : v,
    );
  } catch {
    return String(fields);
  }
}
