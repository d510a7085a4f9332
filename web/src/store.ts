// What the signed-in person sees, kept up to date by one live stream that
// follows all their conversations. The stream resumes by cursor after any
// drop; a gap in a conversation's sequence is filled from its log.

import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Channel, ChannelKind } from "../../gen/ts/colink/channels/v1/channels_pb";
import type { ChannelEvent, Message } from "../../gen/ts/colink/messaging/v1/messaging_pb";
import { PresenceStatus } from "../../gen/ts/colink/presence/v1/presence_pb";
import { ReactionGroupSchema } from "../../gen/ts/colink/reactions/v1/reactions_pb";
import type { ServerFrame } from "../../gen/ts/colink/realtime/v1/realtime_pb";
import { type File as StoredFile, ThumbnailSize } from "../../gen/ts/colink/files/v1/files_pb";
import type { SearchFileHit, SearchMessageHit } from "../../gen/ts/colink/search/v1/search_pb";
import { channels, describe, files, isTransient, messaging, presence, reactions, realtime, search, users } from "./api";
import { Badges } from "./badges";
import { Cursors, dropThrough, insertInOrder } from "./cursor";
import { Outbox, type Outgoing } from "./outbox";
import { upload } from "./uploads";

/** Presence heartbeats go this often (the server keeps presence 60 s). */
const HEARTBEAT_MS = 30_000;
/** How often an unseen message in a direct conversation is checked for readers. */
const RECEIPTS_EVERY_MS = 3_000;
/** Typing notices are sent at most this often while typing. */
const TYPING_EVERY_MS = 3_000;

export type Status = "online" | "away" | "dnd" | "offline";
const STATUS: Partial<Record<PresenceStatus, Status>> = {
  [PresenceStatus.ONLINE]: "online",
  [PresenceStatus.AWAY]: "away",
  [PresenceStatus.DND]: "dnd",
  [PresenceStatus.OFFLINE]: "offline",
};

/** Pauses before reconnecting, in ms; the last repeats. */
const RECONNECT = [250, 1000, 2000, 5000];
const PAGE = 100;
/** Stream frames are applied for at most this long before the page may draw. */
const SLICE_MS = 10;
/** While messages arrive in the open conversation, its read position is sent this often. */
const READ_EVERY_MS = 250;

export type Connection = "connecting" | "live" | "offline";

/** A way to finish a mention: what goes after "@", and how it is shown. */
export interface Suggestion {
  insert: string;
  label: string;
}

const EVERYONE: Suggestion[] = [
  { insert: "channel", label: "@channel: everyone in the conversation" },
  { insert: "here", label: "@here: everyone online now" },
  { insert: "all", label: "@all: everyone in the conversation" },
];

export interface Conversation {
  channel: Channel;
  /** The main flow's messages by sequence. */
  messages: Map<bigint, Message>;
  /** Their sequences, oldest first. */
  order: bigint[];
  /** The messages in that order, as last listed; dropped on each change. */
  shown?: Message[];
  /** Replies of the threads that were opened, by thread, by sequence. */
  threads: Map<string, Map<bigint, Message>>;
  /** Token for the next older page; empty once the start is reached. */
  older: string;
  loaded: boolean;
}

