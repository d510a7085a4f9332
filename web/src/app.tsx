import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { ComponentChildren, TargetedEvent } from "preact";
import { type Passkey, SecondFactorMethod } from "../../gen/ts/colink/auth/v1/auth_pb";
import { type File as StoredFile, ScanStatus, ThumbnailSize } from "../../gen/ts/colink/files/v1/files_pb";
import type { Message } from "../../gen/ts/colink/messaging/v1/messaging_pb";
import type { Excerpt, SearchFileHit, SearchMessageHit } from "../../gen/ts/colink/search/v1/search_pb";
import { auth, describe } from "./api";
import { Badges } from "./badges";
import { createPasskey, passkeyTrouble, passkeysSupported, usePasskey } from "./passkeys";
import {
  begin,
  end,
  finishSingleSignOn,
  scheduleRenewal,
  session,
  signInWithPasskey,
  startSingleSignOn,
  type Session,
} from "./session";
import { Store, type Suggestion } from "./store";
import { type Draft, formatSize } from "./uploads";
import { type Anchor, Heights, anchorAt, scrollFor, slice } from "./virtual";

export function App() {
  const [me, setMe] = useState<Session | undefined>(session());
  useEffect(() => scheduleRenewal(() => setMe(undefined)), [me]);
  if (!me) {
    return <SignIn onDone={setMe} />;
  }
  return (
    <Workspace
      me={me}
      onSignOut={async () => {
        await end();
        setMe(undefined);
      }}
    />
  );
}

/** Redraws on the store's changes, at most once a frame however many arrive. */
function useStore(store: Store): number {
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let frame = 0;
    const stop = store.subscribe(() => {
      frame ||= requestAnimationFrame(() => {
        frame = 0;
        setVersion((v) => v + 1);
      });
    });
    return () => {
      stop();
      cancelAnimationFrame(frame);
    };
  }, [store]);
  return version;
}

/** How this workspace signs people in, as the node says. */
interface SignInOptions {
  password: boolean;
  singleSignOn: string | undefined;
  passkeys: boolean;
}

/** A password sign-in's second step: its id, and the passkey options when a passkey may answer. */
interface Challenge {
  id: string;
  passkeyOptions: string;
}

function SignIn({ onDone }: { onDone: (s: Session) => void }) {
  const [mode, setMode] = useState<"in" | "up">("in");
  const [challenge, setChallenge] = useState<Challenge>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [options, setOptions] = useState<SignInOptions>({ password: true, singleSignOn: undefined, passkeys: false });

  useEffect(() => {
    auth
      .getSignInOptions({})
      .then((o) =>
        setOptions({
          password: o.password,
          singleSignOn: o.singleSignOn ? o.singleSignOnName : undefined,
          passkeys: o.passkeys && passkeysSupported(),
        }),
      )
      .catch(() => undefined);
    // Back from the identity provider: finish signing in.
    setBusy(true);
    finishSingleSignOn()
      .then((done) => done && onDone(done))
      .catch((err) => setError(err instanceof Error && !("code" in err) ? err.message : describe(err)))
      .finally(() => setBusy(false));
  }, []);

  const run = async (work: () => Promise<void>) => {
    setBusy(true);
    setError(undefined);
    try {
      await work();
    } catch (err) {
      setError(say(err));
    } finally {
      setBusy(false);
    }
  };

  const answerWithPasskey = (c: Challenge) =>
    void run(async () => {
      const assertion = await usePasskey(c.passkeyOptions);
      const done = await auth.verifySecondFactor({
        challengeId: c.id,
        method: SecondFactorMethod.WEBAUTHN,
        webauthnAssertionJson: assertion,
      });
      if (done.account && done.tokens) {
        onDone(begin(done.account, done.tokens));
      }
    });

  const submit = (e: TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const field = (name: string) => String(form.get(name) ?? "");
    void run(async () => {
      if (challenge) {
        const done = await auth.verifySecondFactor({
          challengeId: challenge.id,
          method: SecondFactorMethod.TOTP,
          code: field("code"),
        });
        if (done.account && done.tokens) {
          onDone(begin(done.account, done.tokens));
        }
      } else if (mode === "up") {
        const made = await auth.register({
          username: field("username"),
          email: field("email"),
          password: field("password"),
          displayName: field("displayName"),
        });
        if (made.account && made.tokens) {
          onDone(begin(made.account, made.tokens));
        }
      } else {
        const answer = await auth.login({ login: field("login"), password: field("password"), deviceName: "web" });
        if (answer.result.case === "tokens" && answer.account) {
          onDone(begin(answer.account, answer.result.value));
        } else if (answer.result.case === "challenge") {
          const { challengeId, methods, webauthnOptionsJson } = answer.result.value;
          const byPasskey = methods.includes(SecondFactorMethod.WEBAUTHN) && passkeysSupported();
          setChallenge({ id: challengeId, passkeyOptions: byPasskey ? webauthnOptionsJson : "" });
        }
      }
    });
  };

  if (!options.password) {
    return (
      <main class="auth">
        <h1>Colink</h1>
        <ErrorNote error={error} />
        {options.singleSignOn && (
          <button type="button" class="primary" disabled={busy} onClick={() => void run(startSingleSignOn)}>
            Sign in with {options.singleSignOn}
          </button>
        )}
      </main>
    );
  }

  return (
    <main class="auth">
      <h1>Colink</h1>
      <form onSubmit={submit} aria-label={challenge ? "Two-step check" : mode === "in" ? "Sign in" : "Sign up"}>
        {challenge ? (
          <label>
            Code from your authenticator app
            <input name="code" inputMode="numeric" autoComplete="one-time-code" pattern="[0-9]{6}" required autoFocus />
          </label>
        ) : mode === "in" ? (
          <>
            <label>
              Username or email
              <input name="login" autoComplete="username" required autoFocus />
            </label>
            <label>
              Password
              <input name="password" type="password" autoComplete="current-password" required />
            </label>
          </>
        ) : (
          <>
            <label>
              Username
              <input name="username" autoComplete="username" required autoFocus />
            </label>
            <label>
              Email
              <input name="email" type="email" autoComplete="email" required />
            </label>
            <label>
              Display name
              <input name="displayName" autoComplete="name" />
            </label>
            <label>
              Password (at least 8 characters)
              <input name="password" type="password" autoComplete="new-password" minLength={8} required />
            </label>
          </>
        )}
        <ErrorNote error={error} />
        <button type="submit" disabled={busy}>
          {challenge ? "Verify" : mode === "in" ? "Sign in" : "Create account"}
        </button>
      </form>
      {challenge?.passkeyOptions && (
        <button type="button" disabled={busy} onClick={() => answerWithPasskey(challenge)}>
          Use a passkey instead
        </button>
      )}
      {!challenge && mode === "in" && options.passkeys && (
        <button type="button" disabled={busy} onClick={() => void run(async () => onDone(await signInWithPasskey()))}>
          Use a passkey
        </button>
      )}
      {!challenge && (
        <button class="link" type="button" onClick={() => setMode(mode === "in" ? "up" : "in")}>
          {mode === "in" ? "New here? Create an account" : "Have an account? Sign in"}
        </button>
      )}
    </main>
  );
}

