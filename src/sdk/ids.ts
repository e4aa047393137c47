/** Checkpoint ids, step keys and signal names share the server's identifier rules. */
const CHECKPOINT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Prefixes the SDK uses for its own checkpoints; user step keys may not start with them. */
export const SLEEP_PREFIX = "sleep:";
export const SIGNAL_PREFIX = "signal:";

/** Throws a RangeError unless `id` is a valid checkpoint id: [A-Za-z0-9._:-], 1..128 chars, not "." or "..". */
export function validateCheckpointId(id: string, what = "checkpoint id"): string {
  if (typeof id !== "string" || !CHECKPOINT_ID.test(id) || id === "." || id === "..") {
    throw new RangeError(
      `${what} ${JSON.stringify(id)} is invalid: use 1 to 128 characters from [A-Za-z0-9._:-] (not "." or "..")`,
    );
  }
  return id;
}

/** A step key: a checkpoint id that does not collide with the SDK's own sleep/signal records. */
export function validateStepKey(key: string): string {
  validateCheckpointId(key, "step key");
  if (key.startsWith(SLEEP_PREFIX) || key.startsWith(SIGNAL_PREFIX)) {
    throw new RangeError(
      `step key ${JSON.stringify(key)} is reserved: keys starting with "${SLEEP_PREFIX}" or "${SIGNAL_PREFIX}" hold the SDK's sleep and signal records`,
    );
  }
  return key;
}

/** The checkpoint that durably records the payload received at wait point `name`. */
export function signalCheckpointId(name: string): string {
  validateCheckpointId(name, "signal name");
  return validateCheckpointId(`${SIGNAL_PREFIX}${name}`, `signal name ${JSON.stringify(name)} (too long once prefixed)`);
}

/** The checkpoint of the n-th `sleep` call of a run (1-based, in call order). */
export function sleepCheckpointId(ordinal: number): string {
  return `${SLEEP_PREFIX}${ordinal}`;
}