export class Store {
  conversations = new Map<string, Conversation>();
  names = new Map<string, string>();
  /** Usernames by user id, for mentions. */
  usernames = new Map<string, string>();
  /** Member ids per conversation, read when a mention is first typed there. */
  private members = new Map<string, string[]>();
  badges = new Badges();
  cursors = new Cursors();
  connection: Connection = "connecting";
  openId: string | undefined;
  /** The thread shown beside the conversation: its root message's id. */
  openThread: string | undefined;
  error: string | undefined;
  readonly outbox: Outbox;
  private listeners = new Set<() => void>();
  private stop = new AbortController();
  private readUpTo = new Map<string, bigint>();
  /** Per conversation, the older page being read. */
  private loading = new Map<string, Promise<void>>();
  /** Per conversation, the read position about to be sent. */
  private reading = new Map<string, ReturnType<typeof setTimeout>>();
  /** Who is online, as far as known. */
  presence = new Map<string, Status>();
  /** Per conversation, who is typing and until when (ms). */
  typing = new Map<string, Map<string, number>>();
  /** Per conversation, who has read the caller's newest message there. */
  seenBy = new Map<string, string[]>();
  /** Where the last typing notice was sent for, and when. */
  private lastTyping = { where: "", at: 0 };
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private receipts: ReturnType<typeof setInterval> | undefined;
  /** Attached files as last read or told, by id. */
  knownFiles = new Map<string, StoredFile>();
  /** Files being read, so that each is asked for once. */
  private fileReads = new Set<string>();
  /** Per message, how many of its files the virus scan took off it. */
  removedFiles = new Map<string, number>();
  /** Download URLs by file and size ("" for the original), until they expire. */
  private urls = new Map<string, { url: string; until: number }>();