function Workspace({ me, onSignOut }: { me: Session; onSignOut: () => void }) {
  const store = useMemo(() => new Store(me.userId), [me.userId]);
  useStore(store);
  useEffect(() => {
    store.start().catch((err: unknown) => {
      store.error = describe(err);
      store.notify();
    });
    return () => store.close();
  }, [store]);
  // The tab's title carries the unread total; setting it costs, so only on change.
  // With single sign-on, second factors are the identity provider's.
  const [passwords, setPasswords] = useState<boolean>();
  useEffect(() => {
    auth
      .getSignInOptions({})
      .then((o) => setPasswords(o.password))
      .catch(() => undefined);
  }, []);
  const title = `${store.badges.title()}Colink`;
  useEffect(() => {
    document.title = title;
  }, [title]);
  const [panel, setPanel] = useState<"none" | "new" | "browse" | "dm" | "security" | "passkeys" | "search">("none");
  const [query, setQuery] = useState("");
  const list = [...store.conversations.values()].sort((a, b) => store.title(a.channel).localeCompare(store.title(b.channel)));
  const open = store.openId ? store.conversations.get(store.openId) : undefined;

  return (
    <div class="workspace">
      <nav class="sidebar" aria-label="Conversations">
        <header>
          <strong>{me.username}</strong>
          <span class={`dot ${store.connection}`} role="img" title={store.connection} aria-label={`connection ${store.connection}`} />
          <button type="button" class="link" onClick={onSignOut}>
            Sign out
          </button>
        </header>
        <form
          role="search"
          class="search"
          onSubmit={(e) => {
            e.preventDefault();
            const typed = String(new FormData(e.currentTarget).get("q") ?? "").trim();
            if (typed) {
              setQuery(typed);
              setPanel("search");
            }
          }}
        >
          <input name="q" type="search" aria-label="Search messages and files" placeholder="Search messages and files" />
        </form>
        <ul>
          {list.map(({ channel }) => {
            const badge = Badges.label(store.badges.of(channel.channelId));
            return (
              <li key={channel.channelId}>
                <button
                  type="button"
                  class={channel.channelId === store.openId ? "current" : ""}
                  aria-current={channel.channelId === store.openId ? "page" : undefined}
                  onClick={() => void store.open(channel.channelId)}
                >
                  <span class="name">
                    {!channel.name && <Presence status={store.statusOf(channel)} />}
                    {store.title(channel)}
                  </span>
                  {badge && (
                    <span class="badge" data-testid={`badge-${channel.name || channel.channelId}`}>
                      {badge}
                    </span>
                  )}
                </button>
              </li>
            );
          })}
        </ul>
        <div class="actions">
          <button type="button" onClick={() => setPanel("new")}>
            New channel
          </button>
          <button type="button" onClick={() => setPanel("browse")}>
            Browse channels
          </button>
          <button type="button" onClick={() => setPanel("dm")}>
            New message
          </button>
          {passwords === true && (
            <button type="button" onClick={() => setPanel("security")}>
              Two-step sign-in
            </button>
          )}
          {passwords === true && (
            <button type="button" onClick={() => setPanel("passkeys")}>
              Passkeys
            </button>
          )}
        </div>
      </nav>
      <main class="conversation">
        <ErrorNote error={store.error} />
        {panel === "new" && <NewChannel store={store} onClose={() => setPanel("none")} />}
        {panel === "browse" && <Browse store={store} onClose={() => setPanel("none")} />}
        {panel === "dm" && <NewDirect store={store} onClose={() => setPanel("none")} />}
        {panel === "security" && <TwoStep onClose={() => setPanel("none")} />}
        {panel === "passkeys" && <Passkeys onClose={() => setPanel("none")} />}
        {panel === "search" && <SearchResults key={query} store={store} query={query} onClose={() => setPanel("none")} />}
        {open ? <Conversation store={store} channelId={open.channel.channelId} /> : <p class="hint">Pick a conversation.</p>}
      </main>
      {open && store.openThread && <Thread store={store} channelId={open.channel.channelId} rootId={store.openThread} />}
    </div>
  );
}

