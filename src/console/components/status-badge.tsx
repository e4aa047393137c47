import type { InstanceStatus } from "../../../gen/runtara/core/v1/types_pb.js";
import { statusName } from "../format.js";

export function StatusBadge({ status }: { status: InstanceStatus }) {
  const name = statusName(status);
  return <span class={`badge status-${name.toLowerCase()}`}>{name}</span>;
}