  constructor(readonly userId: string) {
    this.outbox = new Outbox(
      {
        send: async (o) => {
          const sent = await messaging.sendMessage({
            channelId: o.channelId,
            threadId: o.threadId ?? "",
            text: o.text,
            fileIds: o.fileIds ?? [],
            idempotencyKey: o.key,
          });
          return { messageId: sent.message?.messageId ?? "", seq: Number(sent.message?.seq ?? 0) };
        },
        isTransient,
        describe,
        sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      },
      () => this.notify(),
    );
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  notify(): void {
    for (const l of this.listeners) {
      l();
    }
  }

  /** Loads the sidebar and starts the live stream. */
  async start(): Promise<void> {
    await this.refreshChannels();
    void this.follow();
    const beat = () => void presence.heartbeat({ idle: document.visibilityState === "hidden" }).catch(() => undefined);
    beat();
    this.heartbeat = setInterval(beat, HEARTBEAT_MS);
    // Reads leave no event on the stream: ask again while waiting to be seen.
    this.receipts = setInterval(() => {
      const open = this.openId;
      if (open && this.sorted(open).at(-1)?.senderId === this.userId && !this.seenBy.get(open)?.length) {
        void this.checkSeen(open).catch(() => undefined);
      }
    }, RECEIPTS_EVERY_MS);
  }

  close(): void {
    this.stop.abort();
    clearInterval(this.heartbeat);
    clearInterval(this.receipts);
    for (const pending of this.reading.values()) {
      clearTimeout(pending);
    }
    this.reading.clear();
  }

  /** Tells the others in the open conversation that the user is typing. */
  typingNow(threadId?: string): void {
    const now = Date.now();
    const where = `${this.openId}/${threadId ?? ""}`;
    if (this.openId && (this.lastTyping.where !== where || now - this.lastTyping.at > TYPING_EVERY_MS)) {
      this.lastTyping = { where, at: now };
      void presence.startTyping({ channelId: this.openId, threadId: threadId ?? "" }).catch(() => undefined);
    }
  }

  /** Who is typing in a conversation now, by name. */
  typists(channelId: string): string[] {
    const now = Date.now();
    return [...(this.typing.get(channelId) ?? [])]
      .filter(([id, until]) => until > now && id !== this.userId)
      .map(([id]) => this.names.get(id) ?? "someone");
  }

  /** For a direct conversation: whether the others have read the user's newest message. */
  async checkSeen(channelId: string): Promise<void> {
    const c = this.conversations.get(channelId);
    if (!c || c.channel.name) {
      return;
    }
    const mine = this.sorted(channelId).filter((m) => m.senderId === this.userId && !m.deleted && !m.recalled).at(-1);
    if (!mine) {
      return;
    }
    const receipts = await messaging.listReadReceipts({ messageId: mine.messageId });
    this.seenBy.set(channelId, receipts.readerIds.filter((id) => id !== this.userId));
    this.notify();
  }

  async refreshChannels(): Promise<void> {
    let pageToken = "";
    do {
      const page = await channels.listMyChannels({ pageSize: 200, pageToken });
      for (const channel of page.channels) {
        const known = this.conversations.get(channel.channelId);
        this.conversations.set(channel.channelId, known ? { ...known, channel } : fresh(channel));
      }
      pageToken = page.nextPageToken;
    } while (pageToken);
    await this.learnNames([...this.conversations.values()].flatMap((c) => c.channel.participantIds));
    this.notify();
  }

  /** Display names of users, asked for once. */
  async learnNames(ids: string[]): Promise<void> {
    const unknown = [...new Set(ids)].filter((id) => !this.names.has(id));
    for (let i = 0; i < unknown.length; i += 100) {
      const batch = unknown.slice(i, i + 100);
      const [found, statuses] = await Promise.all([
        users.batchGetUsers({ userIds: batch }),
        presence.batchGetPresence({ userIds: batch }).catch(() => undefined),
      ]);
      for (const u of found.users) {
        this.names.set(u.userId, u.displayName || u.username);
        this.usernames.set(u.userId, u.username);
      }
      for (const p of statuses?.presences ?? []) {
        this.presence.set(p.userId, STATUS[p.status] ?? "offline");
      }
    }
  }

  title(c: Channel): string {
    if (c.name) {
      return `#${c.name}`;
    }
    const others = c.participantIds.filter((id) => id !== this.userId);
    return others.map((id) => this.names.get(id) ?? "someone").join(", ") || "just you";
  }

  /**
   * Who can be mentioned in a conversation by what was typed after "@":
   * its members by username or name, and the words for everyone.
   */
  async mentionable(channelId: string, typed: string): Promise<Suggestion[]> {
    let ids = this.members.get(channelId);
    if (!ids) {
      ids = [];
      let pageToken = "";
      do {
        const page = await channels.listMembers({ channelId, pageSize: 100, pageToken });
        ids.push(...page.members.map((m) => m.userId));
        pageToken = page.nextPageToken;
      } while (pageToken && ids.length < 1000);
      await this.learnNames(ids);
      this.members.set(channelId, ids);
    }
    const wanted = typed.toLowerCase();
    const people = ids
      .filter((id) => id !== this.userId)
      .map((id) => ({ username: this.usernames.get(id) ?? "", name: this.names.get(id) ?? "" }))
      .filter((p) => p.username && (p.username.startsWith(wanted) || p.name.toLowerCase().startsWith(wanted)))
      .sort((a, b) => a.username.localeCompare(b.username))
      .map((p) => ({ insert: p.username, label: p.name && p.name !== p.username ? `${p.name} (@${p.username})` : `@${p.username}` }));
    const everyone = EVERYONE.filter((e) => e.insert.startsWith(wanted));
    return [...people, ...everyone].slice(0, 8);
  }

  /** For a direct conversation: the presence of the other person (or the first of them). */
  statusOf(c: Channel): Status {
    const other = c.participantIds.find((id) => id !== this.userId);
    return other ? (this.presence.get(other) ?? "offline") : "offline";
  }

  async open(channelId: string): Promise<void> {
    if (this.openId !== channelId) {
      this.openThread = undefined;
    }
    this.openId = channelId;
    const c = this.conversations.get(channelId);
    if (c && !c.loaded) {
      await this.loadOlder(channelId);
    }
    this.markRead(channelId, true);
    void this.checkSeen(channelId).catch(() => undefined);
    this.notify();
  }

  /** Reads the next older page of a conversation. */
  loadOlder(channelId: string): Promise<void> {
    const c = this.conversations.get(channelId);
    if (!c || (c.loaded && !c.older)) {
      return Promise.resolve();
    }
    // One page at a time: whoever asks meanwhile waits for the same one.
    let reading = this.loading.get(channelId);
    if (!reading) {
      reading = this.readPage(c).finally(() => this.loading.delete(channelId));
      this.loading.set(channelId, reading);
    }
    return reading;
  }

  private async readPage(c: Conversation): Promise<void> {
    const channelId = c.channel.channelId;
    const page = await messaging.listMessages({ channelId, pageSize: PAGE, pageToken: c.older });
    for (const m of page.messages) {
      keep(c, m);
    }
    await this.learnNames(page.messages.map((m) => m.senderId));
    c.older = page.nextPageToken;
    c.loaded = true;
    this.notify();
  }

  /** The main flow, oldest first: the same array until a message is added or replaced. */
  sorted(channelId: string): Message[] {
    const c = this.conversations.get(channelId);
    if (!c) {
      return [];
    }
    c.shown ??= c.order.map((seq) => c.messages.get(seq) as Message);
    return c.shown;
  }

  pending(channelId: string, threadId?: string): Outgoing[] {
    return this.outbox.unconfirmed(channelId).filter((o) => o.threadId === threadId);
  }

  /** Posts to the open conversation, or to one of its threads. */
  send(text: string, threadId?: string, fileIds: string[] = []): void {
    if (this.openId && (text.trim() || fileIds.length > 0)) {
      this.outbox.post(this.openId, text, threadId, fileIds);
      this.notify();
    }
  }

  /** Uploads a file to the open conversation; resolves to its id. */
  async upload(file: Blob & { name: string }): Promise<string> {
    const channelId = this.openId;
    if (!channelId) {
      throw new Error("Open a conversation first.");
    }
    return upload(
      {
        createUploadUrl: (request) => files.createUploadUrl(request),
        confirmUpload: (request) => files.confirmUpload(request),
        put: (url, init) => fetch(url, init),
      },
      file,
      channelId,
    );
  }

  /** An attached file's metadata, read once and then kept up to date. */
  file(fileId: string): StoredFile | undefined {
    const known = this.knownFiles.get(fileId);
    if (!known) {
      void this.readFile(fileId);
    }
    return known;
  }

  /** Reads a file's metadata again. */
  refreshFile(fileId: string): void {
    void this.readFile(fileId);
  }

  private async readFile(fileId: string): Promise<void> {
    if (this.fileReads.has(fileId)) {
      return;
    }
    this.fileReads.add(fileId);
    try {
      const { file } = await files.getFile({ fileId });
      if (file) {
        this.knownFiles.set(fileId, file);
        this.notify();
      }
    } catch {
      // Shown as loading; read again when it next changes.
    } finally {
      this.fileReads.delete(fileId);
    }
  }

  /** A URL for a file's bytes, or for one of its thumbnails. */
  async downloadUrl(fileId: string, thumbnail = ThumbnailSize.UNSPECIFIED, asAttachment = false): Promise<string> {
    const key = `${fileId}/${thumbnail}/${asAttachment}`;
    const kept = this.urls.get(key);
    if (kept && kept.until > Date.now()) {
      return kept.url;
    }
    const answer = await files.getDownloadUrl({ fileId, thumbnailSize: thumbnail, asAttachment });
    // Used until a minute before it expires.
    const until = answer.expiresAt ? timestampMs(answer.expiresAt) - 60_000 : Date.now();
    this.urls.set(key, { url: answer.url, until });
    return answer.url;
  }

  replies(channelId: string, threadId: string): Message[] {
    const replies = this.conversations.get(channelId)?.threads.get(threadId);
    return replies ? [...replies.values()].sort((a, b) => (a.seq < b.seq ? -1 : 1)) : [];
  }

  /** Shows a thread beside the conversation, reading its replies once. */
  async openThreadOf(root: Message): Promise<void> {
    this.openThread = root.messageId;
    this.notify();
    const c = this.conversations.get(root.channelId);
    if (c && !c.threads.has(root.messageId)) {
      // Replies that arrive live while the pages are read land here too.
      const replies = new Map<bigint, Message>();
      c.threads.set(root.messageId, replies);
      // A message nobody replied to yet has no thread to read.
      let pageToken = root.thread && root.thread.replyCount > 0 ? "" : undefined;
      try {
        while (pageToken !== undefined) {
          const page = await messaging.listMessages({
            channelId: root.channelId,
            threadId: root.messageId,
            pageSize: 100,
            pageToken,
          });
          for (const m of page.messages) {
            replies.set(m.seq, m);
          }
          await this.learnNames(page.messages.map((m) => m.senderId));
          pageToken = page.nextPageToken || undefined;
        }
      } catch (err) {
        c.threads.delete(root.messageId);
        throw err;
      }
    }
    this.notify();
  }

  closeThread(): void {
    this.openThread = undefined;
    this.notify();
  }

  root(channelId: string, messageId: string): Message | undefined {
    const c = this.conversations.get(channelId);
    return c ? find(c, messageId)[0] : undefined;
  }

  /** Adds the reaction, or takes it back if the user already made it. */
  async toggleReaction(m: Message, emoji: string): Promise<void> {
    const mine = m.reactions.find((g) => g.emoji === emoji)?.reactedByViewer ?? false;
    const answer = mine
      ? await reactions.removeReaction({ messageId: m.messageId, emoji, idempotencyKey: crypto.randomUUID() })
      : await reactions.addReaction({ messageId: m.messageId, emoji, idempotencyKey: crypto.randomUUID() });
    const c = this.conversations.get(m.channelId);
    if (c && answer.reactions) {
      for (const shown of find(c, m.messageId)) {
        shown.reactions = answer.reactions.groups;
      }
    }
    this.notify();
  }

  async edit(m: Message, text: string): Promise<void> {
    const { message } = await messaging.editMessage({
      messageId: m.messageId,
      text,
      expectedVersion: m.version,
      idempotencyKey: crypto.randomUUID(),
    });
    if (message) {
      this.replace(message);
    }
  }

  async remove(m: Message): Promise<void> {
    await messaging.deleteMessage({ messageId: m.messageId, idempotencyKey: crypto.randomUUID() });
  }

  /** Takes a message back shortly after sending it: it disappears for everyone. */
  async recall(m: Message): Promise<void> {
    await messaging.recallMessage({ messageId: m.messageId, idempotencyKey: crypto.randomUUID() });
  }

  async togglePin(m: Message): Promise<void> {
    const request = { messageId: m.messageId, idempotencyKey: crypto.randomUUID() };
    await (m.pinned ? messaging.unpinMessage(request) : messaging.pinMessage(request));
  }

  async addPeople(channelId: string, usernames: string[]): Promise<void> {
    const found = await this.usersNamed(usernames);
    await channels.addMembers({ channelId, userIds: found, idempotencyKey: crypto.randomUUID() });
    await this.refreshChannels();
  }

  /** The ids of users by username; an unknown name is an error that names it. */
  private async usersNamed(usernames: string[]): Promise<string[]> {
    const found = await users.batchGetUsers({ usernames });
    const missing = usernames.filter((n) => !found.users.some((u) => u.username === n));
    if (missing.length > 0) {
      throw new Error(`No one is called ${missing.join(", ")}.`);
    }
    return found.users.map((u) => u.userId);
  }

  /** Puts a newer version of a message wherever it is shown. */
  private replace(m: Message): void {
    const c = this.conversations.get(m.channelId);
    if (!c) {
      return;
    }
    if (inMainFlow(m)) {
      const known = c.messages.get(m.seq);
      keep(c, known ? { ...m, reactions: known.reactions, thread: m.thread ?? known.thread } : m);
    }
    const replies = m.threadId ? c.threads.get(m.threadId) : undefined;
    if (replies) {
      const known = replies.get(m.seq);
      replies.set(m.seq, known ? { ...m, reactions: known.reactions } : m);
    }
    this.notify();
  }

  /**
   * Tells the server the open conversation is read up to its newest
   * message: at once when opened, then at most every READ_EVERY_MS while
   * messages keep arriving.
   */
  markRead(channelId: string, now = false): void {
    if (now) {
      clearTimeout(this.reading.get(channelId));
      this.reading.delete(channelId);
      this.sendRead(channelId);
    } else if (!this.reading.has(channelId)) {
      this.reading.set(
        channelId,
        setTimeout(() => {
          this.reading.delete(channelId);
          this.sendRead(channelId);
        }, READ_EVERY_MS),
      );
    }
  }

  private sendRead(channelId: string): void {
    const newest = this.sorted(channelId).at(-1)?.seq;
    if (newest === undefined || (this.readUpTo.get(channelId) ?? -1n) >= newest) {
      return;
    }
    this.readUpTo.set(channelId, newest);
    void messaging.markRead({ channelId, seq: newest }).catch(() => this.readUpTo.delete(channelId));
  }

  async createChannel(name: string, priv: boolean): Promise<string> {
    const { channel } = await channels.createChannel({
      name,
      kind: priv ? ChannelKind.PRIVATE : ChannelKind.PUBLIC,
      idempotencyKey: crypto.randomUUID(),
    });
    await this.refreshChannels();
    return channel?.channelId ?? "";
  }

  async openDirect(usernames: string[]): Promise<string> {
    const { channel } = await channels.openDirectMessage({
      userIds: await this.usersNamed(usernames),
      idempotencyKey: crypto.randomUUID(),
    });
    await this.refreshChannels();
    return channel?.channelId ?? "";
  }

  async browse(prefix: string): Promise<Channel[]> {
    const page = await channels.browseChannels({ namePrefix: prefix, pageSize: 50 });
    return page.channels;
  }

  /** A page of the messages a query finds in the caller's conversations. */
  async search(query: string, pageToken = ""): Promise<{ hits: SearchMessageHit[]; total: bigint; next: string }> {
    const page = await search.searchMessages({ query, pageSize: 20, pageToken });
    await this.learnNames(page.hits.map((h) => h.senderId));
    return { hits: page.hits, total: page.totalEstimate, next: page.nextPageToken };
  }

  /** A page of the files a query finds among those the caller may see. */
  async searchFiles(query: string, pageToken = ""): Promise<{ hits: SearchFileHit[]; next: string }> {
    const page = await search.searchFiles({ query, pageSize: 10, pageToken });
    await this.learnNames(page.hits.map((h) => h.ownerId));
    return { hits: page.hits, next: page.nextPageToken };
  }

  /** Opens the conversation of a hit, and its thread when it is a reply. */
  async openHit(hit: SearchMessageHit): Promise<void> {
    await this.open(hit.channelId);
    if (hit.threadId) {
      const { message } = await messaging.getMessage({ messageId: hit.threadId });
      if (message) {
        await this.openThreadOf(message);
      }
    }
  }

  async join(channelId: string): Promise<void> {
    await channels.joinChannel({ channelId });
    await this.refreshChannels();
  }

  /** Follows every conversation until closed, resuming after each drop. */
  private async follow(): Promise<void> {
    for (let attempt = 0; !this.stop.signal.aborted; attempt++) {
      await whileOffline(this.stop.signal);
      this.connection = "connecting";
      this.notify();
      // The browser knows of a lost network before the connection does.
      const lost = offline();
      const drop = AbortSignal.any([this.stop.signal, lost.signal]);
      try {
        const stream = realtime.subscribe(
          { allChannels: true, cursors: this.cursors.snapshot() },
          { signal: drop },
        );
        let since = performance.now();
        for await (const response of stream) {
          if (this.connection !== "live") {
            this.connection = "live";
            attempt = 0;
            this.notify();
          }
          await this.onFrame(response.frame?.frame);
          // Frames that arrived together are applied in slices, with the
          // page drawn in between: a backlog must not freeze it.
          if (performance.now() - since > SLICE_MS) {
            await new Promise((r) => setTimeout(r, 0));
            since = performance.now();
          }
        }
      } catch (err) {
        if (this.stop.signal.aborted) {
          return;
        }
        if (!isTransient(err) && ConnectError.from(err).code !== Code.Canceled) {
          this.error = describe(err);
        }
      }
      lost.release();
      this.connection = "offline";
      this.notify();
      await new Promise((r) => setTimeout(r, RECONNECT[Math.min(attempt, RECONNECT.length - 1)]));
    }
  }

  private async onFrame(frame: ServerFrame["frame"] | undefined): Promise<void> {
    switch (frame?.case) {
      case "subscribed": {
        const cursor = this.cursors.of(frame.value.channelId);
        // A conversation seen for the first time starts at its head: its
        // history is read by page when it is opened.
        if (cursor.position === 0 && !this.conversations.get(frame.value.channelId)?.loaded) {
          cursor.reach(Number(frame.value.headSeq));
        }
        if (!this.conversations.has(frame.value.channelId)) {
          await this.refreshChannels();
        }
        break;
      }
      case "event":
        await this.onEvent(frame.value);
        break;
      case "unreadCounts": {
        const counts = frame.value.counts;
        this.badges.apply({
          snapshot: frame.value.snapshot,
          channels: counts?.channels ?? [],
          removedChannelIds: frame.value.removedChannelIds,
          totalUnread: counts?.totalUnreadCount ?? 0n,
          totalMentions: counts?.totalMentionCount ?? 0n,
        });
        this.notify();
        break;
      }
      case "presence":
        this.presence.set(frame.value.userId, STATUS[frame.value.status] ?? "offline");
        this.notify();
        break;
      case "typing": {
        const t = frame.value;
        const until = t.expireTime ? timestampMs(t.expireTime) : 0;
        const who = this.typing.get(t.channelId) ?? new Map<string, number>();
        who.set(t.userId, until);
        this.typing.set(t.channelId, who);
        this.notify();
        // Shown until it expires, then drawn again without it.
        setTimeout(() => this.notify(), Math.max(until - Date.now(), 0) + 50);
        break;
      }
      case "file":
        // One of the caller's own files changed (its scan ended).
        this.knownFiles.set(frame.value.fileId, frame.value);
        this.notify();
        break;
      case "resumeRequired":
        throw new ConnectError("the server asked to resume", Code.Unavailable);
      default:
        break;
    }
  }

  private async onEvent(event: ChannelEvent): Promise<void> {
    const cursor = this.cursors.of(event.channelId);
    const verdict = cursor.offer(Number(event.seq));
    if (verdict === "repeat") {
      return;
    }
    if (verdict === "gap") {
      await this.fill(event.channelId);
      return;
    }
    this.apply(event);
  }

  /** Reads what the stream missed of a conversation from its log. */
  private async fill(channelId: string): Promise<void> {
    const cursor = this.cursors.of(channelId);
    for (;;) {
      const page = await messaging.listChannelEvents({ channelId, afterSeq: BigInt(cursor.position), pageSize: 500 });
      for (const e of page.events) {
        if (cursor.offer(Number(e.seq)) === "apply") {
          this.apply(e);
        }
      }
      if (page.events.length === 0 || BigInt(cursor.position) >= page.headSeq) {
        return;
      }
    }
  }

  private apply(event: ChannelEvent): void {
    const c = this.conversations.get(event.channelId);
    const kind = event.kind;
    switch (kind.case) {
      case "messageCreated":
      case "messageEdited": {
        const m = kind.value;
        this.replace(m);
        if (kind.case === "messageCreated" && m.senderId === this.userId) {
          this.outbox.arrived(event.channelId, m.messageId, m.text, m.threadId || undefined);
        }
        void this.learnNames([m.senderId]).then(() => this.notify());
        if (kind.case === "messageCreated" && this.openId === event.channelId && document.visibilityState !== "hidden") {
          this.markRead(event.channelId);
        }
        if (kind.case === "messageCreated") {
          // A message ends its sender's typing.
          this.typing.get(event.channelId)?.delete(m.senderId);
          if (this.openId === event.channelId) {
            void this.checkSeen(event.channelId).catch(() => undefined);
          }
        }
        break;
      }
      case "messageDeleted":
      case "messageRecalled": {
        for (const gone of c ? find(c, kind.value.messageId) : []) {
          gone.text = "";
          gone.reactions = [];
          gone.deleted = kind.case === "messageDeleted";
          gone.recalled = kind.case === "messageRecalled";
        }
        break;
      }
      case "messageHidden":
        // Its sender still sees it; everyone else sees where it was.
        for (const m of c ? find(c, kind.value.messageId) : []) {
          m.hidden = true;
          if (m.senderId !== this.userId) {
            m.text = "";
            m.fileIds = [];
            m.reactions = [];
          }
        }
        break;
      case "messageRestored":
        this.replace(kind.value);
        break;
      case "messagePinned":
      case "messageUnpinned":
        for (const m of c ? find(c, kind.value.messageId) : []) {
          m.pinned = kind.case === "messagePinned";
        }
        break;
      case "threadUpdated":
        for (const root of c ? find(c, kind.value.threadId) : []) {
          root.thread = kind.value;
        }
        break;
      case "reactionAdded":
      case "reactionRemoved": {
        const r = kind.value;
        const mine = r.userId === this.userId ? kind.case === "reactionAdded" : undefined;
        for (const m of c ? find(c, r.messageId) : []) {
          react(m, r.emoji, r.count, mine);
        }
        break;
      }
      case "reactionsChanged":
        for (const m of c ? find(c, kind.value.messageId) : []) {
          for (const count of kind.value.counts) {
            react(m, count.emoji, count.count, undefined);
          }
        }
        break;
      case "attachmentChanged": {
        const changed = kind.value;
        const carrying = c ? find(c, changed.messageId).filter((m) => m.fileIds.includes(changed.fileId)) : [];
        if (changed.removed && carrying.length > 0) {
          this.removedFiles.set(changed.messageId, (this.removedFiles.get(changed.messageId) ?? 0) + 1);
          for (const m of carrying) {
            m.fileIds = m.fileIds.filter((id) => id !== changed.fileId);
          }
          if (c) {
            c.shown = undefined;
          }
        }
        this.refreshFile(changed.fileId);
        break;
      }
      case "messagesExpired":
        if (c) {
          dropThrough(c, kind.value.throughSeq);
          c.shown = undefined;
        }
        break;
      case "memberJoined":
      case "memberLeft":
        this.members.delete(event.channelId);
        if (kind.value.userId === this.userId) {
          void this.refreshChannels();
        }
        break;
      default:
        break;
    }
    this.notify();
  }
}

/** A signal that fires when the browser goes offline, until released. */
function offline(): { signal: AbortSignal; release: () => void } {
  const gone = new AbortController();
  const abort = () => gone.abort();
  globalThis.addEventListener?.("offline", abort, { once: true });
  return { signal: gone.signal, release: () => globalThis.removeEventListener?.("offline", abort) };
}

/** Waits until the browser is online again (or `stop` fires). */
async function whileOffline(stop: AbortSignal): Promise<void> {
  if (globalThis.navigator?.onLine !== false) {
    return;
  }
  await new Promise<void>((resolve) => {
    globalThis.addEventListener("online", () => resolve(), { once: true });
    stop.addEventListener("abort", () => resolve(), { once: true });
  });
}

function fresh(channel: Channel): Conversation {
  return { channel, messages: new Map(), order: [], threads: new Map(), older: "", loaded: false };
}

/** Puts a main-flow message in its conversation, keeping the order by sequence. */
function keep(c: Conversation, m: Message): void {
  if (!c.messages.has(m.seq)) {
    insertInOrder(c.order, m.seq);
  }
  c.messages.set(m.seq, m);
  c.shown = undefined;
}

/** Whether a message belongs in its conversation's main flow. */
function inMainFlow(m: Message): boolean {
  return !m.threadId || m.alsoSentToChannel;
}

/** The message with this id, wherever it is shown. */
function find(c: Conversation, messageId: string): Message[] {
  const found = [...c.messages.values()].filter((m) => m.messageId === messageId);
  for (const replies of c.threads.values()) {
    found.push(...[...replies.values()].filter((m) => m.messageId === messageId));
  }
  return found;
}

/** Applies a reaction entry to a message's groups. */
function react(m: Message, emoji: string, count: number, viewer: boolean | undefined): void {
  const group = m.reactions.find((g) => g.emoji === emoji);
  if (count <= 0) {
    m.reactions = m.reactions.filter((g) => g.emoji !== emoji);
  } else if (group) {
    group.count = count;
    if (viewer !== undefined) {
      group.reactedByViewer = viewer;
    }
  } else {
    m.reactions.push(create(ReactionGroupSchema, { emoji, count, reactedByViewer: viewer ?? false }));
  }
}