function Conversation({ store, channelId }: { store: Store; channelId: string }) {
  const c = store.conversations.get(channelId);
  const [adding, setAdding] = useState(false);
  if (!c) {
    return null;
  }
  const messages = store.sorted(channelId);
  const latest = messages.at(-1);
  return (
    <section class="messages" aria-label={store.title(c.channel)} data-channel-id={channelId}>
      <header class="title">
        <h2>{store.title(c.channel)}</h2>
        {c.channel.name && (
          <button type="button" class="link" onClick={() => setAdding(!adding)}>
            Add people
          </button>
        )}
      </header>
      {adding && <AddPeople store={store} channelId={channelId} onClose={() => setAdding(false)} />}
      <MessageList key={channelId} store={store} channelId={channelId} messages={messages} />
      <p class="sr-only" aria-live="polite">
        {latest && latest.senderId !== store.userId && `${store.names.get(latest.senderId) ?? "Someone"}: ${latest.text}`}
      </p>
      <p class="typing" aria-live="polite">
        {typing(store.typists(channelId))}
        {seen(store, channelId, messages)}
      </p>
      {c.channel.viewerMuted ? (
        <p class="muted-notice" role="status">
          {mutedNotice(c.channel.viewerMutedUntil?.seconds)}
        </p>
      ) : (
        <Composer
          label={`Message ${store.title(c.channel)}`}
          onSend={(text, fileIds) => store.send(text, undefined, fileIds)}
          onAttach={(file) => store.upload(file)}
          onType={() => store.typingNow()}
          suggest={(typed) => store.mentionable(channelId, typed)}
        />
      )}
    </section>
  );
}

/** Why the composer is missing: a moderator's mute, until when. */
function mutedNotice(untilSeconds: bigint | undefined): string {
  const until = untilSeconds === undefined ? "" : ` until ${new Date(Number(untilSeconds) * 1000).toLocaleString()}`;
  return `A moderator muted you here${until}. You can still read the conversation.`;
}

/** A message row's height before it is measured, in pixels. */
const ROW_ESTIMATE = 48;
/** Rows are rendered this far above and below the viewport, in pixels. */
const OVERSCAN = 600;
/** Older messages are read while the viewport is this close to the top, in pixels. */
const READ_AHEAD = 1500;
/** Within this distance of the bottom, the list follows new messages. */
const FOLLOW_SLACK = 40;

/**
 * The main flow, virtualized: only the rows near the viewport are in the
 * page. The rest are padding of their measured (or estimated) height. The
 * list follows new messages while scrolled to the bottom; otherwise the
 * first row on screen stays put while older pages arrive above it and rows
 * are measured.
 */
function MessageList({ store, channelId, messages }: { store: Store; channelId: string; messages: Message[] }) {
  const scroller = useRef<HTMLDivElement>(null);
  const list = useRef<HTMLOListElement>(null);
  const heights = useMemo(() => new Heights(ROW_ESTIMATE), []);
  const [view, setView] = useState({ top: 0, height: 0 });
  const [, remeasured] = useState(0);
  const follow = useRef(true);
  /** Where the list last scrolled itself to while following. */
  const pinned = useRef(0);
  const anchor = useRef<Anchor | undefined>(undefined);
  const keys = useMemo(() => messages.map((m) => m.messageId), [messages]);
  const tops = useMemo(() => heights.offsets(keys), [keys, heights.version]);
  const latest = useRef({ keys, tops });
  latest.current = { keys, tops };
  // Following, the list shows its end: no need to wait for the scroll to get there.
  const height = view.height || 2 * OVERSCAN;
  const top = follow.current ? Math.max(tops[keys.length] - height, 0) : view.top;
  const rows = slice(tops, top, height, OVERSCAN);
  const pending = store.pending(channelId);

  const readAhead = (el: HTMLElement) => {
    if (el.scrollTop < READ_AHEAD && store.conversations.get(channelId)?.older) {
      void store.loadOlder(channelId).catch(() => undefined);
    }
  };
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el || !list.current) {
      return;
    }
    let changed = false;
    for (const row of list.current.children) {
      const key = (row as HTMLElement).dataset.key;
      if (key) {
        changed = heights.measure(key, row.getBoundingClientRect().height) || changed;
      }
    }
    const now = changed ? heights.offsets(keys) : tops;
    if (follow.current) {
      el.scrollTop = el.scrollHeight;
      pinned.current = el.scrollTop;
    } else if (anchor.current) {
      const y = scrollFor(keys, now, anchor.current);
      if (y !== undefined && Math.abs(el.scrollTop - y) >= 1) {
        el.scrollTop = y;
      }
    }
    if (el.clientHeight !== view.height || (!follow.current && el.scrollTop !== view.top)) {
      setView({ top: el.scrollTop, height: el.clientHeight });
    } else if (changed) {
      remeasured((v) => v + 1);
    }
    readAhead(el);
  });
  const onScroll = () => {
    const el = scroller.current;
    if (!el) {
      return;
    }
    // Rows that grew after the list scrolled to its end (a thumbnail
    // arriving) are no reason to stop following; scrolling up is.
    const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < FOLLOW_SLACK;
    follow.current = atEnd || (follow.current && el.scrollTop >= pinned.current);
    anchor.current = anchorAt(latest.current.keys, latest.current.tops, el.scrollTop);
    if (!follow.current || el.clientHeight !== view.height) {
      setView({ top: el.scrollTop, height: el.clientHeight });
    }
    readAhead(el);
  };
  return (
    // Focusable, so that the history also scrolls by keyboard (arrows, Page Up).
    <div class="scroller" ref={scroller} onScroll={onScroll} tabIndex={0}>
      <ol
        ref={list}
        data-testid="messages"
        aria-label="Messages"
        style={{ paddingTop: `${rows.before}px`, paddingBottom: `${rows.after}px` }}
      >
        {messages.slice(rows.start, rows.end).map((m) => (
          <MessageRow key={m.messageId} store={store} m={m} />
        ))}
        {pending.map((o) => (
          <Pending key={o.key} store={store} o={o} />
        ))}
      </ol>
    </div>
  );
}

