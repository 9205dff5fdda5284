import type { WatchResponse } from "./gen/grpcboard/v1/board_service_pb.js";
import type { Event } from "./gen/grpcboard/v1/event_pb.js";

/**
 * The resume rule of a watch, in one place: the next stream starts at (last delivered revision + 1).
 *
 * A stream delivers revision 41, then the connection drops while 42 and 43 commit. Reopening at 42 gets
 * 42 and 43 from history, then live events: nothing is skipped. If the drop happened after 43 was sent but
 * before the client read it, the new stream sends 43 again and it is delivered once, because only
 * revisions at or above the next start are accepted. Progress messages move the start forward too: after
 * "everything up to 57 was sent" (filters may have dropped 44-57), a resume starts at 58. A watch started
 * "from now" (0) learns its position from the first progress message, so even it resumes without a gap.
 */
export class WatchResume {
  private next: bigint;

  constructor(startRevision: bigint | number = 0n) {
    this.next = BigInt(startRevision);
  }

  /** The start_revision for the next stream (0 only before the first message of a "from now" watch). */
  get nextStart(): bigint {
    return this.next;
  }

  /** Takes one stream message; returns the event to deliver, or undefined (progress, or a duplicate). */
  accept(message: WatchResponse): Event | undefined {
    const m = message.message;
    if (m.case === "event") {
      if (m.value.revision >= this.next) {
        this.next = m.value.revision + 1n;
        return m.value;
      }
      return undefined;
    }
    if (m.case === "progress") {
      const after = m.value.revision + 1n;
      if (after > this.next) {
        this.next = after;
      }
    }
    return undefined;
  }
}
