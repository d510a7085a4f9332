// The client's own logic, without a browser: resume cursors, optimistic
// sends, badge counts and uploads. `npm test` compiles this and runs it with
// Node's test runner.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Badges } from "../src/badges.ts";
import { Cursor, Cursors, dropThrough, insertInOrder } from "../src/cursor.ts";
import { MAX_ATTEMPTS, Outbox, type Outgoing, type Sender } from "../src/outbox.ts";
import { creationOptions, fromBase64Url, requestOptions, toBase64Url } from "../src/passkeys.ts";
import { type Uploader, formatSize, sendableHeaders, upload } from "../src/uploads.ts";
import { Heights, anchorAt, rowAt, scrollFor, slice } from "../src/virtual.ts";

test("a cursor applies the next event, drops repeats and reports gaps", () => {
  const c = new Cursor(10);
  assert.equal(c.offer(11), "apply");
  assert.equal(c.offer(11), "repeat");
  assert.equal(c.offer(9), "repeat");
  assert.equal(c.offer(13), "gap", "12 is missing");
  assert.equal(c.position, 11, "a gap does not move the cursor");
  c.reach(12);
  assert.equal(c.offer(13), "apply");
  c.reach(5);
  assert.equal(c.position, 13, "reaching back never moves it back");
});

test("a resume sends every conversation's position", () => {
  const all = new Cursors();
  all.of("a").offer(1);
  all.of("b").reach(7);
  assert.deepEqual(all.snapshot(), [
    { channelId: "a", lastSeq: 1n },
    { channelId: "b", lastSeq: 7n },
  ]);
});

/** A sender that answers from a script: an error to throw, or a sequence. */
function scripted(answers: (Error | number)[]): Sender & { keys: string[]; files: (string[] | undefined)[] } {
  const keys: string[] = [];
  const files: (string[] | undefined)[] = [];
  return {
    keys,
    files,
    async send(o: Outgoing) {
      keys.push(o.key);
      files.push(o.fileIds);
      const next = answers.shift();
      if (next instanceof Error || next === undefined) {
        throw next ?? new Error("no answer");
      }
      return { messageId: `m${next}`, seq: next };
    },
    isTransient: (err) => err instanceof Error && err.message === "unavailable",
    describe: (err) => `said: ${(err as Error).message}`,
    sleep: async () => undefined,
  };
}

async function settled(outbox: Outbox, channelId: string, until: (o: Outgoing[]) => boolean): Promise<void> {
  for (let i = 0; i < 100 && !until(outbox.unconfirmed(channelId)); i++) {
    await new Promise((r) => setTimeout(r, 0));
  }
}

test("an optimistic send retries transient failures with one key", async () => {
  const sender = scripted([new Error("unavailable"), new Error("unavailable"), 42]);
  const seen: Outgoing[] = [];
  const outbox = new Outbox(sender, (o) => seen.push(o));
  const posted = outbox.post("c", "hello");
  assert.equal(posted.state, "sending");
  assert.equal(outbox.unconfirmed("c").length, 1, "shown before the server answers");
  await settled(outbox, "c", (o) => o.length === 0);
  assert.equal(seen.at(-1)?.state, "sent");
  assert.equal(seen.at(-1)?.seq, 42);
  assert.deepEqual(sender.keys, [posted.key, posted.key, posted.key], "every attempt uses the same key");
  outbox.arrived("c", "m42", "hello");
  assert.equal(outbox.unconfirmed("c").length, 0);
});

test("a message that arrives before its send's answer is shown once", async () => {
  let answer: (v: { messageId: string; seq: number }) => void = () => undefined;
  const sender: Sender = {
    send: () => new Promise((resolve) => (answer = resolve)),
    isTransient: () => false,
    describe: () => "",
    sleep: async () => undefined,
  };
  const outbox = new Outbox(sender, () => undefined);
  outbox.post("c", "first", "t");
  outbox.post("c", "second", "t");
  await settled(outbox, "c", (o) => o[0]?.attempts === 1);
  // Another thread's message with the same text is not this one.
  outbox.arrived("c", "m0", "first", "other");
  assert.equal(outbox.unconfirmed("c").length, 2);
  outbox.arrived("c", "m1", "first", "t");
  assert.deepEqual(
    outbox.unconfirmed("c").map((o) => o.text),
    ["second"],
    "the stream settled the send in flight; the next still waits",
  );
  answer({ messageId: "m1", seq: 1 });
  await settled(outbox, "c", (o) => o[0]?.attempts === 1 && o[0]?.text === "second");
  assert.deepEqual(outbox.unconfirmed("c").map((o) => o.text), ["second"]);
});

