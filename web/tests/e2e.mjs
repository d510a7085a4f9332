// End-to-end: people in Chromium against a real `colink serve`.
//
//   node tests/e2e.mjs            (from web/, after `vite build` and a cargo build)
//
// E2E_BINARY and CHROMIUM name the node and the browser (see harness.mjs).
// With ENVOY naming Envoy's binary, the browser reaches the node through
// Envoy (envoy/envoy.yaml) instead. E2E_CLAMD names the clamd that uploads
// are scanned with.
// Screenshots go to web/test-results/.

import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { crc32, deflateSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { clamdGate, launchBrowser, startNode } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const results = join(here, "..", "test-results", process.env.ENVOY ? "envoy" : "direct");
const axeSource = readFileSync(join(here, "..", "node_modules", "axe-core", "axe.min.js"), "utf8");

let failures = 0;
/** Pages to photograph when a step fails. */
const pages = {};
async function step(name, work) {
  const started = Date.now();
  try {
    await work();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    failures++;
    console.log(`FAIL ${name}: ${err?.stack ?? err}`);
    for (const [who, page] of Object.entries(pages)) {
      await page.screenshot({ path: join(results, `failed-${who}.png`) }).catch(() => undefined);
    }
    throw err;
  }
}

function expect(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function signUp(page, url, name) {
  await page.goto(url);
  await page.getByRole("button", { name: "New here? Create an account" }).click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Email").fill(`${name}@example.test`);
  await page.getByLabel("Display name").fill(name[0].toUpperCase() + name.slice(1));
  await page.getByLabel("Password (at least 8 characters)").fill("correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("navigation", { name: "Conversations" }).waitFor();
  await page.locator(".dot.live").waitFor();
}

async function createChannel(page, name) {
  await page.getByRole("button", { name: "New channel" }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("region", { name: `#${name}` }).waitFor();
}

async function openChannel(page, name) {
  await page.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: new RegExp(`^#${name}`) }).click();
  await page.getByRole("region", { name: `#${name}` }).waitFor();
}

async function send(page, channel, text) {
  const box = page.getByLabel(`Message ${/^[a-z]/.test(channel) ? "#" : ""}${channel}`);
  await box.fill(text);
  await box.press("Enter");
}

async function texts(page) {
  return page.locator("[data-testid=messages] li .text").allTextContents();
}

async function waitForText(page, text) {
  await page.locator("[data-testid=messages] li .text", { hasText: text }).first().waitFor({ timeout: 10_000 });
}

/** The RFC 6238 code of a base32 secret for the 30-second step `step`. */
/**
 * Calls an AdminService method as the user signed in on `page`, through the
 * node's gRPC-Web endpoint, with a request encoded by hand (the admin
 * screens are not in this client); answers the response message's bytes.
 * `fields` are [number, string] or [number, integer] pairs, in order.
 */
async function callAdmin(page, method, fields) {
  const answer = await page.evaluate(
    async ({ method, fields }) => {
      const token = JSON.parse(sessionStorage.getItem("colink.session")).accessToken;
      const utf8 = new TextEncoder();
      const body = fields.flatMap(([number, value]) => {
        if (typeof value === "number") {
          return [number << 3, value];
        }
        const bytes = utf8.encode(value);
        return [(number << 3) | 2, bytes.length, ...bytes];
      });
      const frame = new Uint8Array(5 + body.length);
      new DataView(frame.buffer).setUint32(1, body.length);
      frame.set(body, 5);
      const response = await fetch(`/colink.admin.v1.AdminService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: `Bearer ${token}` },
        body: frame,
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const text = new TextDecoder().decode(bytes);
      return { http: response.status, status: response.headers.get("grpc-status"), text, bytes: [...bytes] };
    },
    { method, fields },
  );
  const ok = answer.http === 200 && (answer.status === "0" || /grpc-status:\s*0\b/.test(answer.text));
  expect(ok, `${method} was refused: ${answer.text}`);
  const length = Buffer.from(answer.bytes.slice(1, 5)).readUInt32BE(0);
  return Buffer.from(answer.bytes.slice(5, 5 + length));
}

/** Moderates a message (ModerateMessageRequest: message id, action, reason). */
async function moderate(page, messageId, action, reason) {
  await callAdmin(page, "ModerateMessage", [[1, messageId], [2, action], ...(reason ? [[3, reason]] : [])]);
}

/** The first string field inside the first embedded message of `bytes`. */
function innerId(bytes) {
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[at++];
      value |= (byte & 0x7f) << shift;
      if (byte < 0x80) {
        return value;
      }
    }
  };
  varint(); // the embedded message's tag
  varint(); // its length
  varint(); // the string's tag
  const length = varint();
  return bytes.subarray(at, at + length).toString("utf8");
}

function totp(secret, step) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const ch of secret.replace(/=+$/, "").toUpperCase()) {
    bits += alphabet.indexOf(ch).toString(2).padStart(5, "0");
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const digest = createHmac("sha1", key).update(counter).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  return String((digest.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

async function accessible(page, view) {
  await page.addScriptTag({ content: axeSource });
  const found = await page.evaluate(async () => {
    const result = await globalThis.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id}: ${v.help} (${v.nodes.length})`);
  });
  expect(found.length === 0, `accessibility problems on ${view}: ${found.join("; ")}`);
}

/** A PNG of a sunset-like gradient, `width` × `height` pixels. */
function png(width, height) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row.set([255 - (y * 128) / height, 96 + (x * 64) / width, (y * 200) / height], 1 + x * 3);
    }
    rows.push(row);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const pixels = deflateSync(Buffer.concat(rows));
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", pixels), chunk("IEND", Buffer.alloc(0))]);
}

