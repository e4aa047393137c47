import { useEffect, useState } from "preact/hooks";
import { ErrorNote } from "../components/error-note.js";
import { describeError } from "../errors.js";
import { anonymousClient, clientFor, type Session } from "../session.js";

/**
 * Whom to act as. A server with API keys answers an anonymous HealthCheck with `healthy`
 * only (no version), so the key field appears only then; the key's tenant is checked with
 * one ListInstances before the console opens, and a refusal is shown in words.
 */
export function SignIn({ onSignedIn, initialError }: { onSignedIn: (s: Session) => void; initialError?: string }) {
  const [needsKey, setNeedsKey] = useState<boolean>();
  const [tenant, setTenant] = useState("default");
  const [apiKey, setApiKey] = useState("");
  const [error, setError] = useState(initialError);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    anonymousClient()
      .healthCheck({})
      .then((h) => setNeedsKey(h.version === ""), (e: unknown) => setError(describeError(e)));
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const session = { tenant: tenant.trim(), apiKey: needsKey ? apiKey.trim() : "" };
    setBusy(true);
    try {
      await clientFor(session).listInstances({ limit: 1 });
      onSignedIn(session);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="sign-in">
      <h1>Runtara console</h1>
      <form onSubmit={submit} aria-describedby="sign-in-help">
        <p id="sign-in-help" class="muted">
          {needsKey === undefined
            ? "Asking the server how it authenticates…"
            : needsKey
              ? "This server uses API keys: the key decides the tenant. It is kept in this tab only."
              : "This server has no API keys (local use): choose the tenant to look at."}
        </p>
        <label>
          Tenant
          <input name="tenant" required value={tenant} onInput={(e) => setTenant(e.currentTarget.value)} autocomplete="off" />
        </label>
        {needsKey && (
          <label>
            API key
            <input name="apiKey" type="password" required value={apiKey} onInput={(e) => setApiKey(e.currentTarget.value)} autocomplete="off" />
          </label>
        )}
        <button type="submit" class="primary" disabled={busy || needsKey === undefined}>
          {busy ? "Checking…" : "Open console"}
        </button>
        <ErrorNote error={error} />
      </form>
    </main>
  );
}
