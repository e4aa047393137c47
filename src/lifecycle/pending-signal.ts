import { sql } from "slonik";
import { z } from "zod";
import { SIGNAL_KINDS, type PendingSignal } from "./states.js";

/**
 * The pending instance-wide signal (CANCEL / PAUSE / RESUME) as three columns, returned
 * alongside transitions (register) and instance calls (heartbeat, checkpoint) so an instance
 * learns of a signal without another round trip.
 */
export const pendingSignalColumns = z.object({
  signal_type: z.enum(SIGNAL_KINDS).nullable(),
  signal_payload: z.instanceof(Buffer).nullable(),
  signal_created_at: z.number().nullable(),
});
type PendingSignalColumns = z.infer<typeof pendingSignalColumns>;

export const pendingSignalSelect = (instanceId: string) => sql.fragment`
  (SELECT signal_type FROM pending_signals WHERE instance_id = ${instanceId}) AS signal_type,
  (SELECT payload FROM pending_signals WHERE instance_id = ${instanceId}) AS signal_payload,
  (SELECT created_at FROM pending_signals WHERE instance_id = ${instanceId}) AS signal_created_at`;

export function toPendingSignal(r: PendingSignalColumns): PendingSignal | undefined {
  return r.signal_type === null
    ? undefined
    : { type: r.signal_type, payload: r.signal_payload ?? Buffer.alloc(0), createdAtMs: r.signal_created_at ?? 0 };
}
