import { stat } from "node:fs/promises";
import { LaunchError } from "./errors.js";

/** What keeps an active process observed (our child, or the poll of an adopted process); `detach` lets go of it. */
export interface Holder {
  detach(): void;
}

/** After detachAll: an adopted process's exit is no longer observed, and `exited` never settles. */
export function neverSettles(): Promise<never> {
  return new Promise<never>(() => {});
}

export async function requireExecutable(file: string, what: string): Promise<void> {
  let st;
  try {
    st = await stat(file);
  } catch {
    throw new LaunchError("binary_not_found", `${what}: ${file} does not exist`);
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) throw new LaunchError("binary_not_found", `${what}: ${file} is not an executable file`);
}
