import { useEffect, useState } from "preact/hooks";
import type { EnvironmentClient } from "../client/browser.js";

/**
 * Version numbers of the images a page of instances names: instances carry image_id and
 * name, not the version, so each distinct id is looked up once (GetImage) and remembered;
 * a page holds at most a few dozen.
 */
const known = new Map<string, number | null>();

export function useImageVersions(client: EnvironmentClient, imageIds: readonly string[]): ReadonlyMap<string, number | null> {
  const [, setVersionRead] = useState(0);
  const missing = [...new Set(imageIds)].filter((id) => id !== "" && !known.has(id));
  useEffect(() => {
    if (missing.length === 0) return;
    for (const id of missing) known.set(id, null); // asked once, even while the answer is on its way
    void Promise.all(
      missing.map((imageId) =>
        client.getImage({ imageId }).then(
          (r) => known.set(imageId, r.image?.version ?? null),
          () => {}, // deleted since: the name alone is shown
        ),
      ),
    ).then(() => setVersionRead((n) => n + 1));
  }, [missing.join(",")]);
  return known;
}