test("a send that cannot succeed is shown as failed, and a retry keeps its key", async () => {
  const sender = scripted([new Error("too long"), 7]);
  const seen: Outgoing[] = [];
  const outbox = new Outbox(sender, (o) => seen.push(o));
  const posted = outbox.post("c", "x");
  await settled(outbox, "c", (o) => o[0]?.state === "failed");
  assert.equal(outbox.unconfirmed("c")[0]?.error, "said: too long");
  outbox.retry(posted.key);
  await settled(outbox, "c", (o) => o.length === 0);
  assert.deepEqual(sender.keys, [posted.key, posted.key]);
});

test("transient failures give up after the last attempt", async () => {
  const sender = scripted(Array.from({ length: MAX_ATTEMPTS }, () => new Error("unavailable")));
  const outbox = new Outbox(sender, () => undefined);
  outbox.post("c", "x");
  await settled(outbox, "c", (o) => o[0]?.state === "failed");
  assert.equal(sender.keys.length, MAX_ATTEMPTS);
});

test("badges take a snapshot, then changes, and show mentions first", () => {
  const badges = new Badges();
  const entry = (channelId: string, unread: number, mentions: number, muted = false) => ({
    channelId,
    unreadCount: BigInt(unread),
    mentionCount: BigInt(mentions),
    muted,
  });
  badges.apply({
    snapshot: true,
    channels: [entry("a", 3, 0), entry("b", 5, 1), entry("m", 0, 0, true)],
    removedChannelIds: [],
    totalUnread: 8n,
    totalMentions: 1n,
  });
  assert.equal(Badges.label(badges.of("a")), "3");
  assert.equal(Badges.label(badges.of("b")), "@1");
  assert.equal(Badges.label(badges.of("m")), "");
  assert.equal(badges.title(), "(1) ");
  badges.apply({ snapshot: false, channels: [entry("a", 0, 0)], removedChannelIds: ["b"], totalUnread: 0n, totalMentions: 0n });
  assert.equal(Badges.label(badges.of("a")), "");
  assert.equal(Badges.label(badges.of("b")), "", "a conversation left shows nothing");
  assert.equal(badges.title(), "");
  badges.apply({ snapshot: true, channels: [], removedChannelIds: [], totalUnread: 0n, totalMentions: 0n });
  assert.equal(Badges.label(badges.of("a")), "");
});

test("messages to one conversation are sent in the order they were typed", async () => {
  const order: string[] = [];
  let release: () => void = () => undefined;
  const first = new Promise<void>((r) => (release = r));
  const sender: Sender = {
    async send(o) {
      if (o.text === "one") {
        await first;
      }
      order.push(o.text);
      return { messageId: o.text, seq: order.length };
    },
    isTransient: () => false,
    describe: () => "",
    sleep: async () => undefined,
  };
  const outbox = new Outbox(sender, () => undefined);
  outbox.post("c", "one");
  outbox.post("c", "two");
  outbox.post("other", "elsewhere");
  await settled(outbox, "other", (o) => o.length === 0);
  assert.deepEqual(order, ["elsewhere"], "another conversation does not wait");
  release();
  await settled(outbox, "c", (o) => o.length === 0);
  assert.deepEqual(order, ["elsewhere", "one", "two"]);
});