/** Emoji offered for a quick reaction. */
const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "👀"];

function MessageRow({ store, m, inThread }: { store: Store; m: Message; inThread?: boolean }) {
  const withheld = m.hidden && m.text === "" && m.fileIds.length === 0;
  const gone = m.deleted || m.recalled || withheld;
  const mine = m.senderId === store.userId;
  const [editing, setEditing] = useState(false);
  const [picking, setPicking] = useState(false);
  const { error, run } = useAction();
  const sender = store.names.get(m.senderId) ?? "someone";
  return (
    <li class="message" data-seq={String(m.seq)} data-key={inThread ? undefined : m.messageId}>
      <span class="sender">{sender}</span>
      {editing ? (
        <Composer
          label="Edit message"
          initial={m.text}
          onSend={(text) => run(async () => {
            await store.edit(m, text);
            setEditing(false);
          })}
          onCancel={() => setEditing(false)}
        />
      ) : (
        <span class={gone ? "text gone" : "text"}>
          {m.deleted
            ? "This message was deleted."
            : m.recalled
              ? "This message was recalled."
              : withheld
                ? "This message was hidden by a moderator."
                : m.text}
          {m.editTime && !gone && <small class="edited"> (edited)</small>}
          {m.hidden && !withheld && <small class="hidden"> · Hidden by a moderator</small>}
          {m.pinned && !gone && <small class="pinned"> · Pinned</small>}
        </span>
      )}
      {!gone && m.fileIds.length > 0 && (
        <ul class="attachments" aria-label="Files">
          {m.fileIds.map((id) => (
            <Attachment key={id} store={store} fileId={id} />
          ))}
        </ul>
      )}
      {!gone && store.removedFiles.has(m.messageId) && (
        <small class="removed">A file was removed from this message: it did not pass the virus scan.</small>
      )}
      {!gone && m.reactions.length > 0 && (
        <span class="reactions">
          {m.reactions.map((g) => (
            <button
              type="button"
              key={g.emoji}
              class={g.reactedByViewer ? "reaction mine" : "reaction"}
              aria-pressed={g.reactedByViewer}
              aria-label={`${g.emoji} ${g.count}`}
              onClick={() => run(() => store.toggleReaction(m, g.emoji))}
            >
              {g.emoji} {g.count}
            </button>
          ))}
        </span>
      )}
      {!gone && !inThread && m.thread && m.thread.replyCount > 0 && (
        <button type="button" class="link replies" onClick={() => run(() => store.openThreadOf(m))}>
          {m.thread.replyCount === 1 ? "1 reply" : `${m.thread.replyCount} replies`}
        </button>
      )}
      {!gone && (
        <span class="tools">
          <button type="button" class="link" aria-expanded={picking} onClick={() => setPicking(!picking)}>
            React
          </button>
          {!inThread && !m.threadId && (
            <button type="button" class="link" onClick={() => run(() => store.openThreadOf(m))}>
              Reply
            </button>
          )}
          {mine && !editing && (
            <button type="button" class="link" onClick={() => setEditing(true)}>
              Edit
            </button>
          )}
          {!inThread && !m.threadId && (
            <button type="button" class="link" onClick={() => run(() => store.togglePin(m))}>
              {m.pinned ? "Unpin" : "Pin"}
            </button>
          )}
          {mine && (
            <button type="button" class="link" onClick={() => run(() => store.recall(m))}>
              Recall
            </button>
          )}
          {mine && (
            <button
              type="button"
              class="link"
              onClick={() => confirm("Delete this message for everyone?") && run(() => store.remove(m))}
            >
              Delete
            </button>
          )}
        </span>
      )}
      {picking && (
        <span class="picker" role="group" aria-label={`React to ${sender}'s message`}>
          {QUICK_EMOJI.map((emoji) => (
            <button
              type="button"
              key={emoji}
              onClick={() => {
                setPicking(false);
                run(() => store.toggleReaction(m, emoji));
              }}
            >
              {emoji}
            </button>
          ))}
        </span>
      )}
      <ErrorNote error={error} inline />
    </li>
  );
}

function Thread({ store, channelId, rootId }: { store: Store; channelId: string; rootId: string }) {
  const root = store.root(channelId, rootId);
  if (!root) {
    return null;
  }
  const replies = store.replies(channelId, rootId);
  const pending = store.pending(channelId, rootId);
  return (
    <aside class="thread" aria-label="Thread">
      <header>
        <h2>Thread</h2>
        <button type="button" class="link" onClick={() => store.closeThread()}>
          Close thread
        </button>
      </header>
      <ol data-testid="thread">
        <MessageRow store={store} m={root} inThread />
        {replies.map((m) => (
          <MessageRow key={m.messageId} store={store} m={m} inThread />
        ))}
        {pending.map((o) => (
          <Pending key={o.key} store={store} o={o} />
        ))}
      </ol>
      <Composer
        label="Reply in thread"
        onSend={(text, fileIds) => store.send(text, rootId, fileIds)}
        onAttach={(file) => store.upload(file)}
        onType={() => store.typingNow(rootId)}
        suggest={(typed) => store.mentionable(channelId, typed)}
      />
    </aside>
  );
}

/** How an attached file can be shown. */
function availability(file: StoredFile | undefined): "loading" | "scanning" | "ready" | "blocked" {
  switch (file?.scanStatus) {
    case undefined:
      return "loading";
    case ScanStatus.CLEAN:
    case ScanStatus.UNSCANNED:
      return "ready";
    case ScanStatus.PENDING:
    case ScanStatus.UNSPECIFIED:
      return "scanning";
    default:
      return "blocked";
  }
}

