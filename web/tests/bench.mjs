// The web client's figures, measured in Chromium against a fresh node:
//
//   node tests/bench.mjs            (from web/, after `vite build` and a release build)
//
//   - the first load: what the browser fetches before the app runs, gzipped;
//   - time to interactive on loopback: the sign-in page on a first visit,
//     and the workspace when a signed-in tab is reloaded;
//   - scrolling back through a channel of BENCH_MESSAGES messages (10,000):
//     the long tasks (over 50 ms) in the browser's performance timeline;
//   - memory after receiving BENCH_MESSAGES live messages in an open channel.
//
// The node is the release build under CARGO_TARGET_DIR unless E2E_BINARY
// names another. Messages are sent from here over gRPC-Web, with the
// clients built at run time from the descriptor set in gen/. Timings are
// reported, never checked: this is a benchmark, not a test.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { launchBrowser, startNode } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const dist = join(here, "..", "dist");
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 10_000);
/** Sends in flight at once while filling a channel. */
const IN_FLIGHT = 32;
const LOAD_RUNS = 5;
const PASSWORD = "bench password 1234";

// ---- the first load ----

/** The files index.html makes the browser fetch, with their gzipped sizes. */
function firstLoad() {
  const html = readFileSync(join(dist, "index.html"));
  const files = [["index.html", html]];
  for (const [, path] of html.toString().matchAll(/(?:src|href)="\/?([^"]+\.(?:js|css))"/g)) {
    files.push([path, readFileSync(join(dist, path))]);
  }
  return files.map(([name, bytes]) => ({ name, bytes: bytes.length, gzipped: gzipSync(bytes, { level: 9 }).length }));
}

// ---- the node, over gRPC-Web from here ----

function clients(url) {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(join(repo, "gen", "colink.binpb"))));
  let token = "";
  const transport = createGrpcWebTransport({
    baseUrl: url,
    interceptors: [
      (next) => (request) => {
        if (token) {
          request.header.set("authorization", `Bearer ${token}`);
        }
        return next(request);
      },
    ],
  });
  const client = (name) => createClient(registry.getService(name), transport);
  return {
    auth: client("colink.auth.v1.AuthService"),
    channels: client("colink.channels.v1.ChannelsService"),
    messaging: client("colink.messaging.v1.MessagingService"),
    as: (t) => {
      token = t;
    },
  };
}

/** Message `n` of a run: mostly one line, some of them several, so that rows differ in height. */
function text(prefix, n) {
  const label = `${prefix} ${String(n).padStart(5, "0")}`;
  if (n % 7 === 0) {
    return `${label}: a longer message that wraps onto more than one line in the conversation view, `.repeat(3);
  }
  return n % 11 === 0 ? `${label}\nsecond line\nthird line` : label;
}

/** Sends `count` messages; the first goes alone, so that it is the oldest. */
async function fill(api, channelId, prefix, count) {
  const send = (n) => api.messaging.sendMessage({ channelId, text: text(prefix, n), idempotencyKey: `${prefix}-${n}` });
  await send(1);
  let next = 2;
  const worker = async () => {
    while (next <= count) {
      await send(next++);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

// ---- the browser ----

/** Records, from the first script on, long tasks and when each view became usable. */
function instrument() {
  const w = globalThis;
  w.__long = [];
  w.__ready = {};
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      w.__long.push({ start: e.startTime, duration: e.duration });
    }
  }).observe({ type: "longtask", buffered: true });
  const views = {
    signIn: 'form[aria-label="Sign in"] input[name="login"]',
    workspace: 'nav[aria-label="Conversations"] li button',
  };
  // Watching ends with the first view: each load waits for one.
  const watch = new MutationObserver(() => {
    for (const [name, selector] of Object.entries(views)) {
      if (document.querySelector(selector)) {
        w.__ready[name] = performance.now();
        watch.disconnect();
      }
    }
  });
  watch.observe(document, { subtree: true, childList: true });
}

/**
 * Time to interactive of a view after navigation: when it was usable, or
 * when the last long task of the load ended, if later. Waits for a quiet
 * second to see that last long task.
 */
async function interactive(page, view) {
  await page.waitForFunction((v) => globalThis.__ready[v] !== undefined, view);
  await page.waitForTimeout(1_000);
  return page.evaluate((v) => {
    const ready = globalThis.__ready[v];
    const ends = globalThis.__long.map((t) => t.start + t.duration);
    return { ready, tti: Math.max(ready, ...ends) };
  }, view);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function signIn(page, url, login) {
  await page.goto(url);
  await page.getByLabel("Username or email").fill(login);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("navigation", { name: "Conversations" }).waitFor();
}

async function openChannel(page, name) {
  await page.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: new RegExp(`^#${name}`) }).click();
  await page.getByRole("region", { name: `#${name}` }).waitFor();
}

/** Long tasks since `since` (ms on the page's clock). */
function longTasksSince(page, since) {
  return page.evaluate((t) => globalThis.__long.filter((e) => e.start >= t).map((e) => e.duration), since);
}

async function memory(cdp) {
  await cdp.send("HeapProfiler.collectGarbage");
  const { metrics } = await cdp.send("Performance.getMetrics");
  const get = (name) => metrics.find((m) => m.name === name)?.value ?? 0;
  return { heap: get("JSHeapUsedSize"), nodes: get("Nodes") };
}

const MiB = 1024 * 1024;
const ms = (v) => `${v.toFixed(0)} ms`;

