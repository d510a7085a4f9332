// Unread and mention badges, kept from the stream's unread-count frames:
// the first is a snapshot that replaces everything, each later one carries
// the entries that changed and the new totals.

export interface Badge {
  unread: number;
  mentions: number;
  muted: boolean;
}

export interface CountsFrame {
  snapshot: boolean;
  channels: { channelId: string; unreadCount: bigint; mentionCount: bigint; muted: boolean }[];
  removedChannelIds: string[];
  totalUnread: bigint;
  totalMentions: bigint;
}

export class Badges {
  private byChannel = new Map<string, Badge>();
  totalUnread = 0;
  totalMentions = 0;

  apply(frame: CountsFrame): void {
    if (frame.snapshot) {
      this.byChannel = new Map();
    }
    for (const c of frame.channels) {
      this.byChannel.set(c.channelId, {
        unread: Number(c.unreadCount),
        mentions: Number(c.mentionCount),
        muted: c.muted,
      });
    }
    for (const id of frame.removedChannelIds) {
      this.byChannel.delete(id);
    }
    this.totalUnread = Number(frame.totalUnread);
    this.totalMentions = Number(frame.totalMentions);
  }

  of(channelId: string): Badge {
    return this.byChannel.get(channelId) ?? { unread: 0, mentions: 0, muted: false };
  }

  /** What a badge shows: mentions first, then unread messages, else nothing. */
  static label(b: Badge): string {
    if (b.mentions > 0) {
      return `@${b.mentions}`;
    }
    return b.unread > 0 && !b.muted ? String(b.unread) : "";
  }

  /** The page title's prefix, like "(3) ". */
  title(): string {
    const n = this.totalMentions > 0 ? this.totalMentions : this.totalUnread;
    return n > 0 ? `(${n}) ` : "";
  }
}