/** How often a file still being scanned is read again, in ms. */
const RECHECK_SCAN_MS = 10_000;

/** A file on a message: checked for viruses first, then shown and downloadable. */
function Attachment({ store, fileId }: { store: Store; fileId: string }) {
  const file = store.file(fileId);
  const state = availability(file);
  const preview = file?.thumbnails.find((t) => t.size === ThumbnailSize.MEDIUM);
  const [thumbnail, setThumbnail] = useState<string>();
  const { error, run } = useAction();
  useEffect(() => {
    // The scan's end comes live on the stream; reading again now and then
    // covers a scan that ended while the message was being sent.
    if (state !== "scanning") {
      return;
    }
    const again = setInterval(() => store.refreshFile(fileId), RECHECK_SCAN_MS);
    return () => clearInterval(again);
  }, [store, fileId, state]);
  useEffect(() => {
    if (state === "ready" && preview) {
      store
        .downloadUrl(fileId, ThumbnailSize.MEDIUM)
        .then((url) => {
          setThumbnail(url);
          // The row grows: the list measures it again.
          store.notify();
        })
        .catch(() => undefined);
    }
  }, [store, fileId, state, preview !== undefined]);
  if (!file) {
    return <li class="attachment loading">A file…</li>;
  }
  const download = () =>
    run(async () => {
      const link = document.createElement("a");
      link.href = await store.downloadUrl(fileId, ThumbnailSize.UNSPECIFIED, true);
      link.download = file.filename;
      link.click();
    });
  return (
    <li class={`attachment ${state}`}>
      {thumbnail && preview && (
        <img
          src={thumbnail}
          alt={file.description || file.filename}
          width={preview.width}
          height={preview.height}
          onLoad={() => store.notify()}
        />
      )}
      <span class="about">
        <span class="name">
          {file.filename} <small>({formatSize(Number(file.sizeBytes))})</small>
        </span>
        {state === "scanning" && <small class="status">Checking for viruses…</small>}
        {state === "blocked" && <small class="status">Not available: it did not pass the virus scan.</small>}
        {state === "ready" && (
          <button type="button" class="link" aria-label={`Download ${file.filename}`} onClick={download}>
            Download
          </button>
        )}
      </span>
      <ErrorNote error={error} inline />
    </li>
  );
}

function Pending({ store, o }: { store: Store; o: ReturnType<Store["pending"]>[number] }) {
  const count = o.fileIds?.length ?? 0;
  return (
    <li class={`message ${o.state}`}>
      <span class="sender">{store.names.get(store.userId) ?? "you"}</span>
      <span class="text">{o.text}</span>
      {count > 0 && <small class="status">{count === 1 ? "1 file" : `${count} files`}</small>}
      {o.state === "failed" && (
        <span class="error" role="alert">
          {o.error}{" "}
          <button type="button" class="link" onClick={() => store.outbox.retry(o.key)}>
            Retry
          </button>
        </span>
      )}
    </li>
  );
}

/** "Bob is typing…", "Bob and Carol are typing…", "Several people are typing…". */
function typing(names: string[]): string {
  if (names.length === 0) {
    return "";
  }
  if (names.length > 3) {
    return "Several people are typing…";
  }
  const who = names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
  return `${who} ${names.length === 1 ? "is" : "are"} typing…`;
}

/** In a direct conversation, under the user's newest message: who has read it. */
function seen(store: Store, channelId: string, messages: Message[]): string {
  const readers = store.seenBy.get(channelId) ?? [];
  if (readers.length === 0 || messages.at(-1)?.senderId !== store.userId) {
    return "";
  }
  return ` Seen by ${readers.map((id) => store.names.get(id) ?? "someone").join(", ")}`;
}

function Presence({ status }: { status: string }) {
  return <span class={`presence ${status}`} role="img" aria-label={status} title={status} />;
}

/** The "@word" being typed just before the caret, if any. */
function mentionAt(text: string, caret: number): { start: number; typed: string } | undefined {
  const found = /(^|\s)@([\w.-]*)$/.exec(text.slice(0, caret));
  return found ? { start: caret - found[2].length - 1, typed: found[2] } : undefined;
}