const node = await startNode({
  build: "release",
  env: {
    COLINK_EPHEMERAL__SENDS_PER_MINUTE: "0",
    COLINK_EPHEMERAL__MUTATIONS_PER_MINUTE: "0",
    COLINK_EPHEMERAL__ANONYMOUS_PER_ADDRESS_PER_MINUTE: "0",
    COLINK_LOG__LEVEL: "warn",
  },
});
const browser = await launchBrowser();
/** The page being measured, photographed if a step fails. */
let shown;
try {
  const bundle = firstLoad();

  const api = clients(node.url);
  const register = async (username) => {
    const r = await api.auth.register({ username, email: `${username}@bench.test`, password: PASSWORD });
    return { userId: r.account.userId, token: r.tokens.accessToken };
  };
  const alice = await register("alice");
  const bob = await register("bob");
  api.as(alice.token);
  const channel = async (name) =>
    (await api.channels.createChannel({ name, kind: 1, memberIds: [bob.userId], idempotencyKey: name })).channel
      .channelId;
  const history = await channel("history");
  const live = await channel("live");
  const filling = Date.now();
  await fill(api, history, "history", MESSAGES);
  const fillSecs = (Date.now() - filling) / 1000;

  // Time to interactive: a first visit, then a signed-in reload.
  const fresh = async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.addInitScript(instrument);
    return { context, page: await context.newPage() };
  };
  const cold = [];
  for (let i = 0; i < LOAD_RUNS; i++) {
    const visit = await fresh();
    await visit.page.goto(node.url);
    cold.push(await interactive(visit.page, "signIn"));
    await visit.context.close();
  }
  const { context, page } = await fresh();
  shown = page;
  await signIn(page, node.url, "bob");
  const warm = [];
  for (let i = 0; i < LOAD_RUNS; i++) {
    await page.reload();
    warm.push(await interactive(page, "workspace"));
  }

  // Scrolling back to the channel's first message.
  await openChannel(page, "history");
  const list = page.getByTestId("messages");
  await list.locator("li .text", { hasText: text("history", MESSAGES).slice(0, 13) }).first().waitFor();
  const box = await page.locator(".messages .scroller").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  const scrollFrom = await page.evaluate(() => performance.now());
  const first = list.locator("li .text", { hasText: text("history", 1).slice(0, 13) });
  let steps = 0;
  while ((await first.count()) === 0 || (await list.evaluate((el) => el.parentElement.scrollTop)) > 0) {
    await page.mouse.wheel(0, -2_000);
    await page.waitForTimeout(16);
    if (++steps > Math.max(1_000, MESSAGES / 5)) {
      throw new Error("the first message never came into view");
    }
  }
  const scrollMs = (await page.evaluate(() => performance.now())) - scrollFrom;
  const scrollTasks = await longTasksSince(page, scrollFrom);
  const rendered = await list.locator("li").count();

  // Live messages into the open channel, from a fresh page.
  await page.reload();
  await interactive(page, "workspace");
  await openChannel(page, "live");
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const before = await memory(cdp);
  const liveFrom = await page.evaluate(() => performance.now());
  const receiving = Date.now();
  await fill(api, live, "live", MESSAGES);
  await api.messaging.sendMessage({ channelId: live, text: "live done", idempotencyKey: "live-done" });
  await list.locator("li .text", { hasText: "live done" }).waitFor({ timeout: 120_000 });
  const liveSecs = (Date.now() - receiving) / 1000;
  const liveTasks = await longTasksSince(page, liveFrom);
  const after = await memory(cdp);

  const total = bundle.reduce((sum, f) => sum + f.gzipped, 0);
  const over = (tasks) => tasks.filter((d) => d > 50);
  const lines = [
    `Web client, measured with \`node tests/bench.mjs\` in web/ (Chromium ${browser.version()}, headless, loopback; ${MESSAGES} messages; ${new Date().toISOString().slice(0, 10)}).`,
    "",
    "| figure | measured | goal |",
    "|---|---|---|",
    `| first load, gzipped (${bundle.map((f) => `${f.name} ${(f.gzipped / 1024).toFixed(1)} KB`).join(", ")}) | ${(total / 1024).toFixed(1)} KB | ≤ 250 KB |`,
    `| time to interactive, sign-in page, first visit (median of ${LOAD_RUNS}) | ${ms(median(cold.map((r) => r.tti)))} | |`,
    `| time to interactive, workspace, signed-in reload (median of ${LOAD_RUNS}) | ${ms(median(warm.map((r) => r.tti)))} | |`,
    `| scrolling back through ${MESSAGES} messages: long tasks over 50 ms | ${over(scrollTasks).length} (longest task ${ms(Math.max(0, ...scrollTasks))}; ${(scrollMs / 1000).toFixed(1)} s, ${steps} wheel steps; ${rendered} rows in the page at the top) | none |`,
    `| ${MESSAGES} live messages received (${liveSecs.toFixed(1)} s): long tasks over 50 ms | ${over(liveTasks).length} (longest ${ms(Math.max(0, ...liveTasks))}) | |`,
    `| memory after ${MESSAGES} live messages: JS heap, after GC | ${(after.heap / MiB).toFixed(1)} MiB (${(before.heap / MiB).toFixed(1)} MiB before; ${(((after.heap - before.heap) / MESSAGES) | 0)} bytes a message) | |`,
    `| memory after ${MESSAGES} live messages: DOM nodes | ${after.nodes} (${before.nodes} before) | |`,
    "",
    `(Filling the history channel: ${MESSAGES} sends in ${fillSecs.toFixed(1)} s over gRPC-Web from Node.js, ${IN_FLIGHT} in flight.)`,
  ];
  console.log(lines.join("\n"));
} catch (err) {
  console.error(err);
  await shown?.screenshot({ path: join(here, "..", "test-results", "bench-failed.png") });
  throw err;
} finally {
  await browser.close();
  await node.stop();
}
