import { useEffect, useRef, useState } from "preact/hooks";
import { LogStream } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { EnvironmentClient } from "../../client/browser.js";
import { describeError, isAbort } from "../errors.js";
import { ErrorNote } from "./error-note.js";

/** Where the view starts: the last 256 KiB of each log. */
const TAIL_BYTES = 256n * 1024n;
/** What the view keeps: older text is dropped as new text arrives. */
const MAX_CHARS = 1024 * 1024;

interface Piece {
  stream: "stdout" | "stderr";
  text: string;
}

/**
 * stdout and stderr of every run, followed live (StreamInstanceLogs with follow) until the
 * instance is terminal; stderr is marked. Stays scrolled to the end unless the reader scrolled up.
 */
export function LogView({ client, instanceId }: { client: EnvironmentClient; instanceId: string }) {
  const [pieces, setPieces] = useState<Piece[]>([]);
  const [state, setState] = useState<"following" | "ended">("following");
  const [error, setError] = useState<string>();
  const box = useRef<HTMLPreElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    setPieces([]);
    setState("following");
    void (async () => {
      try {
        for await (const chunk of client.streamInstanceLogs({ instanceId, follow: true, tailBytes: TAIL_BYTES }, { signal: abort.signal })) {
          const stream = chunk.stream === LogStream.STDERR ? "stderr" : "stdout";
          const text = decoders[stream].decode(chunk.data, { stream: true });
          setPieces((old) => trim([...old, { stream, text }]));
        }
        setState("ended");
      } catch (e) {
        if (!abort.signal.aborted && !isAbort(e)) setError(describeError(e));
      }
    })();
    return () => abort.abort();
  }, [instanceId]);

  useEffect(() => {
    const el = box.current;
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  }, [pieces]);

  return (
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">
        Logs <span class="muted">{state === "following" ? "(following)" : "(ended)"}</span>
      </h2>
      <ErrorNote error={error} />
      <pre class="logs" ref={box} tabIndex={0} aria-label="Logs" data-state={state}>
        {pieces.length === 0 ? <span class="muted">no output yet</span> : pieces.map((p, i) => (p.stream === "stderr" ? <span key={i} class="stderr">{p.text}</span> : p.text))}
      </pre>
    </section>
  );
}

function trim(pieces: Piece[]): Piece[] {
  let chars = pieces.reduce((n, p) => n + p.text.length, 0);
  while (chars > MAX_CHARS && pieces.length > 1) chars -= pieces.shift()!.text.length;
  return pieces;
}
