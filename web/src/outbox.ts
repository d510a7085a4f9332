// Messages shown at once and sent in the background. Each keeps the one
// idempotency key it was given, so a retry after a lost answer cannot post
// it twice; transient failures are retried with growing pauses, others are
// shown with the message.

export type SendState = "sending" | "sent" | "failed";

export interface Outgoing {
  /** Also the idempotency key. */
  key: string;
  channelId: string;
  /** For a reply: its thread. */
  threadId?: string;
  text: string;
  /** Files it carries, uploaded already. */
  fileIds?: string[];
  state: SendState;
  attempts: number;
  /** Why it failed, in words. */
  error?: string;
  /** Once sent: the message's id and sequence. */
  messageId?: string;
  seq?: number;
}

export interface Sender {
  send(o: Outgoing): Promise<{ messageId: string; seq: number }>;
  isTransient(err: unknown): boolean;
  describe(err: unknown): string;
  sleep(ms: number): Promise<void>;
}

/** Pauses between attempts, in ms; the last repeats. */
export const BACKOFF = [250, 500, 1000, 2000, 5000];
/** Attempts before a transient failure is shown as a failure. */
export const MAX_ATTEMPTS = 8;

export function newKey(): string {
  return crypto.randomUUID();
}

export class Outbox {
  private readonly pending = new Map<string, Outgoing>();
  /** Per conversation, the send to wait for: messages keep the order typed. */
  private readonly queues = new Map<string, Promise<void>>();

  constructor(
    private readonly sender: Sender,
    private readonly changed: (o: Outgoing) => void,
  ) {}

  /** Queues a message and returns its optimistic entry at once. */
  post(channelId: string, text: string, threadId?: string, fileIds: string[] = []): Outgoing {
    const o: Outgoing = { key: newKey(), channelId, threadId, text, fileIds, state: "sending", attempts: 0 };
    this.pending.set(o.key, o);
    this.enqueue(o);
    return o;
  }

  /** Sends after everything posted before it to the same conversation. */
  private enqueue(o: Outgoing): void {
    const before = this.queues.get(o.channelId) ?? Promise.resolve();
    const done = before.then(() => this.deliver(o));
    this.queues.set(o.channelId, done);
    void done.then(() => {
      if (this.queues.get(o.channelId) === done) {
        this.queues.delete(o.channelId);
      }
    });
  }

  /** Sends a failed message again, with its original key. */
  retry(key: string): void {
    const o = this.pending.get(key);
    if (o && o.state === "failed") {
      o.state = "sending";
      o.error = undefined;
      o.attempts = 0;
      this.changed({ ...o });
      this.enqueue(o);
    }
  }

  /** Entries not yet confirmed by the server, for one conversation. */
  unconfirmed(channelId: string): Outgoing[] {
    return [...this.pending.values()].filter((o) => o.channelId === channelId && o.state !== "sent");
  }

  /**
   * A message of this user arrived on the stream. The stream may beat the
   * send's own answer; the message then settles the entry it came from:
   * the one with its id, or else the one being sent in its conversation
   * (one at a time, in order) with its text and thread.
   */
  arrived(channelId: string, messageId: string, text: string, threadId?: string): void {
    for (const o of this.pending.values()) {
      if (o.channelId !== channelId) {
        continue;
      }
      const sameSend =
        o.messageId === messageId ||
        (o.state === "sending" && o.attempts > 0 && o.text === text && (o.threadId ?? "") === (threadId ?? ""));
      if (sameSend) {
        o.state = "sent";
        o.messageId = messageId;
        this.pending.delete(o.key);
        return;
      }
    }
  }

  private async deliver(o: Outgoing): Promise<void> {
    for (;;) {
      o.attempts += 1;
      try {
        const { messageId, seq } = await this.sender.send(o);
        o.state = "sent";
        o.messageId = messageId;
        o.seq = seq;
        this.changed({ ...o });
        return;
      } catch (err) {
        if (!this.sender.isTransient(err) || o.attempts >= MAX_ATTEMPTS) {
          o.state = "failed";
          o.error = this.sender.describe(err);
          this.changed({ ...o });
          return;
        }
        await this.sender.sleep(BACKOFF[Math.min(o.attempts - 1, BACKOFF.length - 1)] ?? 5000);
      }
    }
  }
}
