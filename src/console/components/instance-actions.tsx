import { useState } from "preact/hooks";
import { InstanceStatus, SignalType } from "../../../gen/runtara/core/v1/types_pb.js";
import type { EnvironmentClient } from "../../client/browser.js";
import { describeError } from "../errors.js";
import { isTerminal, statusName } from "../format.js";
import { ConfirmDialog } from "./confirm-dialog.js";
import { ErrorNote } from "./error-note.js";

type Dialog = "stop" | "cancel" | "signal" | undefined;

/**
 * What an operator may do to an instance in its current status: pause a running one, resume
 * a suspended one, stop (grace, then SIGTERM/SIGKILL) or cancel it after a confirmation, and
 * send a custom signal with a JSON payload to a wait point.
 */
export function InstanceActions({ client, instanceId, status }: { client: EnvironmentClient; instanceId: string; status: InstanceStatus }) {
  const [dialog, setDialog] = useState<Dialog>();
  const [note, setNote] = useState<string>();
  const [error, setError] = useState<string>();
  const [grace, setGrace] = useState("5");
  const [waitPoint, setWaitPoint] = useState("");
  const [payload, setPayload] = useState("{}");

  const run = async (what: string, call: () => Promise<unknown>) => {
    setDialog(undefined);
    setError(undefined);
    setNote(`${what}…`);
    try {
      const res = (await call()) as { status?: InstanceStatus } | undefined;
      setNote(res?.status ? `${what}: now ${statusName(res.status)}` : `${what}: sent`);
    } catch (e) {
      setNote(undefined);
      setError(`${what} failed — ${describeError(e)}`);
    }
  };
  const signal = (signalType: SignalType) => () => client.sendSignal({ instanceId, signalType });
  const sendCustom = () => {
    let bytes: Uint8Array;
    try {
      bytes = new TextEncoder().encode(JSON.stringify(JSON.parse(payload)));
    } catch (e) {
      setError(`The payload is not JSON: ${(e as Error).message}`);
      return;
    }
    void run(`Signal ${waitPoint}`, () => client.sendCustomSignal({ instanceId, checkpointId: waitPoint.trim(), payload: bytes }));
  };

  if (isTerminal(status)) return <ErrorNote error={error} />;
  const running = status === InstanceStatus.RUNNING;
  const suspended = status === InstanceStatus.SUSPENDED;
  return (
    <div class="instance-actions">
      <div class="actions" role="toolbar" aria-label="Actions">
        {running && (
          <button type="button" onClick={() => void run("Pause", signal(SignalType.PAUSE))}>
            Pause
          </button>
        )}
        {suspended && (
          <button type="button" onClick={() => void run("Resume", () => client.resumeInstance({ instanceId }))}>
            Resume
          </button>
        )}
        {(running || suspended) && (
          <button type="button" onClick={() => setDialog("signal")}>
            Send signal…
          </button>
        )}
        <button type="button" class="danger" onClick={() => setDialog("stop")}>
          Stop…
        </button>
        <button type="button" class="danger" onClick={() => setDialog("cancel")}>
          Cancel…
        </button>
      </div>
      {note && (
        <p class="muted" role="status">
          {note}
        </p>
      )}
      <ErrorNote error={error} />
      {dialog === "stop" && (
        <ConfirmDialog title="Stop this instance?" confirmLabel="Stop" danger onClose={() => setDialog(undefined)} onConfirm={() => void run("Stop", () => client.stopInstance({ instanceId, gracePeriodSeconds: BigInt(Math.max(0, Math.trunc(Number(grace) || 0))), reason: "stopped from the web console" }))}>
          <p>It gets CANCEL and the grace period to finish, then SIGTERM, then SIGKILL. It ends CANCELLED unless it completes first.</p>
          <label>
            Grace period (seconds)
            <input name="grace" type="number" min={0} max={3600} step={1} value={grace} onInput={(e) => setGrace(e.currentTarget.value)} />
          </label>
        </ConfirmDialog>
      )}
      {dialog === "cancel" && (
        <ConfirmDialog title="Cancel this instance?" confirmLabel="Cancel instance" danger onClose={() => setDialog(undefined)} onConfirm={() => void run("Cancel", signal(SignalType.CANCEL))}>
          <p>The workflow is asked to stop at once; a pending or suspended instance is cancelled immediately. This cannot be undone.</p>
        </ConfirmDialog>
      )}
      {dialog === "signal" && (
        <ConfirmDialog title="Send a custom signal" confirmLabel="Send" onClose={() => setDialog(undefined)} onConfirm={sendCustom}>
          <label>
            Wait point
            <input name="waitPoint" required value={waitPoint} placeholder="approval" onInput={(e) => setWaitPoint(e.currentTarget.value)} />
          </label>
          <label>
            Payload (JSON)
            <textarea name="payload" rows={5} value={payload} onInput={(e) => setPayload(e.currentTarget.value)} />
          </label>
        </ConfirmDialog>
      )}
    </div>
  );
}
