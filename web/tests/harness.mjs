// What the browser suites share: a fresh `colink serve` (optionally behind
// Envoy) and a headless Chromium.
//
// E2E_BINARY names the colink binary; the default is a build under
// CARGO_TARGET_DIR or ~/.cache/colink/target. (It is not a COLINK_
// variable: the node refuses settings it does not know.) CHROMIUM names the
// browser (default /usr/bin/chromium), E2E_CLAMD the clamd that uploads are
// scanned with.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const target = process.env.CARGO_TARGET_DIR ?? join(process.env.HOME ?? "/root", ".cache/colink/target");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Sends SIGTERM and resolves once the process has exited; SIGKILL after 15 s. */
function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const deadline = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.once("exit", () => {
      clearTimeout(deadline);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/**
 * Starts a node with its data in a temporary directory, and Envoy in front
 * of it when `envoy` names Envoy's binary. `env` adds settings (COLINK_...);
 * `build` picks the default binary's build ("debug" or "release"), `port`
 * the node's port (default: a free one).
 * Resolves to the URL a browser opens and a function that stops both.
 */
export async function startNode({ envoy, env, build = "debug", port: chosen } = {}) {
  const bin = process.env.E2E_BINARY ?? join(target, build, "colink");
  const port = chosen ?? (await freePort());
  // Behind Envoy, file URLs name Envoy's listener, which forwards /blobs/.
  const envoyPort = envoy ? await freePort() : undefined;
  const files = envoyPort ? { COLINK_FILES__PUBLIC_URL: `http://127.0.0.1:${envoyPort}` } : {};
  const data = mkdtempSync(join(tmpdir(), "colink-e2e-"));
  const node = spawn(bin, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", data], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, ...files, ...env },
  });
  const children = [node];
  // Stops both and waits until they have exited (a node writes its search
  // index while it shuts down), then removes the data.
  const stop = async () => {
    await Promise.all(children.map((child) => exited(child)));
    rmSync(data, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  };
  let url = `http://127.0.0.1:${port}`;
  if (!(await ready(url))) {
    await stop();
    throw new Error("colink serve did not start");
  }
  if (envoy) {
    const repo = join(here, "..", "..");
    const config = readFileSync(join(repo, "envoy", "envoy.yaml"), "utf8")
      .replace("port_value: 8080", `port_value: ${envoyPort}`)
      .replaceAll("port_value: 7700", `port_value: ${port}`)
      .replace("port_value: 9901", `port_value: ${await freePort()}`)
      .replace('"gen/colink.binpb"', JSON.stringify(join(repo, "gen", "colink.binpb")));
    writeFileSync(join(data, "envoy.yaml"), config);
    children.push(
      // Its access log (stdout) would drown the test's own output.
      spawn(envoy, ["-c", join(data, "envoy.yaml"), "--log-level", "warn", "--use-dynamic-base-id"], {
        stdio: ["ignore", "ignore", "inherit"],
      }),
    );
    url = `http://127.0.0.1:${envoyPort}`;
    if (!(await ready(`${url}/.well-known/jwks.json`))) {
      await stop();
      throw new Error("envoy did not start");
    }
  }
  return { url, stop };
}

/** Waits until a GET of `url` succeeds. */
export async function ready(url) {
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(url)).ok) {
        return true;
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

/**
 * A door to clamd (`E2E_CLAMD`, tcp://host:port) that stays shut until
 * opened: while shut, every connection is dropped, as when clamd is down,
 * and uploads wait in their scan. Resolves to the URL the node scans with.
 */
export async function clamdGate() {
  const target = process.env.E2E_CLAMD;
  if (!target) {
    throw new Error("E2E_CLAMD names the clamd the browser tests scan with (see .ci/start-clamd)");
  }
  const { hostname, port } = new URL(target.replace(/^tcp:/, "http:"));
  const gate = { open: false };
  const server = createServer((client) => {
    if (!gate.open) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname);
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  gate.url = `tcp://127.0.0.1:${server.address().port}`;
  gate.close = () => server.close();
  return gate;
}

/** Headless Chromium, quiet: no background traffic of its own. */
export function launchBrowser(args = []) {
  return chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...args,
    ],
  });
}