test("a virtualized list renders the rows that meet the viewport, and pads for the rest", () => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `m${i}`);
  const heights = new Heights(50);
  const tops = heights.offsets(keys);
  assert.equal(tops[10_000], 500_000, "the whole list, estimated");
  const middle = slice(tops, 250_000, 800, 100);
  assert.deepEqual([middle.start, middle.end], [4_998, 5_018]);
  assert.equal(middle.before, 4_998 * 50);
  assert.equal(middle.before + (middle.end - middle.start) * 50 + middle.after, 500_000, "nothing lost or doubled");
  const bottom = slice(tops, 500_000 - 800, 800, 100);
  assert.equal(bottom.end, 10_000);
  assert.equal(bottom.after, 0);
  const top = slice(tops, 0, 800, 100);
  assert.deepEqual([top.start, top.end, top.before], [0, 18, 0]);
  assert.deepEqual(slice(new Heights(50).offsets([]), 0, 800, 100), { start: 0, end: 0, before: 0, after: 0 });
});

test("measured rows move what follows them", () => {
  const keys = ["a", "b", "c"];
  const heights = new Heights(40);
  assert.equal(heights.measure("b", 100), true);
  assert.equal(heights.measure("b", 100), false, "the same height again changes nothing");
  assert.equal(heights.measure("c", 40), true, "an estimate confirmed is still recorded");
  assert.deepEqual(heights.offsets(keys), [0, 40, 140, 180]);
  assert.equal(rowAt(heights.offsets(keys), 139), 1);
  assert.equal(rowAt(heights.offsets(keys), 140), 2);
  assert.equal(rowAt(heights.offsets(keys), 10_000), 2, "past the end is the last row");
});

test("the first row on screen stays put when older rows arrive above it", () => {
  const heights = new Heights(50);
  const keys = ["m3", "m4", "m5", "m6"];
  const anchor = anchorAt(keys, heights.offsets(keys), 120);
  assert.deepEqual(anchor, { key: "m5", offset: -20 });
  // An older page of two rows, one of them tall, arrives above.
  const more = ["m1", "m2", ...keys];
  heights.measure("m1", 200);
  const y = scrollFor(more, heights.offsets(more), anchor!);
  assert.equal(y, 200 + 50 + 100 + 20, "the anchor row's new top, less its offset");
  assert.equal(scrollFor(["x"], heights.offsets(["x"]), anchor!), undefined, "a row no longer there anchors nothing");
});

test("a conversation's sequences stay in order whatever order messages arrive in", () => {
  const order: bigint[] = [];
  for (const seq of [10n, 11n, 14n, 12n, 3n, 1n, 2n, 13n, 20n]) {
    insertInOrder(order, seq);
  }
  assert.deepEqual(order, [1n, 2n, 3n, 10n, 11n, 12n, 13n, 14n, 20n]);
});

test("an upload asks for a URL, puts the bytes with the headers a page may send, then confirms", async () => {
  const calls: string[] = [];
  const api: Uploader = {
    async createUploadUrl(request) {
      calls.push(`create ${request.filename} ${request.sizeBytes} ${request.mimeType} ${request.channelId}`);
      return {
        uploadUrl: "http://node/blobs/uploads/f1?signature=x",
        uploadMethod: "PUT",
        uploadHeaders: { "Content-Type": "image/png", "Content-Length": "5" },
        file: { fileId: "f1" },
      };
    },
    async confirmUpload(request) {
      calls.push(`confirm ${request.fileId}`);
      return {};
    },
    async put(url, init) {
      calls.push(`${init.method} ${url} ${JSON.stringify(init.headers)} ${init.body.size}`);
      return { ok: true, status: 200 };
    },
  };
  const file = Object.assign(new Blob(["12345"], { type: "image/png" }), { name: "dot.png" });
  assert.equal(await upload(api, file, "c1"), "f1");
  assert.deepEqual(calls, [
    "create dot.png 5 image/png c1",
    'PUT http://node/blobs/uploads/f1?signature=x {"Content-Type":"image/png"} 5',
    "confirm f1",
  ]);
});

