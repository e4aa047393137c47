/**
 * Who the console calls the API as: a tenant and, when the server has API keys, a key. Kept
 * in sessionStorage (this tab only, gone when it closes), never in a URL or a log.
 */
import { createEnvironmentClient, type EnvironmentClient } from "../client/browser.js";

export interface Session {
  tenant: string;
  /** "" when the server has no API keys (loopback default). */
  apiKey: string;
}

const STORAGE_KEY = "runtara-console-session";

export function loadSession(): Session | undefined {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null") as Session | null;
    return saved && typeof saved.tenant === "string" && typeof saved.apiKey === "string" ? saved : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(session: Session | undefined): void {
  if (session) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/** The API is the origin that served the console. */
export function clientFor(session: Session): EnvironmentClient {
  return createEnvironmentClient({ baseUrl: location.origin, tenant: session.tenant, ...(session.apiKey ? { apiKey: session.apiKey } : {}) });
}

/** A client without credentials: HealthCheck only, to learn whether the server wants a key. */
export function anonymousClient(): EnvironmentClient {
  return createEnvironmentClient({ baseUrl: location.origin });
}