const scanner = await clamdGate();
const node = await startNode({ envoy: process.env.ENVOY, env: { COLINK_FILES__SCANNER__CLAMD: scanner.url } });
const browser = await launchBrowser();
mkdirSync(results, { recursive: true });
try {
  const aliceContext = await browser.newContext();
  const bobContext = await browser.newContext();
  const alice = await aliceContext.newPage();
  const bob = await bobContext.newPage();
  Object.assign(pages, { alice, bob });

  await step("sign-up", async () => {
    await alice.goto(node.url);
    await accessible(alice, "the sign-in page");
    await alice.screenshot({ path: join(results, "sign-in.png") });
    await signUp(alice, node.url, "alice");
    await signUp(bob, node.url, "bob");
  });

  await step("alice creates a channel and adds bob; they chat both ways", async () => {
    await createChannel(alice, "team");
    await send(alice, "team", "hello bob");
    await waitForText(alice, "hello bob");
    await alice.getByRole("button", { name: "Add people" }).click();
    await alice.getByLabel("Usernames, separated by commas").fill("bob");
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await openChannel(bob, "team");
    await waitForText(bob, "hello bob");
    await send(bob, "team", "hi alice");
    await waitForText(alice, "hi alice");
    await send(alice, "team", "line one\nline two");
    await waitForText(bob, "line two");
    await accessible(alice, "a conversation");
    await alice.screenshot({ path: join(results, "conversation.png") });
  });

  await step("a thread reply, a reaction, a pin and a recall appear live on the other side", async () => {
    const hello = (page) => page.locator("[data-testid=messages] li", { hasText: "hello bob" }).first();
    await hello(alice).hover();
    await hello(alice).getByRole("button", { name: "Reply" }).click();
    const reply = alice.getByLabel("Reply in thread");
    await reply.fill("a thread reply");
    await reply.press("Enter");
    await alice.getByTestId("thread").getByText("a thread reply").waitFor();
    await hello(bob).getByRole("button", { name: "1 reply" }).click();
    await bob.getByTestId("thread").getByText("a thread reply").waitFor();

    await hello(bob).hover();
    await hello(bob).getByRole("button", { name: "React" }).click();
    await hello(bob).getByRole("button", { name: "🎉" }).click();
    await hello(alice).getByRole("button", { name: "🎉 1" }).waitFor();
    // Pinning and recalling show on the other side too.
    await hello(alice).hover();
    await hello(alice).getByRole("button", { name: "Pin", exact: true }).click();
    await hello(bob).getByText("· Pinned").waitFor();
    await send(alice, "team", "oops, wrong channel");
    await waitForText(bob, "oops, wrong channel");
    const oops = alice.locator("[data-testid=messages] li", { hasText: "oops, wrong channel" }).first();
    await oops.hover();
    await oops.getByRole("button", { name: "Recall" }).click();
    await waitForText(bob, "This message was recalled.");
    expect(!(await texts(bob)).includes("oops, wrong channel"), "a recalled message is gone for everyone");
    await accessible(bob, "a thread");
    await bob.screenshot({ path: join(results, "thread-and-reaction.png") });
  });

  await step("a moderator hides a message: bob sees where it was, then the message again once restored", async () => {
    await send(alice, "team", "a remark to hide");
    await waitForText(bob, "a remark to hide");
    const row = (page) => page.locator("[data-testid=messages] li", { hasText: "a remark to hide" }).first();
    // The confirmed row, which carries the message's id: bob may see the
    // message before alice's own answer replaces her pending row.
    const confirmed = alice.locator("[data-testid=messages] li[data-key]", { hasText: "a remark to hide" }).first();
    const id = await confirmed.getAttribute("data-key");
    // alice, the first account, is the workspace admin.
    await moderate(alice, id, 2, "off topic");
    await waitForText(bob, "This message was hidden by a moderator.");
    expect(!(await texts(bob)).includes("a remark to hide"), "a hidden message shows without its text");
    await row(alice).getByText("· Hidden by a moderator").waitFor();
    await bob.screenshot({ path: join(results, "hidden-message.png") });
    await moderate(alice, id, 3, "");
    await waitForText(bob, "a remark to hide");
  });

  await step("a moderator mutes bob in a channel: he reads but has no composer there until it is lifted", async () => {
    const userId = await bob.evaluate(() => JSON.parse(sessionStorage.getItem("colink.session")).userId);
    const channelId = await alice.getByRole("region", { name: "#team" }).getAttribute("data-channel-id");
    // CreateSanctionRequest: user, kind 2 (mute), channel, reason.
    const created = await callAdmin(alice, "CreateSanction", [[1, userId], [2, 2], [3, channelId], [4, "cool off"]]);
    const sanctionId = innerId(created);
    await bob.reload();
    await openChannel(bob, "team");
    const team = bob.getByRole("region", { name: "#team" });
    await team.getByRole("status").getByText("A moderator muted you here").waitFor();
    expect((await team.getByLabel("Message #team").count()) === 0, "a muted member has no composer");
    await accessible(bob, "a muted channel");
    await bob.screenshot({ path: join(results, "muted.png") });
    await callAdmin(alice, "LiftSanction", [[1, sanctionId], [2, "apologised"]]);
    await bob.reload();
    await openChannel(bob, "team");
    await send(bob, "team", "sorry, all");
    await waitForText(alice, "sorry, all");
  });

  await step("a photo is checked for viruses, then shown with its thumbnail and downloaded, on both sides", async () => {
    const photo = png(480, 320);
    const team = alice.getByRole("region", { name: "#team" });
    await team.getByLabel("Attach files").setInputFiles({ name: "sunset.png", mimeType: "image/png", buffer: photo });
    await team.getByRole("list", { name: "Files to send" }).getByText("Ready").waitFor();
    await send(alice, "team", "the view from the office");
    const posted = (page) => page.locator("[data-testid=messages] li", { hasText: "the view from the office" }).first();
    // clamd cannot be reached yet: the file waits, unserved, on both sides.
    for (const page of [alice, bob]) {
      await posted(page).locator(".attachment", { hasText: "Checking for viruses…" }).waitFor({ timeout: 10_000 });
    }
    expect((await posted(bob).getByRole("button", { name: "Download sunset.png" }).count()) === 0, "no download while scanning");
    await bob.screenshot({ path: join(results, "attachment-scanning.png") });
    scanner.open = true;
    for (const page of [alice, bob]) {
      const thumbnail = posted(page).getByRole("img", { name: "sunset.png" });
      await thumbnail.waitFor({ timeout: 20_000 });
      await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, await thumbnail.elementHandle());
      const size = await thumbnail.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
      expect(size[0] === 360 && size[1] === 240, `the thumbnail is ${size.join("×")}`);
      // The list still shows its end, the grown row whole.
      await page.waitForFunction(() => {
        const list = document.querySelector(".messages .scroller");
        return list !== null && list.scrollHeight - list.scrollTop - list.clientHeight < 2;
      });
    }
    const [download] = await Promise.all([
      bob.waitForEvent("download"),
      posted(bob).getByRole("button", { name: "Download sunset.png" }).click(),
    ]);
    expect(download.suggestedFilename() === "sunset.png", `downloaded as ${download.suggestedFilename()}`);
    const got = readFileSync(await download.path());
    expect(Buffer.compare(got, photo) === 0, `downloaded ${got.length} bytes, not the ${photo.length} uploaded`);
    await accessible(bob, "an attachment");
    await bob.screenshot({ path: join(results, "attachment.png") });
  });

  await step("a mention is completed from the channel's members, by keyboard", async () => {
    const box = alice.getByLabel("Message #team");
    await box.pressSequentially("thanks @bo");
    const options = alice.getByRole("listbox", { name: "People to mention" });
    await options.getByRole("option", { name: "Bob (@bob)" }).waitFor();
    await accessible(alice, "mention suggestions");
    await box.press("Enter");
    expect((await box.inputValue()) === "thanks @bob ", `the composer holds ${JSON.stringify(await box.inputValue())}`);
    await box.pressSequentially("for the review");
    await box.press("Enter");
    await waitForText(alice, "thanks @bob for the review");
  });

  await step("bob browses and joins a public channel", async () => {
    await createChannel(alice, "random");
    await bob.getByRole("button", { name: "Browse channels" }).click();
    const browse = bob.getByRole("region", { name: "Browse channels" });
    await browse.getByRole("listitem").filter({ hasText: "#random" }).getByRole("button", { name: "Join" }).click();
    await openChannel(bob, "random");
  });

  await step("bob's badge counts up elsewhere and clears when he opens the channel", async () => {
    await createChannel(bob, "elsewhere");
    await openChannel(alice, "team");
    await send(alice, "team", "are you there?");
    await send(alice, "team", "ping");
    const badge = bob.getByTestId("badge-team");
    await badge.filter({ hasText: /^2$/ }).waitFor({ timeout: 10_000 });
    await bob.screenshot({ path: join(results, "badge.png") });
    await openChannel(bob, "team");
    await badge.waitFor({ state: "detached", timeout: 10_000 });
  });

  await step("a direct message: presence, typing and a read receipt", async () => {
    await alice.getByRole("button", { name: "New message" }).click();
    await alice.getByLabel("To (usernames, separated by commas)").fill("bob");
    await alice.getByRole("button", { name: "Open" }).click();
    const dm = alice.getByRole("region", { name: "Bob" });
    await dm.waitFor();
    await alice.getByRole("navigation", { name: "Conversations" }).getByRole("img", { name: "online" }).waitFor();
    await send(alice, "Bob", "a word in private");
    await waitForText(alice, "a word in private");
    const inbox = bob.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: /Alice/ });
    await inbox.click();
    await waitForText(bob, "a word in private");
    await alice.getByText("Seen by Bob").waitFor({ timeout: 10_000 });
    await bob.getByLabel("Message Alice").pressSequentially("typing slowly");
    await alice.getByText("Bob is typing…").waitFor({ timeout: 10_000 });
    await accessible(alice, "a direct message");
    await alice.screenshot({ path: join(results, "direct-message.png") });
  });

  await step("bob searches: the match is marked, and the hit opens its conversation", async () => {
    await openChannel(bob, "random");
    const box = bob.getByRole("search").getByLabel("Search messages and files");
    const found = bob.getByRole("region", { name: "Search: review" });
    const hit = found.getByRole("button", { name: /for the review/ });
    // Indexing follows sending closely, not at once: ask again until found.
    for (let tries = 0; tries < 40; tries++) {
      await box.fill("review");
      await box.press("Enter");
      await found.getByRole("status").filter({ hasText: /found/ }).waitFor();
      if ((await hit.count()) > 0) {
        break;
      }
      await found.getByRole("button", { name: "Close" }).click();
      await bob.waitForTimeout(250);
    }
    await hit.waitFor({ timeout: 1_000 });
    expect((await hit.locator("mark").allTextContents()).join() === "review", "the match is marked");
    await accessible(bob, "search results");
    await bob.screenshot({ path: join(results, "search.png") });
    await hit.click();
    await bob.getByRole("region", { name: "#team" }).waitFor();
  });

  await step("bob finds alice's photo by its name and downloads it from the results", async () => {
    const box = bob.getByRole("search").getByLabel("Search messages and files");
    await box.fill("sunset");
    await box.press("Enter");
    const found = bob.getByRole("region", { name: "Search: sunset" });
    const file = found.getByRole("list", { name: "Files found" }).getByRole("button", { name: /sunset\.png/ });
    await file.waitFor({ timeout: 10_000 });
    expect((await file.locator("mark").allTextContents()).join() === "sunset", "the match in the name is marked");
    await accessible(bob, "files found");
    await bob.screenshot({ path: join(results, "search-files.png") });
    const [download] = await Promise.all([bob.waitForEvent("download"), file.click()]);
    expect(download.suggestedFilename() === "sunset.png", `downloaded as ${download.suggestedFilename()}`);
    await found.getByRole("button", { name: "Close" }).click();
  });

  await step("two-step sign-in: set up, then sign in with a code", async () => {
    const carolContext = await browser.newContext();
    const carol = await carolContext.newPage();
    pages.carol = carol;
    await signUp(carol, node.url, "carol");
    await carol.getByRole("button", { name: "Two-step sign-in" }).click();
    await carol.getByRole("button", { name: "Set up an authenticator app" }).click();
    const secret = await carol.getByLabel("Secret key").textContent();
    const step = Math.floor(Date.now() / 30_000);
    await carol.getByLabel("The code it shows").fill(totp(secret, step));
    await carol.getByRole("button", { name: "Turn on" }).click();
    await carol.getByRole("list", { name: "Recovery codes" }).waitFor();
    await carol.getByRole("button", { name: "Sign out" }).click();
    await carol.getByLabel("Username or email").fill("carol");
    await carol.getByLabel("Password").fill("correct horse battery");
    await carol.getByRole("button", { name: "Sign in" }).click();
    // A code is accepted once: the next step's, within the allowed drift.
    await carol.getByLabel("Code from your authenticator app").fill(totp(secret, step + 1));
    await carol.getByRole("button", { name: "Verify" }).click();
    await carol.getByRole("navigation", { name: "Conversations" }).waitFor();
    await carolContext.close();
  });

  await step("passkeys: add one, sign in with it alone, answer the second step with it, remove it", async () => {
    // A passkey belongs to a site's domain, so this page is on localhost
    // (the node's default relying party), not on an IP address.
    const url = node.url.replace("127.0.0.1", "localhost");
    const doraContext = await browser.newContext();
    const dora = await doraContext.newPage();
    pages.dora = dora;
    // Chromium's virtual authenticator: a platform authenticator that
    // holds discoverable passkeys and verifies its user.
    const cdp = await doraContext.newCDPSession(dora);
    await cdp.send("WebAuthn.enable");
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
    });
    await signUp(dora, url, "dora");
    await dora.getByRole("button", { name: "Passkeys" }).click();
    const dialog = dora.getByRole("region", { name: "Passkeys" });
    await dialog.getByText("No passkeys yet.").waitFor();
    await dialog.getByLabel("Name for the new passkey").fill("This laptop");
    await dialog.getByRole("button", { name: "Add a passkey" }).click();
    await dialog.getByRole("list", { name: "Your passkeys" }).getByText("This laptop").waitFor();
    await accessible(dora, "the passkeys dialog");
    await dora.screenshot({ path: join(results, "passkeys.png") });
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    expect(credentials.length === 1 && credentials[0].isResidentCredential, "one discoverable passkey on the authenticator");

    // Signed out, the passkey alone signs dora in: no username, no password.
    await dora.getByRole("button", { name: "Sign out" }).click();
    await dora.getByRole("button", { name: "Use a passkey", exact: true }).click();
    await dora.getByRole("navigation", { name: "Conversations" }).getByText("dora").waitFor();

    // With two-step sign-in on, the passkey answers the second step.
    await dora.getByRole("button", { name: "Two-step sign-in" }).click();
    await dora.getByRole("button", { name: "Set up an authenticator app" }).click();
    const secret = await dora.getByLabel("Secret key").textContent();
    await dora.getByLabel("The code it shows").fill(totp(secret, Math.floor(Date.now() / 30_000)));
    await dora.getByRole("button", { name: "Turn on" }).click();
    await dora.getByRole("list", { name: "Recovery codes" }).waitFor();
    await dora.getByRole("button", { name: "Sign out" }).click();
    await dora.getByLabel("Username or email").fill("dora");
    await dora.getByLabel("Password").fill("correct horse battery");
    await dora.getByRole("button", { name: "Sign in", exact: true }).click();
    await dora.getByLabel("Code from your authenticator app").waitFor();
    await dora.screenshot({ path: join(results, "passkey-second-step.png") });
    await dora.getByRole("button", { name: "Use a passkey instead" }).click();
    await dora.getByRole("navigation", { name: "Conversations" }).waitFor();

    // Removed, it signs nobody in, and the page says why.
    await dora.getByRole("button", { name: "Passkeys" }).click();
    await dialog.getByRole("button", { name: "Remove This laptop" }).click();
    await dialog.getByText("No passkeys yet.").waitFor();
    await dora.getByRole("button", { name: "Sign out" }).click();
    await dora.getByRole("button", { name: "Use a passkey", exact: true }).click();
    await dora.getByRole("alert").getByText("not registered").waitFor();
    await dora.screenshot({ path: join(results, "passkey-removed.png") });
    await doraContext.close();
  });

  await step("offline while 20 messages are sent: each arrives once, in order", async () => {
    await openChannel(alice, "team");
    // The list renders the rows near its viewport: make room for all twenty.
    await bob.setViewportSize({ width: 1280, height: 2400 });
    await openChannel(bob, "team");
    await bobContext.setOffline(true);
    await bob.locator(".dot.offline").waitFor({ timeout: 15_000 });
    const sent = Array.from({ length: 20 }, (_, i) => `missed ${i + 1}`);
    for (const text of sent) {
      await send(alice, "team", text);
    }
    await waitForText(alice, "missed 20");
    await bobContext.setOffline(false);
    await waitForText(bob, "missed 20");
    const seen = (await texts(bob)).filter((t) => t.startsWith("missed "));
    expect(JSON.stringify(seen) === JSON.stringify(sent), `bob saw ${JSON.stringify(seen)}`);
  });
} finally {
  await browser.close();
  await node.stop();
  scanner.close();
}
if (failures > 0) {
  process.exit(1);
}
console.log("all browser steps passed");
