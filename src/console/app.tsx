import { useEffect, useMemo, useState } from "preact/hooks";
import { ImagesPage } from "./pages/images.js";
import { InstancePage } from "./pages/instance.js";
import { InstancesPage } from "./pages/instances.js";
import { OverviewPage } from "./pages/overview.js";
import { SignIn } from "./pages/sign-in.js";
import { hrefOf, useRoute, type Route } from "./router.js";
import { clientFor, loadSession, saveSession, type Session } from "./session.js";
import { useTheme } from "./theme.js";

const NAV: { label: string; route: Route }[] = [
  { label: "Instances", route: { page: "instances" } },
  { label: "Images", route: { page: "images" } },
  { label: "Overview", route: { page: "overview" } },
];

export function App() {
  const [session, setSession] = useState(loadSession);
  const route = useRoute();
  const [theme, toggleTheme] = useTheme();
  const client = useMemo(() => session && clientFor(session), [session]);
  useEffect(() => saveSession(session), [session]);

  if (!session || !client) return <SignIn onSignedIn={setSession} />;
  const current = route.page === "instance" ? "instances" : route.page;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <strong>Runtara</strong>
        <nav aria-label="Pages">
          {NAV.map((n) => (
            <a key={n.label} href={hrefOf(n.route)} aria-current={current === n.route.page ? "page" : undefined}>
              {n.label}
            </a>
          ))}
        </nav>
        <span class="who muted">tenant {session.tenant}</span>
        <button type="button" onClick={toggleTheme} aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}>
          {theme === "dark" ? "Light" : "Dark"}
        </button>
        <button type="button" onClick={() => setSession(undefined)}>
          Sign out
        </button>
      </header>
      <main id="main">
        {route.page === "instances" && <InstancesPage client={client} />}
        {route.page === "instance" && <InstancePage key={route.instanceId} client={client} instanceId={route.instanceId} />}
        {route.page === "images" && <ImagesPage client={client} />}
        {route.page === "overview" && <OverviewPage client={client} session={session} />}
      </main>
    </>
  );
}