function Composer({
  label,
  onSend,
  initial = "",
  onCancel,
  onType,
  suggest,
  onAttach,
}: {
  label: string;
  onSend: (text: string, fileIds: string[]) => void;
  initial?: string;
  onCancel?: () => void;
  onType?: () => void;
  /** Ways to finish a mention, for what was typed after "@". */
  suggest?: (typed: string) => Promise<Suggestion[]>;
  /** Uploads a file to attach; resolves to its id. Without it, no files. */
  onAttach?: (file: File) => Promise<string>;
}) {
  const [text, setText] = useState(initial);
  const [drafts, setDrafts] = useState<Draft[]>([]);
  const [hint, setHint] = useState<string>();
  const change = (key: string, update: Partial<Draft>) =>
    setDrafts((all) => all.map((d) => (d.key === key ? { ...d, ...update } : d)));
  const attach = (picked: FileList | null) => {
    for (const file of picked ? [...picked] : []) {
      const draft: Draft = { key: crypto.randomUUID(), name: file.name, size: file.size, state: "uploading" };
      setDrafts((all) => [...all, draft]);
      onAttach?.(file)
        .then((fileId) => change(draft.key, { state: "ready", fileId }))
        .catch((err: unknown) => change(draft.key, { state: "failed", error: say(err) }));
    }
  };
  const [options, setOptions] = useState<Suggestion[]>([]);
  const [active, setActive] = useState(0);
  const box = useRef<HTMLTextAreaElement>(null);
  const listId = useMemo(() => `mentions-${Math.random().toString(36).slice(2)}`, []);

  const lookUp = (value: string, caret: number) => {
    const mention = suggest ? mentionAt(value, caret) : undefined;
    if (!mention || !suggest) {
      setOptions([]);
      return;
    }
    suggest(mention.typed)
      .then((found) => {
        setOptions(found);
        setActive(0);
      })
      .catch(() => setOptions([]));
  };

  const pick = (choice: Suggestion) => {
    const caret = box.current?.selectionStart ?? text.length;
    const mention = mentionAt(text, caret);
    if (!mention) {
      return;
    }
    const next = `${text.slice(0, mention.start)}@${choice.insert} ${text.slice(caret)}`;
    setText(next);
    setOptions([]);
    const at = mention.start + choice.insert.length + 2;
    requestAnimationFrame(() => box.current?.setSelectionRange(at, at));
  };

  const onKey = (e: KeyboardEvent) => {
    if (options.length > 0) {
      // While suggestions show, the arrows choose, Enter or Tab takes one,
      // and Escape closes them.
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const step = e.key === "ArrowDown" ? 1 : options.length - 1;
        setActive((active + step) % options.length);
        return;
      }
      if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey) {
        e.preventDefault();
        const choice = options[active];
        if (choice) {
          pick(choice);
        }
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setOptions([]);
        return;
      }
    }
    // Enter sends; Shift+Enter starts a new line; Escape gives up an edit.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (drafts.some((d) => d.state === "uploading")) {
        setHint("Wait until the files are uploaded.");
        return;
      }
      const fileIds = drafts.flatMap((d) => (d.fileId ? [d.fileId] : []));
      if (text.trim() || fileIds.length > 0) {
        onSend(text, fileIds);
        setText("");
        setDrafts([]);
        setHint(undefined);
      }
    } else if (e.key === "Escape" && onCancel) {
      onCancel();
    }
  };
  return (
    <div class="composer">
      {options.length > 0 && (
        <ul id={listId} role="listbox" aria-label="People to mention" class="suggestions">
          {options.map((o, i) => (
            <li
              key={o.insert}
              id={`${listId}-${i}`}
              role="option"
              aria-selected={i === active}
              onMouseDown={(e) => {
                e.preventDefault();
                pick(o);
              }}
            >
              {o.label}
            </li>
          ))}
        </ul>
      )}
      <textarea
        ref={box}
        aria-label={label}
        placeholder={label}
        rows={2}
        value={text}
        aria-controls={suggest && options.length > 0 ? listId : undefined}
        aria-autocomplete={suggest ? "list" : undefined}
        aria-activedescendant={options.length > 0 ? `${listId}-${active}` : undefined}
        onInput={(e) => {
          const value = e.currentTarget.value;
          setText(value);
          lookUp(value, e.currentTarget.selectionStart ?? value.length);
          onType?.();
        }}
        onKeyDown={onKey}
      />
      {onAttach && (
        <label class="attach">
          Attach files
          <input
            type="file"
            multiple
            class="sr-only"
            onChange={(e) => {
              attach(e.currentTarget.files);
              e.currentTarget.value = "";
            }}
          />
        </label>
      )}
      {drafts.length > 0 && (
        <ul class="drafts" aria-label="Files to send">
          {drafts.map((d) => (
            <li key={d.key} class={d.state}>
              {d.name} <small>({formatSize(d.size)})</small>{" "}
              <small>{d.state === "uploading" ? "Uploading…" : d.state === "ready" ? "Ready" : d.error}</small>{" "}
              <button
                type="button"
                class="link"
                aria-label={`Remove ${d.name}`}
                onClick={() => setDrafts((all) => all.filter((x) => x.key !== d.key))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      {hint && (
        <p class="hint" role="status">
          {hint}
        </p>
      )}
    </div>
  );
}

/** A failure in words: the client's own errors as they are, the server's described. */
function say(err: unknown): string {
  return passkeyTrouble(err) ?? (err instanceof Error && !("code" in err) ? err.message : describe(err));
}

function useAction() {
  const [error, setError] = useState<string>();
  const run = (work: () => Promise<void>) => {
    setError(undefined);
    work().catch((err: unknown) => setError(say(err)));
  };
  return { error, run };
}

function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: ComponentChildren }) {
  return (
    <section class="dialog" aria-label={title}>
      <h2>{title}</h2>
      {children}
      <button type="button" class="link" onClick={onClose}>
        Close
      </button>
    </section>
  );
}

function NewChannel({ store, onClose }: { store: Store; onClose: () => void }) {
  const { error, run } = useAction();
  const submit = (e: TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    run(async () => {
      const id = await store.createChannel(String(form.get("name") ?? ""), form.get("private") === "on");
      onClose();
      await store.open(id);
    });
  };
  return (
    <Dialog title="New channel" onClose={onClose}>
      <form onSubmit={submit}>
        <label>
          Name
          <input name="name" required pattern="[a-z0-9_\-]{1,80}" title="lowercase letters, digits, - and _" autoFocus />
        </label>
        <label class="inline">
          <input name="private" type="checkbox" /> Private
        </label>
        <ErrorNote error={error} />
        <button type="submit">Create</button>
      </form>
    </Dialog>
  );
}

function AddPeople({ store, channelId, onClose }: { store: Store; channelId: string; onClose: () => void }) {
  return (
    <PeopleForm
      title="Add people"
      label="Usernames, separated by commas"
      action="Add"
      onClose={onClose}
      onPeople={async (names) => {
        await store.addPeople(channelId, names);
        onClose();
      }}
    />
  );
}

/** A dialog that asks for usernames and acts on them. */
function PeopleForm(props: {
  title: string;
  label: string;
  action: string;
  onClose: () => void;
  onPeople: (usernames: string[]) => Promise<void>;
}) {
  const { error, run } = useAction();
  const submit = (e: TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    const names = usernames(String(new FormData(e.currentTarget).get("people") ?? ""));
    run(() => props.onPeople(names));
  };
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <form onSubmit={submit}>
        <label>
          {props.label}
          <input name="people" required autoFocus />
        </label>
        <ErrorNote error={error} />
        <button type="submit">{props.action}</button>
      </form>
    </Dialog>
  );
}

/** A failure said where it happened: its own paragraph, or inline in a row. */
function ErrorNote({ error, inline }: { error: string | undefined; inline?: boolean }) {
  if (!error) {
    return null;
  }
  return inline ? (
    <span class="error" role="alert">
      {error}
    </span>
  ) : (
    <p class="error" role="alert">
      {error}
    </p>
  );
}

/** Turns on sign-in with a code from an authenticator app (TOTP). */
function TwoStep({ onClose }: { onClose: () => void }) {
  const { error, run } = useAction();
  const [secret, setSecret] = useState<{ secret: string; uri: string }>();
  const [recovery, setRecovery] = useState<string[]>();
  const confirm = (e: TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    const code = String(new FormData(e.currentTarget).get("code") ?? "");
    run(async () => setRecovery((await auth.confirmTotp({ code })).recoveryCodes));
  };
  return (
    <Dialog title="Two-step sign-in" onClose={onClose}>
      {recovery ? (
        <>
          <p>Two-step sign-in is on. Keep these recovery codes somewhere safe; each works once.</p>
          <ul aria-label="Recovery codes">
            {recovery.map((c) => (
              <li key={c}>
                <code>{c}</code>
              </li>
            ))}
          </ul>
        </>
      ) : secret ? (
        <form onSubmit={confirm}>
          <p>
            Add this key to your authenticator app: <code aria-label="Secret key">{secret.secret}</code>
          </p>
          <p>
            <a href={secret.uri}>Open in an authenticator app</a>
          </p>
          <label>
            The code it shows
            <input name="code" inputMode="numeric" autoComplete="one-time-code" pattern="[0-9]{6}" required autoFocus />
          </label>
          <button type="submit">Turn on</button>
        </form>
      ) : (
        <button type="button" onClick={() => run(async () => {
          const enrolled = await auth.enrollTotp({});
          setSecret({ secret: enrolled.secret, uri: enrolled.otpauthUri });
        })}>
          Set up an authenticator app
        </button>
      )}
      <ErrorNote error={error} />
    </Dialog>
  );
}

/** The person's passkeys: adds one made on this device, removes any. */
function Passkeys({ onClose }: { onClose: () => void }) {
  const { error, run } = useAction();
  const [keys, setKeys] = useState<Passkey[]>();
  const reload = async () => setKeys((await auth.listPasskeys({})).passkeys);
  useEffect(() => run(reload), []);
  const add = (e: TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const name = String(new FormData(form).get("name") ?? "");
    run(async () => {
      const begun = await auth.beginPasskeyRegistration({ name });
      const credentialJson = await createPasskey(begun.creationOptionsJson);
      await auth.finishPasskeyRegistration({ registrationId: begun.registrationId, credentialJson });
      form.reset();
      await reload();
    });
  };
  const when = (t: Passkey["createTime"]) => (t ? new Date(Number(t.seconds) * 1000).toLocaleDateString() : "");
  return (
    <Dialog title="Passkeys" onClose={onClose}>
      <p>A passkey signs you in with this device's screen lock or a security key, with no password to type.</p>
      {keys && keys.length === 0 && <p class="hint">No passkeys yet.</p>}
      {keys && keys.length > 0 && (
        <ul aria-label="Your passkeys" class="passkeys">
          {keys.map((k) => (
            <li key={k.credentialId}>
              <span>
                <strong>{k.name}</strong> added {when(k.createTime)}
                {k.lastUsedTime ? `, last used ${when(k.lastUsedTime)}` : ", not used yet"}
              </span>
              <button
                type="button"
                class="link"
                aria-label={`Remove ${k.name}`}
                onClick={() =>
                  run(async () => {
                    await auth.deletePasskey({ credentialId: k.credentialId });
                    await reload();
                  })
                }
              >
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      {passkeysSupported() ? (
        <form onSubmit={add}>
          <label>
            Name for the new passkey
            <input name="name" required maxLength={64} placeholder="Work laptop" />
          </label>
          <button type="submit">Add a passkey</button>
        </form>
      ) : (
        <p class="hint">This browser cannot make passkeys.</p>
      )}
      <ErrorNote error={error} />
    </Dialog>
  );
}

function usernames(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((n) => n.replace(/^@/, ""))
    .filter(Boolean);
}

function NewDirect({ store, onClose }: { store: Store; onClose: () => void }) {
  return (
    <PeopleForm
      title="New message"
      label="To (usernames, separated by commas)"
      action="Open"
      onClose={onClose}
      onPeople={async (names) => {
        const id = await store.openDirect(names);
        onClose();
        await store.open(id);
      }}
    />
  );
}

function Browse({ store, onClose }: { store: Store; onClose: () => void }) {
  const { error, run } = useAction();
  const [found, setFound] = useState<Awaited<ReturnType<Store["browse"]>>>([]);
  useEffect(() => run(async () => setFound(await store.browse(""))), []);
  return (
    <Dialog title="Browse channels" onClose={onClose}>
      <input
        aria-label="Channel name starts with"
        placeholder="Search by name"
        onInput={(e) => {
          const prefix = e.currentTarget.value;
          run(async () => setFound(await store.browse(prefix)));
        }}
      />
      <ErrorNote error={error} />
      <ul>
        {found.map((c) => (
          <li key={c.channelId}>
            #{c.name} <small>{c.memberCount} members</small>{" "}
            {store.conversations.has(c.channelId) ? (
              <em>joined</em>
            ) : (
              <button type="button" onClick={() => run(async () => store.join(c.channelId))}>
                Join
              </button>
            )}
          </li>
        ))}
      </ul>
    </Dialog>
  );
}

/** The messages a query finds, a page at a time; a hit opens its conversation. Below them, the files it finds. */
function SearchResults({ store, query, onClose }: { store: Store; query: string; onClose: () => void }) {
  const { error, run } = useAction();
  const [hits, setHits] = useState<SearchMessageHit[]>([]);
  const [total, setTotal] = useState<bigint | undefined>(undefined);
  const [next, setNext] = useState("");
  const more = (token: string) =>
    run(async () => {
      const page = await store.search(query, token);
      setHits((shown) => (token ? [...shown, ...page.hits] : page.hits));
      setTotal(page.total);
      setNext(page.next);
    });
  useEffect(() => more(""), [query]);
  const where = (hit: SearchMessageHit) => {
    const c = store.conversations.get(hit.channelId);
    return c ? (c.channel.name ? `#${c.channel.name}` : store.title(c.channel)) : "";
  };
  return (
    <Dialog title={`Search: ${query}`} onClose={onClose}>
      <p class="hint" role="status">
        {total === undefined ? "Searching…" : total === 0n ? "No messages found." : `${total} found`}
      </p>
      <p class="hint">
        <small>
          Try "exact words", deploy* for words starting so, -word to leave out, from:@name, in:#channel, has:file, has:link,
          is:thread, before:2026-01-31, after:2026-01-01.
        </small>
      </p>
      <ErrorNote error={error} />
      <ul class="hits">
        {hits.map((hit) => (
          <li key={hit.messageId}>
            <button type="button" class="hit" onClick={() => run(async () => store.openHit(hit).then(onClose))}>
              <span class="meta">
                {where(hit)} · {store.names.get(hit.senderId) ?? "someone"}
                {hit.threadId ? " · in a thread" : ""}
              </span>
              <span class="text">
                {hit.highlights[0]?.excerpts.length ? (
                  hit.highlights[0].excerpts.map((e, i) => <Marked key={i} excerpt={e} />)
                ) : (
                  hit.snippet
                )}
              </span>
            </button>
          </li>
        ))}
      </ul>
      {next && (
        <button type="button" onClick={() => more(next)}>
          More results
        </button>
      )}
      <FileResults store={store} query={query} />
    </Dialog>
  );
}

/** The files a query finds, a page at a time; a hit downloads the file. */
function FileResults({ store, query }: { store: Store; query: string }) {
  const { error, run } = useAction();
  const [hits, setHits] = useState<SearchFileHit[] | undefined>(undefined);
  const [next, setNext] = useState("");
  // Filters of messages (has:file, is:thread, ...) mean nothing for files.
  const [unfit, setUnfit] = useState(false);
  const more = (token: string) =>
    store
      .searchFiles(query, token)
      .then((page) => {
        setHits((shown) => (token && shown ? [...shown, ...page.hits] : page.hits));
        setNext(page.next);
      })
      .catch(() => setUnfit(true));
  useEffect(() => void more(""), [query]);
  if (unfit || hits === undefined || hits.length === 0) {
    return null;
  }
  const download = (hit: SearchFileHit) =>
    run(async () => {
      const link = document.createElement("a");
      link.href = await store.downloadUrl(hit.fileId, ThumbnailSize.UNSPECIFIED, true);
      link.download = hit.filename;
      link.click();
    });
  const where = (hit: SearchFileHit) => {
    const c = hit.channelId ? store.conversations.get(hit.channelId) : undefined;
    return c ? ` · ${c.channel.name ? `#${c.channel.name}` : store.title(c.channel)}` : "";
  };
  return (
    <section aria-labelledby="files-found">
      <h3 id="files-found">Files</h3>
      <ErrorNote error={error} />
      <ul class="hits" aria-label="Files found">
        {hits.map((hit) => {
          const name = hit.highlights.find((h) => h.field === "filename")?.excerpts[0];
          const about = hit.highlights.find((h) => h.field === "description")?.excerpts[0];
          return (
            <li key={hit.fileId}>
              <button type="button" class="hit" onClick={() => download(hit)}>
                <span class="text">{name ? <Marked excerpt={name} /> : hit.filename}</span>
                <span class="meta">
                  {store.names.get(hit.ownerId) ?? "someone"}
                  {where(hit)} · {formatSize(Number(hit.sizeBytes))} · download
                </span>
                {about && (
                  <span class="text">
                    <Marked excerpt={about} />
                  </span>
                )}
              </button>
            </li>
          );
        })}
      </ul>
      {next && (
        <button type="button" onClick={() => void more(next)}>
          More files
        </button>
      )}
    </section>
  );
}

/** An excerpt with its matches marked; the ranges index the text as JavaScript does. */
function Marked({ excerpt }: { excerpt: Excerpt }) {
  const parts: ComponentChildren[] = [];
  let at = 0;
  for (const [i, m] of excerpt.matches.entries()) {
    parts.push(excerpt.text.slice(at, m.start));
    parts.push(<mark key={i}>{excerpt.text.slice(m.start, m.end)}</mark>);
    at = m.end;
  }
  parts.push(excerpt.text.slice(at));
  return (
    <span class="excerpt">
      {excerpt.truncatedStart && "… "}
      {parts}
      {excerpt.truncatedEnd && " …"}
    </span>
  );
}
