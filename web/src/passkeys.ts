// Passkeys in the browser: the node's WebAuthn options (JSON, binary fields
// base64url) turned into what navigator.credentials expects, and the
// authenticator's answer turned back into JSON for the node.

/** Whether this browser can make and use passkeys here. */
export function passkeysSupported(): boolean {
  return typeof window !== "undefined" && "PublicKeyCredential" in window && !!navigator.credentials;
}

export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

export function toBase64Url(data: ArrayBuffer | ArrayBufferView): string {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = "";
  for (const b of bytes) {
    binary += String.fromCharCode(b);
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

interface Descriptor {
  id: string;
  type: "public-key";
  transports?: string[];
}

function descriptors(list: Descriptor[] | undefined): PublicKeyCredentialDescriptor[] | undefined {
  return list?.map((d) => ({ ...d, id: fromBase64Url(d.id), transports: d.transports as AuthenticatorTransport[] | undefined }));
}

/** `{"publicKey": ...}` creation options from the node, for credentials.create(). */
export function creationOptions(json: string): PublicKeyCredentialCreationOptions {
  const { publicKey } = JSON.parse(json);
  return {
    ...publicKey,
    challenge: fromBase64Url(publicKey.challenge),
    user: { ...publicKey.user, id: fromBase64Url(publicKey.user.id) },
    excludeCredentials: descriptors(publicKey.excludeCredentials),
  };
}

/** `{"publicKey": ...}` request options from the node, for credentials.get(). */
export function requestOptions(json: string): PublicKeyCredentialRequestOptions {
  const { publicKey } = JSON.parse(json);
  return { ...publicKey, challenge: fromBase64Url(publicKey.challenge), allowCredentials: descriptors(publicKey.allowCredentials) };
}

/** Asks the authenticator for a new passkey; its answer as JSON. */
export async function createPasskey(optionsJson: string): Promise<string> {
  const made = (await navigator.credentials.create({ publicKey: creationOptions(optionsJson) })) as PublicKeyCredential | null;
  if (!made) {
    throw new Error("No passkey was made.");
  }
  const response = made.response as AuthenticatorAttestationResponse;
  return JSON.stringify({
    id: made.id,
    rawId: toBase64Url(made.rawId),
    type: made.type,
    response: {
      attestationObject: toBase64Url(response.attestationObject),
      clientDataJSON: toBase64Url(response.clientDataJSON),
      transports: response.getTransports?.() ?? [],
    },
    clientExtensionResults: made.getClientExtensionResults(),
  });
}

/** Asks the authenticator to answer a sign-in challenge; its answer as JSON. */
export async function usePasskey(optionsJson: string): Promise<string> {
  const used = (await navigator.credentials.get({ publicKey: requestOptions(optionsJson) })) as PublicKeyCredential | null;
  if (!used) {
    throw new Error("No passkey was chosen.");
  }
  const response = used.response as AuthenticatorAssertionResponse;
  return JSON.stringify({
    id: used.id,
    rawId: toBase64Url(used.rawId),
    type: used.type,
    response: {
      authenticatorData: toBase64Url(response.authenticatorData),
      clientDataJSON: toBase64Url(response.clientDataJSON),
      signature: toBase64Url(response.signature),
      userHandle: response.userHandle ? toBase64Url(response.userHandle) : null,
    },
    clientExtensionResults: used.getClientExtensionResults(),
  });
}

/** The browser's refusal in words: most mean the person cancelled. */
export function passkeyTrouble(err: unknown): string | undefined {
  if (err instanceof DOMException) {
    switch (err.name) {
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out.";
      case "InvalidStateError":
        return "This device already holds a passkey for your account.";
      case "SecurityError":
        return "Passkeys are not set up for this address; ask your administrator.";
      default:
        return `The passkey request failed: ${err.message}`;
    }
  }
  return undefined;
}
