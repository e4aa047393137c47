import { useEffect, useRef, useState } from "preact/hooks";
import { describeError } from "./errors.js";

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  reload: () => void;
}

/**
 * `load` now and again every `everyMs` (0: once) while the tab is visible, and whenever
 * `deps` change; the last good data stays on screen while a later call fails.
 */
export function usePolled<T>(load: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[], everyMs = 0): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  const [tick, setTick] = useState(0);
  const latest = useRef(load);
  latest.current = load;
  useEffect(() => {
    const abort = new AbortController();
    let timer: number | undefined;
    const run = async () => {
      if (document.visibilityState !== "hidden") {
        try {
          const value = await latest.current(abort.signal);
          if (abort.signal.aborted) return;
          setData(() => value);
          setError(undefined);
        } catch (e) {
          if (abort.signal.aborted) return;
          setError(describeError(e));
        }
      }
      if (everyMs > 0 && !abort.signal.aborted) timer = window.setTimeout(run, everyMs);
    };
    void run();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
    // The caller names what the load depends on; `load` itself is read through a ref.
  }, [...deps, tick, everyMs]);
  return { data, error, reload: () => setTick((n) => n + 1) };
}
