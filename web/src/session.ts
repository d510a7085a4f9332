// The signed-in session: its tokens, kept in this tab's storage, and
// renewed with the refresh token a minute before the access token expires.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Account, TokenPair } from "../../gen/ts/colink/auth/v1/auth_pb";
import { auth, useToken } from "./api";
import { usePasskey } from "./passkeys";

const KEY = "colink.session";
/** The single sign-on this tab started, until the provider sends it back. */
const SSO_STATE_KEY = "colink.sso-state";
/** Where the provider sends people back; the node serves the app there. */
export const SSO_CALLBACK_PATH = "/sso/callback";
/** Renew this long before the access token expires. */
const RENEW_BEFORE_MS = 60_000;

export interface Session {
  userId: string;
  username: string;
  accessToken: string;
  accessExpiresAt: number;
  refreshToken: string;
}

let current: Session | undefined = load();
let renewal: ReturnType<typeof setTimeout> | undefined;
useToken(() => current?.accessToken);

function load(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : undefined;
  } catch {
    return undefined;
  }
}

export function session(): Session | undefined {
  return current;
}

export function begin(account: Account, tokens: TokenPair): Session {
  current = {
    userId: account.userId,
    username: account.username,
    accessToken: tokens.accessToken,
    accessExpiresAt: tokens.accessTokenExpiresAt ? timestampMs(tokens.accessTokenExpiresAt) : Date.now() + 600_000,
    refreshToken: tokens.refreshToken,
  };
  sessionStorage.setItem(KEY, JSON.stringify(current));
  scheduleRenewal();
  return current;
}

export async function end(): Promise<void> {
  if (current) {
    // Signs this session out on the server while the token still works.
    await auth.logout({ allSessions: false }).catch(() => undefined);
  }
  forget();
}

function forget(): void {
  current = undefined;
  sessionStorage.removeItem(KEY);
  clearTimeout(renewal);
}

/** Keeps the access token fresh while the page is open. */
export function scheduleRenewal(onLost?: () => void): void {
  clearTimeout(renewal);
  if (!current) {
    return;
  }
  const wait = Math.max(current.accessExpiresAt - Date.now() - RENEW_BEFORE_MS, 0);
  renewal = setTimeout(async () => {
    const s = current;
    if (!s) {
      return;
    }
    try {
      const { tokens } = await auth.refresh({ refreshToken: s.refreshToken });
      if (tokens) {
        begin({ userId: s.userId, username: s.username } as Account, tokens);
      }
    } catch {
      forget();
      onLost?.();
    }
  }, wait);
}

/** Sends the browser to the identity provider to sign in. */
export async function startSingleSignOn(): Promise<void> {
  const begun = await auth.beginSingleSignOn({
    redirectUri: `${location.origin}${SSO_CALLBACK_PATH}`,
    deviceName: "web",
  });
  sessionStorage.setItem(SSO_STATE_KEY, begun.state);
  location.assign(begun.authorizationUrl);
}

/**
 * Completes a single sign-on when the provider has sent the browser back
 * here: undefined when this page is not such a return. Only a sign-in this
 * tab started is completed, so another site cannot sign the tab in as
 * someone else.
 */
export async function finishSingleSignOn(): Promise<Session | undefined> {
  if (location.pathname !== SSO_CALLBACK_PATH) {
    return undefined;
  }
  const query = new URLSearchParams(location.search);
  const started = sessionStorage.getItem(SSO_STATE_KEY);
  sessionStorage.removeItem(SSO_STATE_KEY);
  history.replaceState(null, "", "/");
  const refused = query.get("error_description") ?? query.get("error");
  if (refused) {
    throw new Error(`The identity provider did not sign you in: ${refused}`);
  }
  const state = query.get("state") ?? "";
  if (!started || state !== started) {
    throw new Error("This sign-in was not started here; please sign in again.");
  }
  const done = await auth.finishSingleSignOn({ state, code: query.get("code") ?? "" });
  if (!done.account || !done.tokens) {
    throw new Error("The sign-in did not complete; please sign in again.");
  }
  return begin(done.account, done.tokens);
}

/** Signs in with a passkey this device holds: no username, no password. */
export async function signInWithPasskey(): Promise<Session> {
  const begun = await auth.beginPasskeySignIn({});
  const answer = await usePasskey(begun.requestOptionsJson);
  const done = await auth
    .finishPasskeySignIn({ signInId: begun.signInId, credentialJson: answer, deviceName: "web" })
    .catch((err: unknown) => {
      // Say why the passkey was refused (unknown here, or its answer did not check out).
      const refused = ConnectError.from(err);
      throw refused.code === Code.Unauthenticated ? new Error(`That passkey did not sign you in: ${refused.rawMessage}.`) : err;
    });
  if (!done.account || !done.tokens) {
    throw new Error("The sign-in did not complete; please try again.");
  }
  return begin(done.account, done.tokens);
}
