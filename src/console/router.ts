/**
 * Hash routes (`/ui#/instances/<id>`): the server serves one page at /ui and never sees the
 * route, so no path beyond the fixed files reaches it.
 */
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "instances" }
  | { page: "instance"; instanceId: string }
  | { page: "images" }
  | { page: "overview" };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeOrEmpty);
  if (parts[0] === "instances" && parts[1]) return { page: "instance", instanceId: parts[1] };
  if (parts[0] === "images") return { page: "images" };
  if (parts[0] === "overview") return { page: "overview" };
  return { page: "instances" };
}

/** A malformed escape (typed or pasted into the address bar) names no page: the default one. */
function decodeOrEmpty(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return "";
  }
}

export const hrefOf = (route: Route): string =>
  route.page === "instance" ? `#/instances/${encodeURIComponent(route.instanceId)}` : `#/${route.page}`;

export function navigate(route: Route): void {
  location.hash = hrefOf(route);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
