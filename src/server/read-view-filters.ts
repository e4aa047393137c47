import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { SortOrder } from "../../gen/runtara/core/v1/types_pb.js";
import { InvalidArgument } from "../errors.js";
import { requestTime } from "../protocol/convert.js";
import { boundedText, pageLimit, pageOffset, requireId } from "../validation.js";

/**
 * The filters of ListCheckpoints and ListEvents, validated once for both services that offer
 * them (the environment's and core's): the fields are the same in both requests.
 */
interface ListRequest {
  limit: number;
  offset: number;
  createdAfter?: Timestamp;
  createdBefore?: Timestamp;
}

function common(req: ListRequest) {
  return {
    limit: pageLimit("limit", req.limit),
    offset: pageOffset("offset", req.offset),
    createdAfterMs: requestTime("created_after", req.createdAfter),
    createdBeforeMs: requestTime("created_before", req.createdBefore),
  };
}

export function checkpointFilters(req: ListRequest & { checkpointId: string }) {
  return { ...common(req), checkpointId: req.checkpointId === "" ? "" : requireId("checkpoint_id", req.checkpointId) };
}

export function eventFilters(req: ListRequest & { eventType: string; subtype: string; sortOrder: SortOrder }) {
  if (req.sortOrder !== SortOrder.UNSPECIFIED && req.sortOrder !== SortOrder.ASC && req.sortOrder !== SortOrder.DESC) {
    throw new InvalidArgument("sort_order", "must be ASC or DESC");
  }
  return {
    ...common(req),
    eventType: boundedText("event_type", req.eventType, 64),
    subtype: boundedText("subtype", req.subtype, 128),
    ascending: req.sortOrder === SortOrder.ASC,
  };
}
