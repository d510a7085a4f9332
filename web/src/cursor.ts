// Where a conversation's live events have reached, so that a stream that
// drops can resume from there with no gap and no repeat.
//
// Every conversation event carries the next sequence of its conversation.
// An event at the next sequence is applied; one at or below what was applied
// is a repeat and is dropped; one beyond it means something was missed, and
// the missing range must be read from the log before going on.

export type Verdict = "apply" | "repeat" | "gap";

export class Cursor {
  /** The newest sequence applied; 0 before the first. */
  private applied: number;

  constructor(applied = 0) {
    this.applied = applied;
  }

  get position(): number {
    return this.applied;
  }

  /** What to do with an event at `seq`; an applied event moves the cursor. */
  offer(seq: number): Verdict {
    if (seq <= this.applied) {
      return "repeat";
    }
    if (seq > this.applied + 1) {
      return "gap";
    }
    this.applied = seq;
    return "apply";
  }

  /** Moves to a position known from elsewhere (a page read, a replay). */
  reach(seq: number): void {
    this.applied = Math.max(this.applied, seq);
  }
}

/** Cursors of several conversations, as sent when a stream resumes. */
export class Cursors {
  private readonly byChannel = new Map<string, Cursor>();

  of(channelId: string): Cursor {
    let cursor = this.byChannel.get(channelId);
    if (!cursor) {
      cursor = new Cursor();
      this.byChannel.set(channelId, cursor);
    }
    return cursor;
  }

  has(channelId: string): boolean {
    return this.byChannel.has(channelId);
  }

  /** `(channel, last sequence)` of every conversation, for a resume. */
  snapshot(): { channelId: string; lastSeq: bigint }[] {
    return [...this.byChannel].map(([channelId, c]) => ({ channelId, lastSeq: BigInt(c.position) }));
  }
}

/**
 * Inserts `seq` into `list`, which is in ascending order and does not hold
 * it. Live messages come last and older pages first, so the end is tried
 * before searching.
 */
export function insertInOrder(list: bigint[], seq: bigint): void {
  let at = list.length;
  if (at > 0 && seq < list[at - 1]) {
    let lo = 0;
    while (lo < at) {
      const mid = (lo + at) >> 1;
      if (list[mid] < seq) {
        lo = mid + 1;
      } else {
        at = mid;
      }
    }
  }
  list.splice(at, 0, seq);
}

/** Messages by sequence, in a list and by thread, as a conversation keeps them. */
export interface Sequenced<M> {
  messages: Map<bigint, M>;
  order: bigint[];
  threads: Map<string, Map<bigint, M>>;
}

/** Drops every message up to a sequence: what retention deleted. */
export function dropThrough<M>(c: Sequenced<M>, throughSeq: bigint): void {
  for (const seq of c.order) {
    if (seq <= throughSeq) {
      c.messages.delete(seq);
    }
  }
  c.order = c.order.filter((seq) => seq > throughSeq);
  for (const replies of c.threads.values()) {
    for (const seq of [...replies.keys()]) {
      if (seq <= throughSeq) {
        replies.delete(seq);
      }
    }
  }
}
