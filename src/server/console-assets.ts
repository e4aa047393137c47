/**
 * The web console's files (`npm run build` bundles src/console into dist/console), served at
 * `/ui` on the management port. A fixed set read once at startup: a request names one of them
 * exactly or gets 404, so no path reaches the disk. The console calls the API with the
 * user's key like any client; its own files are public (they hold no data).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Req, Res } from "./refuse.js";

interface Asset {
  body: Buffer;
  contentType: string;
  etag: string;
}

/** URL path -> file in the bundle. `/ui` is the page; the console routes by the URL's hash. */
const FILES: Record<string, { file: string; contentType: string }> = {
  "/ui": { file: "index.html", contentType: "text/html; charset=utf-8" },
  "/ui/": { file: "index.html", contentType: "text/html; charset=utf-8" },
  "/ui/main.js": { file: "main.js", contentType: "text/javascript; charset=utf-8" },
  "/ui/main.css": { file: "main.css", contentType: "text/css; charset=utf-8" },
};

/**
 * No inline script or style, nothing from another origin, no framing; the API is this
 * origin (`connect-src 'self'`). Charts are SVG elements, sized through the CSSOM.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export type ConsoleAssets = ReadonlyMap<string, Asset> | { missing: string };

/** The bundle's files from `dir`, or why the console is missing (served as a 503 naming the fix). */
export async function loadConsoleAssets(dir: string): Promise<ConsoleAssets> {
  const assets = new Map<string, Asset>();
  try {
    for (const [urlPath, { file, contentType }] of Object.entries(FILES)) {
      const body = await readFile(path.join(dir, file));
      assets.set(urlPath, { body, contentType, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"` });
    }
  } catch (e) {
    return { missing: `the web console is not built (${(e as Error).message}); run npm run build` };
  }
  return assets;
}

type Handler = (req: Req, res: Res) => void;

/** `next` with `/ui` and its files in front (GET and HEAD). */
export function withConsole(assets: ConsoleAssets, next: Handler): Handler {
  return (req, res) => {
    const urlPath = (req.url ?? "").split("?", 1)[0]!;
    if (urlPath !== "/ui" && !urlPath.startsWith("/ui/")) return next(req, res);
    const headers = {
      "content-security-policy": CONTENT_SECURITY_POLICY,
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { ...headers, allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("use GET\n");
      return;
    }
    if ("missing" in assets) {
      res.writeHead(503, { ...headers, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end(`${assets.missing}\n`);
      return;
    }
    const asset = assets.get(urlPath);
    if (asset === undefined) {
      res.writeHead(404, { ...headers, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end("not found: the console is at /ui\n");
      return;
    }
    // Fixed names, so every use revalidates: a 304 costs a round trip and no bytes.
    const cache = { ...headers, etag: asset.etag, "cache-control": "no-cache" };
    if (req.headers["if-none-match"] === asset.etag) {
      res.writeHead(304, cache);
      res.end();
      return;
    }
    res.writeHead(200, { ...cache, "content-type": asset.contentType, "content-length": String(asset.body.length) });
    if (req.method === "HEAD") res.end();
    else res.end(asset.body);
  };
}