test("an upload the store refuses is never confirmed", async () => {
  let confirmed = false;
  const api: Uploader = {
    createUploadUrl: async () => ({ uploadUrl: "u", uploadMethod: "", uploadHeaders: {}, file: { fileId: "f" } }),
    confirmUpload: async () => {
      confirmed = true;
    },
    put: async (_url, init) => {
      assert.equal(init.method, "PUT", "PUT unless told otherwise");
      return { ok: false, status: 403 };
    },
  };
  const file = Object.assign(new Blob(["x"]), { name: "x.bin" });
  await assert.rejects(upload(api, file, "c"), /HTTP 403/);
  assert.equal(confirmed, false);
});

test("headers the browser owns are left to it", () => {
  assert.deepEqual(sendableHeaders({ "content-length": "3", Host: "h", "Content-Type": "text/plain" }), {
    "Content-Type": "text/plain",
  });
});

test("sizes read the way people say them", () => {
  assert.equal(formatSize(999), "999 B");
  assert.equal(formatSize(1_000), "1.0 kB");
  assert.equal(formatSize(1_234_567), "1.2 MB");
  assert.equal(formatSize(45_600_000), "46 MB");
  assert.equal(formatSize(3_000_000_000_000_000), "3000 TB");
});

test("a message with files keeps them through its retries", async () => {
  const sender = scripted([new Error("unavailable"), 5]);
  const seen: Outgoing[] = [];
  const outbox = new Outbox(sender, (o) => seen.push(o));
  outbox.post("c", "", undefined, ["f1", "f2"]);
  await settled(outbox, "c", (o) => o.length === 0);
  assert.deepEqual(
    seen.map((o) => [o.state, o.fileIds]),
    [["sent", ["f1", "f2"]]],
  );
  assert.deepEqual(sender.files, [
    ["f1", "f2"],
    ["f1", "f2"],
  ]);
});

test("retention drops every message up to its sequence, replies included", () => {
  const c = {
    messages: new Map([
      [3n, "a"],
      [5n, "b"],
      [9n, "c"],
    ]),
    order: [3n, 5n, 9n],
    threads: new Map([
      [
        "t",
        new Map([
          [4n, "r1"],
          [10n, "r2"],
        ]),
      ],
    ]),
  };
  dropThrough(c, 5n);
  assert.deepEqual(c.order, [9n]);
  assert.deepEqual([...c.messages.keys()], [9n]);
  assert.deepEqual([...(c.threads.get("t")?.keys() ?? [])], [10n]);
});

test("passkey options arrive as base64url JSON and reach the browser as bytes", () => {
  const bytes = new Uint8Array([0, 1, 250, 251, 252, 253, 254, 255]);
  assert.equal(toBase64Url(bytes), "AAH6-_z9_v8");
  assert.deepEqual([...fromBase64Url("AAH6-_z9_v8")], [...bytes]);
  assert.deepEqual([...fromBase64Url("AAH6-_z9_v8=")], [...bytes], "padding is tolerated");
  assert.equal(toBase64Url(bytes.subarray(2, 4)), "-vs", "a view encodes only its own bytes");
  const created = creationOptions(
    JSON.stringify({
      publicKey: {
        rp: { id: "localhost", name: "Colink" },
        user: { id: "AQID", name: "ada", displayName: "ada" },
        challenge: "BAUG",
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        excludeCredentials: [{ type: "public-key", id: "Bwg" }],
        authenticatorSelection: { residentKey: "preferred", userVerification: "required" },
      },
    }),
  );
  assert.deepEqual([...new Uint8Array(created.user.id as ArrayBuffer)], [1, 2, 3]);
  assert.deepEqual([...new Uint8Array(created.challenge as ArrayBuffer)], [4, 5, 6]);
  assert.deepEqual([...new Uint8Array(created.excludeCredentials?.[0]?.id as ArrayBuffer)], [7, 8]);
  assert.equal(created.authenticatorSelection?.residentKey, "preferred");
  const request = requestOptions(JSON.stringify({ publicKey: { challenge: "CQo", allowCredentials: [] }, mediation: "conditional" }));
  assert.deepEqual([...new Uint8Array(request.challenge as ArrayBuffer)], [9, 10]);
  assert.deepEqual(request.allowCredentials, []);
});
