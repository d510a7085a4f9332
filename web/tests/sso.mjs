// Single sign-on in Chromium: a workspace whose people sign in at an OpenID
// provider (oidc-provider, standing in for Keycloak) and come back signed in.
//
//   node tests/sso.mjs            (from web/, after `vite build` and a cargo build)
//
// E2E_BINARY and CHROMIUM name the node and the browser (see harness.mjs);
// the provider is services/colink/tests/oidc-provider (`npm ci` there first).
// Screenshots go to web/test-results/sso/.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, launchBrowser, ready, startNode } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const results = join(here, "..", "test-results", "sso");
const providerScript = join(here, "..", "..", "services", "colink", "tests", "oidc-provider", "provider.mjs");

const nodePort = await freePort();
const providerPort = await freePort();
const issuer = `http://127.0.0.1:${providerPort}`;
const callback = `http://127.0.0.1:${nodePort}/sso/callback`;
const provider = spawn(
  process.execPath,
  [providerScript, "--port", String(providerPort), "--redirect-uri", callback],
  { stdio: ["ignore", "ignore", "inherit"] },
);
let node;
let browser;
let failed = false;
mkdirSync(results, { recursive: true });
try {
  if (!(await ready(`${issuer}/.well-known/openid-configuration`))) {
    throw new Error("the OpenID provider did not start");
  }
  node = await startNode({
    port: nodePort,
    env: {
      COLINK_AUTH__MODE: "oidc",
      COLINK_AUTH__OIDC__ISSUER: issuer,
      COLINK_AUTH__OIDC__CLIENT_ID: "colink",
      COLINK_AUTH__OIDC__CLIENT_SECRET: "colink-secret",
      COLINK_AUTH__OIDC__REDIRECT_URLS: `["${callback}"]`,
      COLINK_AUTH__OIDC__DISPLAY_NAME: "Acme SSO",
    },
  });
  browser = await launchBrowser();
  const page = await browser.newPage();
  await page.goto(node.url);
  // No password form: the one way in is the provider.
  const button = page.getByRole("button", { name: "Sign in with Acme SSO" });
  await button.waitFor();
  if ((await page.getByLabel("Password").count()) !== 0) {
    throw new Error("a password form is shown although the workspace signs in with single sign-on");
  }
  if ((await page.getByRole("button", { name: "Use a passkey" }).count()) !== 0) {
    throw new Error("passkey sign-in is offered although the provider signs people in");
  }
  await page.screenshot({ path: join(results, "sign-in.png") });
  await button.click();
  // The provider's own sign-in form.
  await page.waitForURL((url) => url.href.startsWith(issuer));
  await page.locator("input[name=login]").fill("alice");
  await page.locator("input[name=password]").fill("anything");
  await page.locator("button[type=submit]").click();
  // Back in Colink, signed in as the account the provider's claims made.
  await page.getByRole("navigation", { name: "Conversations" }).waitFor();
  if (new URL(page.url()).pathname !== "/") {
    throw new Error(`the callback address stayed in the location bar: ${page.url()}`);
  }
  await page.getByText("alice").first().waitFor();
  // Second factors are the provider's business here.
  await page.getByRole("button", { name: "Browse channels" }).waitFor();
  // The workspace asks the node how people sign in as it opens.
  await page.waitForTimeout(1_000);
  if ((await page.getByRole("button", { name: "Two-step sign-in" }).count()) !== 0) {
    throw new Error("two-step sign-in is offered although the provider signs people in");
  }
  await page.screenshot({ path: join(results, "signed-in.png") });
  // The session works like any other: sign out, and the way back is the
  // provider again (still signed in there, so no form this time).
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in with Acme SSO" }).click();
  await page.getByRole("navigation", { name: "Conversations" }).waitFor();
  console.log("ok   single sign-on through the provider, sign out, and back");
} catch (err) {
  failed = true;
  console.log(`FAIL single sign-on: ${err?.stack ?? err}`);
} finally {
  await browser?.close();
  await node?.stop();
  provider.kill("SIGTERM");
}
if (failed) {
  process.exit(1);
}
console.log("all single sign-on steps passed");
